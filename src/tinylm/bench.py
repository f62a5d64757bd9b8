"""`tinylm bench`: throughput and latency benchmarks against the transformers reference, in one run."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (pretrain throughput vs transformers)")
    bsub = p.add_subparsers(dest="bench_cmd", required=True, metavar="{pretrain}")
    del bsub
