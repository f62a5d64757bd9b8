"""Forward + backward time of the MLM output layer and loss at a 2/128 step's masked rows: the plain path
(logits, then `cross_entropy_and_hits`, then the slice's and the matmul's gradients) against the fused
`vocab_loss.linear_cross_entropy` at several chunk sizes, alternated in rounds, on one thread.

    python benchmarks/vocab_loss.py [--rows 640] [--rounds 7] [--precision bf16] [--chunks 4 8 16 64 256]

640 rows ≈ 15 % of a 32 × 128 batch, padded to the 64-row bucket; hidden 128, vocabulary 30,522, fp32 or
under the trainer's bf16 autocast. Before each timed call a 512 MB buffer is rewritten, so that the call
starts with cold caches as it does inside a training step (the model's other passes evict the loss's
data); `--warm` skips that and times the calls back to back, caches warm.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from tinylm.machine import cpu_name
from tinylm.objectives import cross_entropy_and_hits
from tinylm.perf import tune_cpu_allocator
from tinylm.predict import autocast
from tinylm.vocab_loss import linear_cross_entropy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=640)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--chunks", type=int, nargs="+", default=[4, 8, 16, 64, 256], help="rows per fp32 chunk")
    p.add_argument("--warm", action="store_true", help="no cache flush between the timed calls")
    args = p.parse_args()
    cpu = torch.device("cpu")
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()  # as the trainer does
    g = torch.Generator().manual_seed(0)
    rows, valid, vocab, d = args.rows, args.rows - 20, 30522, 128
    h = torch.randn(rows, d, generator=g).requires_grad_()
    w = (torch.randn(vocab, d, generator=g) * 0.05).requires_grad_()
    b = torch.zeros(vocab).requires_grad_()
    targets = torch.randint(vocab, (rows,), generator=g)
    targets[valid:] = -1

    def plain() -> None:
        with autocast(cpu, args.precision):
            loss, _ = cross_entropy_and_hits(F.linear(h, w, b)[:valid].float(), targets[:valid])
        loss.backward()

    def fused(chunk: int) -> None:
        with autocast(cpu, args.precision):
            loss, _ = linear_cross_entropy(h, w, b, targets, chunk)
        loss.backward()

    chunks = [*args.chunks, rows]
    runs = {"plain": plain} | {f"fused, {c} rows/chunk": (lambda c=c: fused(c)) for c in chunks}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for f in runs.values():
        f()
    flush = torch.zeros(0 if args.warm else 128 << 20)  # 512 MB of fp32, rewritten before each call
    for _ in range(args.rounds):
        for k, f in runs.items():
            flush.add_(1.0)
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["plain"])
    print(
        f"CPU: {cpu_name()}; {args.threads} thread(s); {rows} rows × {vocab} × {d}, {args.precision}; "
        f"median of {args.rounds}, caches {'warm' if args.warm else 'flushed before each call'}"
    )
    for k, v in times.items():
        m = statistics.median(v)
        print(f"{k:<24} {m * 1000:8.1f} ms  ×{base / m:.2f}")


if __name__ == "__main__":
    main()
