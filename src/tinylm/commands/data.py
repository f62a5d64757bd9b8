"""`tinylm data stats`, `tinylm overlap` and `tinylm corpus select`: what the datasets hold, how corpora and
tasks overlap, and corpora chosen for a task."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from tinylm.registry import PAPER_CORPUS_SEED
from tinylm.registry import TASKS as TASK_NAMES


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


def add_data_parser(sub: argparse._SubParsersAction[Any]) -> None:
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
        default=[*TASK_NAMES, "wikipedia"],
        choices=[*TASK_NAMES, "wikipedia"],
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


def _overlap(args: argparse.Namespace) -> int:
    import json

    from tinylm.data.sources import resolve_source
    from tinylm.data.token_stats import task_token_counts
    from tinylm.data.tokenize import load_tokenizer
    from tinylm.fileio import write_json
    from tinylm.overlap import format_rows, overlap_rows, parse_corpus_specs

    specs = parse_corpus_specs(args.corpus)
    source = resolve_source(args.data_dir)
    tok = load_tokenizer(source)
    thresholds = tuple(sorted(set(args.thresholds) | {1}))
    per_label = (args.samples_per_label_train, args.samples_per_label_test)
    tasks = {t: task_token_counts(t, source, tok, args.max_length, per_label=per_label) for t in args.tasks}
    rows = overlap_rows(
        specs,
        tasks,
        source,
        tok,
        args.seed,
        args.max_length,
        args.eval_articles,
        args.cache_dir,
        args.pool,
        per_label,
        thresholds,
    )
    print(format_rows(rows, thresholds))
    if args.json:
        write_json(
            args.json,
            {"max_length": args.max_length, "corpus_seed": args.seed, "thresholds": thresholds, "rows": rows},
        )
        print(f"wrote {args.json}")
    elif args.print_json:
        print(json.dumps(rows, indent=2))
    return 0


def _flag(p: argparse.ArgumentParser, name: str, **kw: Any) -> None:
    """--name-with-dashes and --name_with_underscores for one option."""
    names = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
    p.add_argument(*names, dest=name, **kw)


def _sample_flags(p: argparse.ArgumentParser) -> None:
    """--samples_per_label_train/test: the task samples whose tokens are counted."""
    for split in ("train", "test"):
        _flag(
            p,
            f"samples_per_label_{split}",
            type=int,
            default=-1,
            help=f"task {split} examples per label (-1: the paper's default)",
        )


def module_doc(name: str) -> str | None:
    """A module's docstring read from its source without importing it (and numpy, torch, ... with it)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(name)
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text())) if spec and spec.origin else None


def add_overlap(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "overlap",
        help="token overlap between pre-training corpora and tasks",
        description=module_doc("tinylm.overlap"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--corpus",
        nargs="+",
        default=["wiki:20000,40000,90000"],
        help="corpora: wiki:N[,N...] (nested subsets, counted in one pass), high:TASK:N / low:TASK:N "
        "(overlap-controlled selections); default wiki:20000,40000,90000",
    )
    p.add_argument(
        "--tasks", nargs="+", default=list(TASK_NAMES), choices=list(TASK_NAMES), help="tasks (default: all)"
    )
    p.add_argument(
        "--thresholds", nargs="+", type=int, default=[1, 5, 20], help="k of coverage@k (default 1 5 20)"
    )
    _flag(p, "max_length", type=int, default=128, help="tokens per sample (default 128)")
    p.add_argument("--seed", type=int, default=PAPER_CORPUS_SEED, help="corpus order seed (default 42)")
    _flag(
        p,
        "eval_articles",
        type=int,
        default=1000,
        help="held-out articles at the end of the order (default 1000)",
    )
    _sample_flags(p)
    p.add_argument(
        "--pool", type=int, default=100000, help="candidate pool for high/low selections (default 100000)"
    )
    _flag(p, "data_dir", help="local data directory")
    _flag(p, "cache_dir", help="token cache directory")
    p.add_argument("--json", help="write the rows to this JSON file")
    p.add_argument("--print-json", action="store_true", help="print the rows as JSON after the table")
    p.set_defaults(handler=_overlap)


def _corpus_select(args: argparse.Namespace) -> int:
    from tinylm.corpus_select import select_corpus
    from tinylm.data.sources import resolve_source
    from tinylm.data.tokenize import load_tokenizer

    source = resolve_source(args.data_dir)
    sel = select_corpus(
        args.task,
        args.source,
        args.articles,
        args.by,
        args.out,
        source,
        load_tokenizer(source),
        pool=args.pool,
        eval_articles=args.eval_articles,
        seed=args.seed,
        max_length=args.max_length,
        cache_dir=args.cache_dir,
        per_label=(args.samples_per_label_train, args.samples_per_label_test),
    )
    m = sel.manifest
    print(
        f"selected {m['documents']:,} of {m['pool_documents']:,} documents of {m['pool']} by {m['metric']} "
        f"for {m['task']} in {m['seconds']:.1f} s -> {sel.out}\n"
        f"score: chosen mean {m['scores']['chosen_mean']:.4f} (min {m['scores']['chosen_min']:.4f}) vs pool "
        f"mean {m['scores']['pool_mean']:.4f}; corpus vs task train: occurrence coverage "
        f"{m['overlap_train']['occurrence_coverage']:.4f}, weighted overlap "
        f"{m['overlap_train']['weighted_overlap']:.4f}\npre-train on it: {m['pretrain']}"
    )
    return 0


def add_corpus(sub: argparse._SubParsersAction[Any]) -> None:
    corpus = sub.add_parser(
        "corpus", help="make pre-training corpora", description="Make pre-training corpora."
    )
    csub = corpus.add_subparsers(dest="corpus_cmd", required=True, metavar="{select}")
    p = csub.add_parser(
        "select",
        help="a task-specific corpus: the pool's documents ranked by overlap with a task",
        description=module_doc("tinylm.corpus_select"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, choices=list(TASK_NAMES), help="task whose training text ranks")
    p.add_argument(
        "--from",
        dest="source",
        default="wikipedia",
        help="pool: wikipedia (default) or file:PATH (a corpus file or directory, as `pretrain --corpus`)",
    )
    p.add_argument("--articles", type=int, required=True, help="training documents to keep")
    p.add_argument("--by", default="weighted", choices=["coverage", "weighted", "ced"], help="metric")
    p.add_argument("--out", required=True, help="corpus directory to write (must not exist)")
    p.add_argument("--pool", type=int, default=100000, help="pool: first N documents of the order (100000)")
    _flag(p, "eval_articles", type=int, default=500, help="held-out documents written on top (default 500)")
    p.add_argument("--seed", type=int, default=PAPER_CORPUS_SEED, help="document order seed (default 42)")
    _flag(p, "max_length", type=int, default=128, help="tokens per document scored (default 128)")
    _sample_flags(p)
    _flag(p, "data_dir", help="local data directory")
    _flag(p, "cache_dir", help="token cache directory")
    p.set_defaults(handler=_corpus_select)
