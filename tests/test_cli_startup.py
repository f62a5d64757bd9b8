"""`tinylm --help` and `--version` start fast: building the parser imports neither torch nor numpy (the
README states < 0.5 s for `tinylm --version`; the timing bound here leaves slack for slow CI machines)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

#: The README's target, and the bound asserted here (3x slack for a loaded or slow machine).
TARGET_S = 0.5
BOUND_S = 3 * TARGET_S


def test_building_the_parser_imports_neither_torch_nor_numpy() -> None:
    code = (
        "import sys; from tinylm.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'numpy', 'transformers', 'tokenizers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_and_help_start_within_the_bound() -> None:
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    for args in (["--version"], ["--help"], ["pretrain", "--help"], ["bench", "time-to-gate", "--help"]):
        best = float("inf")
        for _ in range(3):  # best of three: the bound is about start-up, not about a busy moment
            t = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-m", "tinylm", *args], capture_output=True, text=True, env=env
            )
            best = min(best, time.perf_counter() - t)
            assert out.returncode == 0, out.stderr
        assert best < BOUND_S, f"tinylm {' '.join(args)}: {best:.2f} s (target {TARGET_S} s)"
