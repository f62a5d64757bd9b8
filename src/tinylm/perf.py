"""Process-level CPU performance settings used by training and benchmarks."""

from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import sys
import threading
import time
from collections.abc import Callable

_TUNED = False


def tune_cpu_allocator() -> bool:
    """Keep freed memory in the glibc heap instead of returning it to the OS.

    Training allocates and frees the same large activation buffers every step; by default glibc
    serves large blocks with fresh `mmap`s and trims the heap eagerly, so every step pays page faults
    and zero-filling again (measured here: ~20% of a 1/256 CPU training step). A 256 MiB mmap
    threshold and a 2 GiB trim threshold make those buffers reused; peak RSS grows a little (BERT-6
    step: 3.7 → 3.9 GiB) and memory freed after training stays with the process.
    Returns True when the setting was applied (glibc on Linux only).
    """
    global _TUNED
    if _TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 256 << 20) == 1 and libc.mallopt(m_trim_threshold, 2 << 30) == 1
    except (OSError, AttributeError):
        return False
    _TUNED = ok
    return ok


def median_seconds(fn: Callable[[], object], reps: int, warmup: int = 2) -> float:
    """Median wall time of `fn()` over `reps` calls after `warmup` untimed ones (CUDA synchronised)."""
    import torch

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def parallel_groups(run: Callable[[int], None], n_groups: int) -> None:
    """Run groups in threads; torch releases the GIL in its kernels. Each thread keeps torch's pool."""
    threads = [threading.Thread(target=run, args=(g,)) for g in range(n_groups)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
