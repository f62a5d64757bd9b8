"""The GPU check script runs in CPU mode where there is no CUDA device (CI), and says what it skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_script_cpu_mode(real_data_dir: Path, tmp_path: Path) -> None:
    env = os.environ | {"TINYLM_DATA_DIR": str(real_data_dir), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "gpu.json").read_text())
    md = (tmp_path / "gpu.md").read_text()
    assert r["logits"]["cpu_logits_finite"] and r["training"]["pretrain_steps"] >= 2
    assert 0 <= r["training"]["finetune_accuracy"] <= 1 and "| check | result |" in md
    if not torch.cuda.is_available():
        assert "no CUDA device" in md and "Skipped:" in md and "bench_latency" not in r
