"""The `tinylm bench pretrain` command line (kept free of torch, so that `tinylm --help` starts fast)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tinylm.registry import BENCH_SHAPES as SHAPES

DESCRIPTION = """`tinylm bench pretrain`: throughput against the transformers reference, in one process.

`tinylm bench pretrain` times full MLM training steps (forward, loss, backward, AdamW step) of
tinylm and of transformers' `BertForMaskedLM` with the same architecture, batch, sequence length,
masking and optimizer settings, alternating between the two so that machine noise hits both, and
reports medians, their ratio, tinylm's achieved FLOP/s next to the machine's matmul FLOP/s, and the
peak resident memory of a tinylm BERT-6 step (in a child process).
"""


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from tinylm.bench.pretrain import bench_pretrain, format_table
    from tinylm.device import pick_device
    from tinylm.machine import write_benchmark

    res = bench_pretrain(
        args.shapes,
        args.precision,
        args.steps,
        args.warmup,
        args.batch,
        args.seq,
        reference=not args.no_reference,
        memory=not args.no_memory,
        device=str(pick_device(args.device)),
    )
    return write_benchmark(Path(args.out), "pretrain", res, format_table(res))


def add_pretrain_parser(bsub: argparse._SubParsersAction[Any]) -> None:
    q = bsub.add_parser(
        "pretrain",
        help="MLM training tokens/s: tinylm vs transformers BertForMaskedLM",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument(
        "--shapes",
        nargs="+",
        default=["bert6", "1x256"],
        choices=list(SHAPES),
        help="model shapes (default: bert6 1x256)",
    )
    q.add_argument(
        "--precision",
        nargs="+",
        default=["fp32", "bf16"],
        choices=["fp32", "bf16"],
        help="precisions (bf16 where supported)",
    )
    q.add_argument(
        "--steps", type=int, default=10, help="timed steps per implementation (median reported; default 10)"
    )
    q.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default 2)")
    q.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    q.add_argument("--seq", type=int, default=128, help="sequence length (default 128)")
    q.add_argument("--no-reference", action="store_true", help="skip transformers (tinylm only)")
    q.add_argument("--no-memory", action="store_true", help="skip the peak-memory child process (CPU)")
    q.add_argument(
        "--device",
        default="cpu",
        choices=["auto", "cpu", "cuda"],
        help="device (default cpu; auto: CUDA if present)",
    )
    q.add_argument(
        "--out", default="benchmarks", help="where to write pretrain.json / pretrain.md (default benchmarks/)"
    )
    q.set_defaults(handler=_cmd_pretrain)
