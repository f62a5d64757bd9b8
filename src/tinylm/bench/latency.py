"""`tinylm bench latency`: the latency table of `tinylm.latency`, written to benchmarks/latency.{json,md}."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def format_latency(result: dict[str, Any]) -> str:
    lines = [
        "| model | mode | k | batch | precision | ms per input | ms per batch | critical path |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['k']} | {r['batch']} | {r['precision']} | "
            f"{r['ms_per_input']} | "
            f"{r['ms_per_batch']} | {r['critical_path']} |"
        )
    return "\n".join(lines)


def _cmd_latency(args: argparse.Namespace) -> int:
    from tinylm.latency import bench_latency
    from tinylm.machine import write_benchmark

    res = bench_latency(
        args.k, args.batch, args.precision, args.seq, args.reps, max(1, args.reps // 5), device=args.device
    )
    return write_benchmark(Path(args.out), "latency", res, format_latency(res))


def add_latency_parser(bsub: argparse._SubParsersAction[Any]) -> None:
    la = bsub.add_parser(
        "latency",
        help="inference latency: BERT-6 vs BERT-1 committees (sequential/stacked/parallel)",
        description="ms per input at each batch size for BERT-6 (768/12), one BERT-1 (768/12) and soft "
        "committees of k BERT-1 members evaluated sequentially, stacked (one batched computation) and "
        "in parallel threads (members split in two stacked halves, cores split between them); random "
        "weights, sequence 128, median of repeated calls after warm-up.",
    )
    la.add_argument(
        "--k", nargs="+", type=int, default=[2, 4, 6, 8], help="committee sizes (default 2 4 6 8)"
    )
    la.add_argument("--batch", nargs="+", type=int, default=[1, 32], help="batch sizes (default 1 32)")
    la.add_argument(
        "--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"], help="precisions"
    )
    la.add_argument("--seq", type=int, default=128, help="sequence length (default 128)")
    la.add_argument(
        "--reps", type=int, default=20, help="timed calls at batch 1 (batch > 1: reps/5; default 20)"
    )
    la.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="device (default: CUDA if present)"
    )
    la.add_argument(
        "--out", default="benchmarks", help="where to write latency.json / latency.md (default benchmarks/)"
    )
    la.set_defaults(handler=_cmd_latency)
