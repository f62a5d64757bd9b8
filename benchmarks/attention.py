"""Self-attention on CPU: torch's SDPA against tinylm's explicit batched matmuls (`SelfAttention._explicit`,
the path `model.explicit_attention` picks), forward + backward and forward only, fp32 and bf16, with and
without a padding mask, at the tiny models' shape (2 heads of 64, 128 tokens).

    python benchmarks/attention.py [--threads 1] [--batch 32] [--rounds 5]

Each cell: median over rounds of the mean time of 20 calls (forward only: 20, batch 1: 500), the two
kernels alternated within a round; the ratio is SDPA's time over the explicit path's (> 1: explicit
faster). The CPU is named on the first line.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tinylm.config import ModelConfig
from tinylm.machine import cpu_name
from tinylm.model import SelfAttention


def timed(fn: Callable[[], None], calls: int) -> float:
    for _ in range(3):
        fn()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls


def cell(batch: int, dtype: torch.dtype, masked: bool, grad: bool, rounds: int) -> tuple[float, float]:
    """Median seconds per call of SDPA and of the explicit path."""
    heads, hd, T = 2, 64, 128
    attention = SelfAttention(ModelConfig(hidden_size=heads * hd, heads=heads, attention_dropout=0.0))
    q, k, v = (torch.randn(batch, heads, T, hd, dtype=dtype, requires_grad=grad) for _ in range(3))
    mask = None
    if masked:  # the last 30 % of every row is padding
        mask = (torch.arange(T) < int(0.7 * T)).view(1, 1, 1, T).expand(batch, 1, 1, T)

    def sdpa() -> None:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if grad:
            y.sum().backward()

    def explicit() -> None:
        flat = [t.reshape(batch * heads, T, hd) for t in (q, k, v)]
        y = attention._explicit(*flat, mask, dropping=False)
        if grad:
            y.sum().backward()

    calls = 500 if batch == 1 else 20
    times: dict[str, list[float]] = {"sdpa": [], "explicit": []}
    with torch.set_grad_enabled(grad):
        for _ in range(rounds):
            times["sdpa"].append(timed(sdpa, calls))
            times["explicit"].append(timed(explicit, calls))
    return statistics.median(times["sdpa"]), statistics.median(times["explicit"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}; torch {torch.__version__}; {args.threads} thread(s); 2 heads × 64, 128 tokens")
    print("| pass | batch | dtype | padding mask | SDPA ms | explicit ms | SDPA ÷ explicit |")
    print("|---|---|---|---|---|---|---|")
    for grad, batch in ((True, args.batch), (False, args.batch), (False, 1)):
        for dtype in (torch.float32, torch.bfloat16):
            for masked in (False, True):
                a, b = cell(batch, dtype, masked, grad, args.rounds)
                name = "forward + backward" if grad else "forward"
                kind = str(dtype).removeprefix("torch.")
                print(f"| {name} | {batch} | {kind} | {'yes' if masked else 'no'} | {a * 1e3:.2f} | "
                      f"{b * 1e3:.2f} | {a / b:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
