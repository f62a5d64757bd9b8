"""`tinylm bench`: benchmarks anyone can re-run, each comparing implementations or settings inside one
process and run; results go to benchmarks/*.{json,md} with the CPU named.

    pretrain   MLM training tokens/s: tinylm vs transformers' BertForMaskedLM   (bench/pretrain.py)
    latency    inference latency: BERT-6 vs BERT-1 committees, ONNX            (bench/latency.py)
    memory     resident memory over a long pre-training run                      (bench/memory.py)
    sweep      one-factor pre-training recipe sweep                              (bench/sweep.py)
    time-to-gate  recipes side by side until the adequacy gate                   (bench/time_to_gate.py)
    unpad      training steps on the real tokens only vs the padded batch        (bench/unpad.py)
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    from tinylm.bench.latency import add_latency_parser
    from tinylm.bench.memory import add_memory_parser
    from tinylm.bench.pretrain_cli import add_pretrain_parser
    from tinylm.bench.sweep import add_sweep_parser
    from tinylm.bench.time_to_gate import add_time_to_gate_parser
    from tinylm.bench.unpad import add_unpad_parser

    p = sub.add_parser(
        "bench",
        help="benchmarks against the transformers reference",
        description="Speed benchmarks; each compares implementations inside one process and run.",
    )
    bsub = p.add_subparsers(
        dest="bench_cmd", required=True, metavar="{pretrain,latency,memory,sweep,time-to-gate,unpad}"
    )
    add_pretrain_parser(bsub)
    add_latency_parser(bsub)
    add_memory_parser(bsub)
    add_sweep_parser(bsub)
    add_time_to_gate_parser(bsub)
    add_unpad_parser(bsub)
