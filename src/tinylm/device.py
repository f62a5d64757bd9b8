"""Where a run computes: the device asked for (auto: CUDA when present), whether it has bf16, and which
precision is faster on it, measured rather than guessed from CPU flags."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from tinylm.errors import TinylmError


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise TinylmError("device: cuda was asked for but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(
        getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")() in ("AVX512", "AVX512_BF16", "AMX")
    )


#: The matmuls timed to choose a precision: a transformer block's (tokens × hidden @ hidden × 4·hidden) and
#: the MLM decoder's (masked rows × hidden @ hidden × vocabulary), at a tiny model's width.
PRECISION_PROBES = ((4096, 128, 512), (512, 128, 30522))
#: fp32 and bf16 are timed alternately this many times and each keeps its fastest round, so a burst of
#: other work on the machine (a second lane starting) slows one round, not one precision's only timing
PRECISION_ROUNDS = 3


def _matmul_seconds(dtype: torch.dtype, reps: int = 5) -> float:
    total = 0.0
    for m, k, n in PRECISION_PROBES:
        a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        a @ b  # warm-up (kernel selection, packing)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        total += time.perf_counter() - t
    return total


def _cache_file() -> Path:
    root = os.environ.get("TINYLM_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "tinylm") / "precision.json"


def measured_precision(cpu: str) -> tuple[str, str]:
    """On a CPU with bf16: 'bf16' or 'fp32', whichever ran the probe matmuls faster here (the fastest of
    `PRECISION_ROUNDS` alternating rounds each; timed once per CPU model, thread count and torch version,
    then cached), and why."""
    key = f"{cpu} | {torch.get_num_threads()} threads | torch {torch.__version__}"
    path = _cache_file()
    try:
        cached = json.loads(path.read_text()).get(key)
    except (OSError, ValueError):
        cached = None
    if cached is None:
        rounds = [
            (_matmul_seconds(torch.float32), _matmul_seconds(torch.bfloat16)) for _ in range(PRECISION_ROUNDS)
        ]
        fp32, bf16 = min(r[0] for r in rounds), min(r[1] for r in rounds)
        cached = {"fp32_s": round(fp32, 4), "bf16_s": round(bf16, 4)}
        try:
            table = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            table = {}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(table | {key: cached}, indent=1))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home: measure again next time
    choice = "bf16" if cached["bf16_s"] < cached["fp32_s"] else "fp32"
    ratio = cached["fp32_s"] / cached["bf16_s"]
    return choice, f"measured here ({key}): bf16 matmuls {ratio:.2f}× the speed of fp32"


def concrete_precision(precision: str, device: torch.device, cpu: str = "") -> str:
    """The precision a run with this setting trains in on `device`: 'auto' as `auto_precision` decides it,
    any other setting unchanged."""
    return auto_precision(device, cpu)[0] if precision == "auto" else precision


def auto_precision(device: torch.device, cpu: str = "") -> tuple[str, str]:
    """What `precision: auto` means on this device, and why: fp32 without bf16 support; bf16 on a CUDA
    device that has it; on a CPU with bf16, the faster of the two as measured (`measured_precision`)."""
    if not bf16_supported(device):
        return "fp32", f"no bf16 on this {device.type} device"
    if device.type != "cpu":
        return "bf16", f"bf16 supported on this {device.type} device"
    return measured_precision(cpu)
