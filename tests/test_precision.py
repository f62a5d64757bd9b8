"""`precision: auto` is chosen by measurement on a CPU with bf16, cached per CPU model and thread count,
and the run says which and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tinylm import device
from tinylm.config import TrainConfig
from tinylm.lifecycle import resolve_precision


def test_the_faster_precision_is_measured_once_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINYLM_CACHE_DIR", str(tmp_path))
    timings = {torch.float32: 2.0, torch.bfloat16: 1.0}  # a CPU where bf16 is twice as fast
    monkeypatch.setattr(device, "_matmul_seconds", lambda dtype, reps=5: timings[dtype])
    choice, why = device.measured_precision("Some CPU")
    assert choice == "bf16" and "2.00× the speed of fp32" in why and "Some CPU" in why
    cached = json.loads((tmp_path / "precision.json").read_text())
    assert list(cached.values()) == [{"fp32_s": 2.0, "bf16_s": 1.0}]
    monkeypatch.setattr(device, "_matmul_seconds", lambda *a, **k: pytest.fail("measured twice"))
    assert device.measured_precision("Some CPU")[0] == "bf16"  # the cache answers
    timings = {torch.float32: 1.0, torch.bfloat16: 1.4}  # another CPU, where bf16 is slower (no AMX)
    monkeypatch.setattr(device, "_matmul_seconds", lambda dtype, reps=5: timings[dtype])
    assert device.measured_precision("Other CPU")[0] == "fp32"
    assert len(json.loads((tmp_path / "precision.json").read_text())) == 2


def test_auto_is_resolved_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYLM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(device, "bf16_supported", lambda dev: False)
    lines: list[str] = []
    train = resolve_precision(TrainConfig(precision="auto"), lines.append)
    assert train.precision == "fp32" and lines == ["precision auto: fp32 (no bf16 on this cpu device)"]
    monkeypatch.setattr(device, "bf16_supported", lambda dev: True)
    monkeypatch.setattr(
        device, "_matmul_seconds", lambda dtype, reps=5: 1.0 if dtype == torch.bfloat16 else 3.0
    )
    assert resolve_precision(TrainConfig(precision="auto"), lines.append).precision == "bf16"
    assert "measured here" in lines[-1]
    assert resolve_precision(TrainConfig(precision="fp32"), lines.append).precision == "fp32"  # as asked


def test_the_probe_really_times_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "PRECISION_PROBES", ((64, 32, 48),))
    assert (
        device._matmul_seconds(torch.float32, reps=2) > 0
        and device._matmul_seconds(torch.bfloat16, reps=2) > 0
    )


def test_every_rank_takes_rank_zeros_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun on CPUs the ranks' own timings could differ: a rank that measured fp32 computes in
    bf16 when rank 0 chose bf16 (the flag is summed over ranks, rank 0 alone contributing)."""
    from tinylm import distributed
    from tinylm.distributed import Dist

    monkeypatch.setenv("TINYLM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(device, "bf16_supported", lambda dev: True)
    monkeypatch.setattr(
        device, "_matmul_seconds", lambda dtype, reps=5: 3.0 if dtype == torch.bfloat16 else 1.0
    )
    sent: list[float] = []

    def rank0_chose_bf16(tensors: list[torch.Tensor], d: Dist) -> None:
        sent.append(float(tensors[0]))
        tensors[0].fill_(1.0)

    monkeypatch.setattr(distributed, "sum_", rank0_chose_bf16)
    train = resolve_precision(TrainConfig(precision="auto"), lambda _: None, Dist(rank=1, world=2))
    assert train.precision == "bf16" and sent == [0.0]  # this rank measured fp32 and sent nothing


def test_a_burst_of_other_work_during_one_round_does_not_pick_the_slower_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fp32 is faster here (1.0 s vs 1.4 s), but another process slowed the first fp32 timing to 5 s: the
    rounds alternate and each precision keeps its fastest, so fp32 is still chosen (one timing each would
    have picked bf16), and the cache holds the fastest rounds."""
    monkeypatch.setenv("TINYLM_CACHE_DIR", str(tmp_path))
    queue = {torch.float32: [5.0, 1.0, 1.0], torch.bfloat16: [1.4, 1.4, 1.5]}
    calls: list[torch.dtype] = []

    def timed(dtype: torch.dtype, reps: int = 5) -> float:
        calls.append(dtype)
        return queue[dtype].pop(0)

    monkeypatch.setattr(device, "_matmul_seconds", timed)
    assert device.measured_precision("Busy CPU")[0] == "fp32"
    assert calls == [torch.float32, torch.bfloat16] * device.PRECISION_ROUNDS  # alternating rounds
    cached = json.loads((tmp_path / "precision.json").read_text())
    assert cached == {next(iter(cached)): {"fp32_s": 1.0, "bf16_s": 1.4}}
