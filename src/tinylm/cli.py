"""The `tinylm` command: subcommands for data, pre-training, export/import and benchmarks."""

from __future__ import annotations

import argparse
import errno
import json
import sys
import time
from collections.abc import Callable

from tinylm.errors import TinylmError
from tinylm.registry import TASKS

Handler = Callable[[argparse.Namespace], int]


def _data_stats(args: argparse.Namespace) -> int:
    from tinylm.data.sources import resolve_source
    from tinylm.data.stats import collect_stats, format_stats
    from tinylm.data.tokenize import load_tokenizer

    t0 = time.time()
    source = resolve_source(args.data_dir)
    tok = load_tokenizer(source)
    stats = collect_stats(source, tok, args.datasets, args.max_length, args.seed, args.wiki_sample)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        where = source.local_dir if source.local_dir else "the Hugging Face hub"
        print(f"data source: {where}")
        print(format_stats(stats, args.max_length))
        print(f"\n({time.time() - t0:.1f} s)")
    return 0


def add_data_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser(
        "data", help="inspect the datasets", description="Inspect the datasets tinylm reads."
    )
    dsub = data.add_subparsers(dest="data_cmd", required=True, metavar="{stats}")
    st = dsub.add_parser(
        "stats",
        help="files, counts per split/label, token-length percentiles",
        description="Per dataset: the files used, rows per split and label, WordPiece length percentiles "
        "(untruncated, [CLS]/[SEP] included) and the paper's per-label sample sizes.",
    )
    st.add_argument(
        "--data-dir",
        "--data_dir",
        dest="data_dir",
        help="local data directory (default: $TINYLM_DATA_DIR, else the hub)",
    )
    st.add_argument(
        "--datasets",
        nargs="+",
        default=[*TASKS, "wikipedia"],
        choices=[*TASKS, "wikipedia"],
        help="datasets to describe (default: all)",
    )
    st.add_argument(
        "--max-length",
        "--max_length",
        dest="max_length",
        type=int,
        default=128,
        help="length to report truncation against (default 128)",
    )
    st.add_argument(
        "--seed",
        type=int,
        default=42,
        help="sampling seed for the paper-size samples and the Wikipedia order (default 42)",
    )
    st.add_argument(
        "--wiki-sample",
        "--wiki_sample",
        dest="wiki_sample",
        type=int,
        default=5000,
        help="articles whose token lengths are measured (default 5000)",
    )
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    st.set_defaults(handler=_data_stats)


def build_parser() -> argparse.ArgumentParser:
    from tinylm import __version__

    parser = argparse.ArgumentParser(
        prog="tinylm",
        description="Tiny language models: pre-train tiny BERT encoders with MLM, fine-tune them, "
        "measure what pre-training buys, and build soft committees of shallow models.",
    )
    parser.add_argument("--version", action="version", version=f"tinylm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_data_parser(sub)
    for register in _extra_parsers():
        register(sub)
    return parser


def _extra_parsers() -> list[Callable[[argparse._SubParsersAction], None]]:
    from tinylm import commands

    return commands.REGISTER


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except TinylmError as e:
        print(f"tinylm: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno == errno.ENOSPC:
            print(
                f"tinylm: error: no space left on the disk of {e.filename or 'the output'}", file=sys.stderr
            )
            return 2
        raise
    except KeyboardInterrupt:
        print("tinylm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
