"""Tokens/s of tinylm's real MLM training step (MLMObjective.loss + backward + AdamW) on the 2/128 and 1/128
models, for one or several source trees, alternated in rounds so that machine noise hits all alike.

    python benchmarks/train_step.py --trees /path/to/old/src src --rounds 3

Each measurement runs in a fresh process with PYTHONPATH set to the tree (batch 32 × 128 real Wikipedia
tokens when TINYLM_DATA_DIR is set, dropout off, fp32, torch's default threads, glibc's allocator tuned as
the trainer tunes it); the table gives the
median over rounds and the ratio of every tree to the first, with the CPU named.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, statistics, sys, time
import torch
from tinylm.config import ModelConfig, TrainConfig
from tinylm.model import TinyBertForMaskedLM
from tinylm.objectives import MLMObjective
from tinylm.train import make_optimizer
from tinylm.bench.pretrain import sample_batch
from tinylm.perf import tune_cpu_allocator
tune_cpu_allocator()  # as the trainer does
layers, steps = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
cfg = ModelConfig(layers=layers, hidden_size=128, heads=2, ffn_size=512, dropout=0.0, attention_dropout=0.0)
model = TinyBertForMaskedLM(cfg).train()
objective = MLMObjective(cfg.vocab_size, seed=0)
opt = make_optimizer(model, TrainConfig(lr=1e-3), torch.device("cpu"))
ids = sample_batch(32, 128, cfg.vocab_size)
batch = {"input_ids": ids, "attention": torch.ones_like(ids)}
times = []
for i in range(steps + 3):
    t = time.perf_counter()
    loss, stats = objective.loss(model, batch)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if i >= 3:
        times.append(time.perf_counter() - t)
print(json.dumps(ids.numel() / statistics.median(times)))
"""


def measure(tree: str, layers: int, steps: int) -> float:
    env = os.environ | {"PYTHONPATH": os.path.abspath(tree)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(layers), str(steps)], env=env, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trees", nargs="+", default=["src"], help="source trees (directories holding tinylm/)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=15)
    args = p.parse_args()
    sys.path.insert(0, os.path.abspath(args.trees[-1]))
    from tinylm.machine import cpu_name

    runs: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for tree in args.trees:
            for layers in (2, 1):
                runs.setdefault((tree, layers), []).append(measure(tree, layers, args.steps))
    print(f"CPU: {cpu_name()}; median of {args.rounds} rounds, tokens/s of one training step (fp32)")
    for layers in (2, 1):
        base = statistics.median(runs[(args.trees[0], layers)])
        for tree in args.trees:
            med = statistics.median(runs[(tree, layers)])
            each = json.dumps([round(x) for x in runs[(tree, layers)]])
            print(f"{layers}/128  {tree:<30} {med:>9,.0f}  ×{med / base:.2f}  {each}")


if __name__ == "__main__":
    main()
