"""Resident memory stays flat over a real pre-training run (the oneDNN primitive cache once grew it by
~10 MB a step: one cached primitive per distinct number of masked tokens)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinylm.bench.memory import bench_memory

MODEL = {"layers": 1, "hidden_size": 64, "heads": 2, "ffn_size": 128}
MARGIN_GIB = 0.15


def flatness(data_dir: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("TINYLM_CACHE_DIR", str(cache_dir))
    return bench_memory(MODEL, 1000, 200, 32, 25, "auto", str(data_dir), eval_articles=100)


def test_rss_flat_between_late_evaluations(
    real_data_dir: Path, real_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = flatness(real_data_dir, real_cache_dir, monkeypatch)
    samples = r["rss_after_eval_gib"]
    assert len(samples) == 8
    assert r["growth_second_half_gib"] < MARGIN_GIB, samples
    assert samples[-1][1] - samples[-2][1] < MARGIN_GIB / 2, samples
