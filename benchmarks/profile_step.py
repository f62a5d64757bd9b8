"""Where a tiny model's MLM training step spends its time: the trainer's own step (`MLMObjective.loss`,
backward, AdamW) under torch.profiler, self CPU time grouped into matmuls, attention, the vocabulary
loss, the optimizer and the rest; with the plain loss path and with the fused one (`train.fused_loss`),
and with `--sampled K` a third: the sampled softmax over K candidates per step (`sampled_softmax`).

    python benchmarks/profile_step.py [--layers 2] [--steps 10] [--threads 1] [--precision bf16] [--top 15]
        [--sampled 2048] [--mask 0.15]

Batch 32 × 128 real Wikipedia tokens when TINYLM_DATA_DIR is set (else random ids), dropout off, fp32 (or
the trainer's bf16 autocast), glibc's allocator tuned as the trainer tunes it; `--top`: the operators that
took the most self CPU time in the fused path.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from tinylm.bench.pretrain import sample_batch
from tinylm.config import ModelConfig, TrainConfig
from tinylm.machine import cpu_name
from tinylm.model import TinyBertForMaskedLM
from tinylm.objectives import MLMObjective, unigram_log_probs
from tinylm.perf import tune_cpu_allocator
from tinylm.predict import autocast
from tinylm.randomness import activate, rows_of
from tinylm.train import make_optimizer

#: Operator name fragments → the part of the step they belong to (first match wins).
PARTS = [
    ("attention", ("scaled_dot_product", "flash_attention", "softmax")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear")),
    ("vocabulary loss", ("_CrossEntropy", "_LinearCrossEntropy", "aten::exp", "aten::sub", "aten::amax",
                         "aten::gather", "aten::scatter", "aten::log", "aten::where", "SliceBackward",
                         "aten::index", "aten::index_add", "aten::multinomial", "aten::masked_fill",
                         "aten::cat", "IndexBackward", "aten::logsumexp")),
    ("optimizer", ("adamw", "Optimizer.step")),
    ("zero-fill / copies", ("aten::fill_", "aten::zero_", "aten::copy_", "aten::zeros")),
    ("layer norm / gelu", ("layer_norm", "gelu")),
    ("embedding", ("embedding",)),
]  # fmt: skip


def part_of(name: str) -> str:
    for part, keys in PARTS:
        if any(k in name for k in keys):
            return part
    return "other"


def profile_step(
    layers: int,
    fused: bool,
    steps: int,
    precision: str = "fp32",
    sampled: int | None = None,
    mask: float = 0.15,
) -> tuple[float, dict[str, float], list[tuple[str, float]]]:
    """Tokens/s of `steps` timed steps, each part's share of the profiled steps' self CPU time, and every
    operator's share (largest first); `sampled`: the sampled softmax over that many candidates; `mask`:
    the masking rate."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        layers=layers, hidden_size=128, heads=2, ffn_size=512, dropout=0.0, attention_dropout=0.0
    )
    model = TinyBertForMaskedLM(cfg).train()
    ids = sample_batch(32, 128, cfg.vocab_size)
    unigram = unigram_log_probs(ids.numpy(), cfg.vocab_size)
    objective = MLMObjective(
        cfg.vocab_size, mask_prob=mask, seed=0, fused=fused, unigram=unigram, sampled=sampled
    )
    opt = make_optimizer(model, TrainConfig(lr=1e-3), torch.device("cpu"))
    batch = {"input_ids": ids, "attention": torch.ones_like(ids)}
    count = iter(range(10**9))

    def step() -> None:  # a training step's rows (the masking and the candidates draw from them)
        with autocast(torch.device("cpu"), precision), activate(rows_of(0, next(count), range(32), 128)):
            loss, stats = objective.loss(model, batch)
        (loss / stats["count"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    tokens_per_s = steps * ids.numel() / (time.perf_counter() - t)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    shares: dict[str, float] = defaultdict(float)
    ops = [(e.key, float(e.self_cpu_time_total)) for e in prof.key_averages()]
    for key, t in ops:
        shares[part_of(key)] += t
    total = sum(shares.values())
    top = sorted(((k, t / total) for k, t in ops), key=lambda kv: -kv[1])
    return tokens_per_s, {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}, top


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, nargs="+", default=[2, 1])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--top", type=int, default=0, help="also list the N costliest operators (last path)")
    p.add_argument("--sampled", type=int, default=None, help="also the sampled softmax over K candidates")
    p.add_argument("--mask", type=float, default=0.15, help="masking rate (default 0.15)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()  # as the trainer does: large buffers reused, not re-faulted every step
    setting = f"{args.threads} thread(s); torch {torch.__version__}; {args.precision}; batch 32 x 128"
    print(f"CPU: {cpu_name()}; {setting}; masking {args.mask:.0%}")
    paths = [("plain", False, None), ("fused", True, None)]
    paths += [(f"sampled {args.sampled}", True, args.sampled)] if args.sampled else []
    for layers in args.layers:
        for name, fused, sampled in paths:
            tps, shares, top = profile_step(layers, fused, args.steps, args.precision, sampled, args.mask)
            parts = ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
            print(f"{layers}/128 {name} loss: {tps:,.0f} tokens/s; {parts}")
        for key, share in top[: args.top]:
            print(f"    {share:6.1%}  {key}")


if __name__ == "__main__":
    main()
