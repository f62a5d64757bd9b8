"""The `tinylm` command: the parser of every subcommand (`commands.REGISTER`) and the error handling."""

from __future__ import annotations

import argparse
import errno
import sys

from tinylm import commands
from tinylm.errors import TinylmError


def build_parser() -> argparse.ArgumentParser:
    from tinylm import __version__

    parser = argparse.ArgumentParser(
        prog="tinylm",
        description="Tiny language models: pre-train tiny BERT encoders with MLM, fine-tune them, "
        "measure what pre-training buys, and build soft committees of shallow models.",
    )
    parser.add_argument("--version", action="version", version=f"tinylm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in commands.REGISTER:
        register(sub)
    return parser


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
