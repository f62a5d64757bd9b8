"""One run's lifecycle, shared by every recipe (pre-training, fine-tuning, and the next ones).

    settings -> run directory named by the settings -> finished? reuse it -> lock the directory (rank 0)
             -> precision made concrete (auto: measured) -> the recipe's body -> barrier of a torchrun job
             -> prune what only a resume needs (checkpoints, best.safetensors) unless --prune false

The body does the work (data, model, `Trainer`); resume, reuse and locking are decided here only.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from tinylm import distributed
from tinylm.config import TrainConfig
from tinylm.device import auto_precision, pick_device
from tinylm.distributed import Dist
from tinylm.fileio import DirLock
from tinylm.machine import cpu_name
from tinylm.runs import RunDir, run_name
from tinylm.settings import Settings

S = TypeVar("S", bound=Settings)
Log = Callable[[str], None]


@dataclass(frozen=True)
class Run:
    """What a recipe's body works with: the directory, the torchrun job, the settings as config.yaml stores
    them (`flat`, precision still as given) and the log (silent on ranks other than 0)."""

    dir: RunDir
    dist: Dist
    flat: dict[str, Any]
    log: Log


def quiet(*_: Any) -> None:
    return None


def resolve_precision(train: TrainConfig, log: Log = print, d: Dist | None = None) -> TrainConfig:
    """`precision: auto` made concrete here (`device.auto_precision`: fp32 without bf16, else the faster
    of the two as measured on this CPU, at the run's thread count), and said why. In a torchrun job on
    CPUs every rank takes rank 0's choice (each rank's own timing could differ)."""
    if train.precision != "auto":
        return train
    if train.threads:
        torch.set_num_threads(train.threads)
    device = pick_device(train.device)
    precision, why = auto_precision(device, cpu_name())
    if d is not None and d.world > 1 and device.type == "cpu":
        flag = torch.tensor([float(precision == "bf16") if d.main else 0.0])
        distributed.sum_([flag], d)  # rank 0's flag, the others add nothing
        precision = "bf16" if flag.item() > 0.5 else "fp32"
    log(f"precision auto: {precision} ({why})")
    return dataclasses.replace(train, precision=precision)


def run_once(settings: S, prefix: str, what: str, body: Callable[[S, Run], None], log: Log = print) -> RunDir:
    """Run `body` once for these settings in OUT/NAME (NAME: `--name`, else PREFIX-ARCH-HASH of the
    settings); a finished run is reused as it is. Returns the run directory."""
    flat = settings.flat()
    d = distributed.init()  # a torchrun job: rank 0 writes, every rank trains its part of each batch
    run = RunDir(Path(settings.run.out) / (settings.run.name or run_name(prefix, flat)), writer=d.main)
    if run.is_finished():
        log(f"{run.path}: already finished; reusing it (results.json)")
        return run
    with DirLock(run.path, what) if d.main else contextlib.nullcontext():
        train = resolve_precision(settings.train, log if d.main else quiet, d)  # config.yaml keeps "auto"
        body(settings.with_sections(train=train), Run(run, d, flat, log if d.main else quiet))
        distributed.barrier(d)  # every rank is done with the checkpoints
        if d.main and run.is_finished() and (run.path / "model.json").is_file():
            from tinylm.model_card import write_card

            write_card(run.path, fmt="transformers" if (run.path / "config.json").is_file() else "tinylm")
        if settings.train.prune:
            run.prune()
    return run
