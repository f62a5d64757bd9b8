"""`tinylm reproduce` (the paper's experiments end to end) and `tinylm bench` (benchmarks)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tinylm.registry import TASKS as TASK_NAMES


def _reproduce(args: argparse.Namespace) -> int:
    from tinylm.paper.reproduce import reproduce

    reproduce(
        args.preset,
        args.out or f"reproduce-{Path(args.preset).stem}",
        args.seeds,
        args.tasks,
        args.jobs,
        args.data_dir,
        dry_run=args.dry_run,
        estimate_only=args.estimate,
        gpus=args.gpus,
        gpu_tflops=args.gpu_tflops,
        gpu_launch_us=args.gpu_launch_us,
        executor=args.executor,
        ray_address=args.ray_address,
        reuse_from=args.reuse_from,
    )
    return 0


def _add_scale_args(p: argparse.ArgumentParser) -> None:
    """reproduce's cost estimate and executor flags."""
    p.add_argument(
        "--estimate",
        action="store_true",
        help="print the grid's cost (tokens, steps, FLOPs, projected time here and on N GPUs) and stop; "
        "every reproduce prints it before starting",
    )
    p.add_argument("--gpus", nargs="+", type=int, default=[1, 8], help="GPU counts to project (default 1 8)")
    p.add_argument(
        "--executor",
        default="local",
        choices=["local", "ray"],
        help="local (default: this machine, --jobs worker processes) or ray (each job a Ray task; needs "
        "pip install 'tinylm[ray]'; --out must be on a filesystem every node sees)",
    )
    p.add_argument(
        "--ray-address",
        "--ray_address",
        dest="ray_address",
        default=None,
        help="join this Ray cluster (e.g. auto, or HOST:6379 after `ray start --head`); default: a local Ray "
        "with --jobs CPUs",
    )
    p.add_argument(
        "--gpu-tflops",
        "--gpu_tflops",
        dest="gpu_tflops",
        type=float,
        default=100.0,
        help="assumed sustained TFLOP/s per GPU for the projection (default 100: an H100 in bf16 at ~10-25%% "
        "of peak for these small models)",
    )
    p.add_argument(
        "--gpu-launch-us",
        "--gpu_launch_us",
        dest="gpu_launch_us",
        type=float,
        default=10.0,
        help="assumed cost of one operator launch on a GPU, in µs (default 10): a training step's floor is "
        "its operator count × this (a step timed on the GPU where one is present); tiny models hit it",
    )


def add_reproduce(sub: argparse._SubParsersAction[Any]) -> None:
    from tinylm.paper import grid

    p = sub.add_parser(
        "reproduce",
        help="the paper's experiments E1-E4 end to end, with a report",
        description=grid.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        default="quick",
        help="smoke, quick (default), cpu, future, paper, or a YAML file of the same keys",
    )
    p.add_argument(
        "--out", help="output directory (default: reproduce-PRESET); rerun with the same --out to resume"
    )
    p.add_argument("--seeds", type=int, help="fine-tuning seeds (default: the preset's)")
    p.add_argument("--tasks", nargs="+", choices=list(TASK_NAMES), help="tasks (default: the preset's)")
    p.add_argument(
        "--jobs", type=int, default=1, help="worker processes; cores are split between them (default 1)"
    )
    p.add_argument(
        "--data-dir", "--data_dir", dest="data_dir", help="local data directory (default: $TINYLM_DATA_DIR)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the whole grid, then run one pre-training and one "
        "fine-tuning run for 2 steps each (e.g. the paper preset on a CPU)",
    )
    p.add_argument(
        "--reuse-from",
        "--reuse_from",
        dest="reuse_from",
        nargs="+",
        metavar="DIR",
        help="other grids' --out directories: their finished pre-trainings with the same settings as a job "
        "of this grid are copied in instead of trained again (listed in the report, their time not counted)",
    )
    _add_scale_args(p)
    p.set_defaults(handler=_reproduce)


def add_bench(sub: argparse._SubParsersAction[Any]) -> None:
    from tinylm import bench

    bench.add_parser(sub)
