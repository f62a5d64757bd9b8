"""Tokens/s of tinylm's real MLM training step (MLMObjective.loss + backward + AdamW) on the 2/128 and 1/128
models, for one or several source trees, alternated in rounds so that machine noise hits all alike.

    python benchmarks/train_step.py --trees OLD/src src --rounds 3 [--real-lengths] [--precision bf16]
        [--side-by-side]

Each measurement runs in a fresh process with PYTHONPATH set to the tree (batch 32 × 128 real Wikipedia
tokens when TINYLM_DATA_DIR is set, dropout off, fp32 or `--precision bf16` autocast as the trainer's,
torch's default threads, glibc's allocator tuned as the trainer tunes it); the table gives the median over
rounds and the ratio of every tree to the first, with the CPU named. `--real-lengths`: the rows cut to the
lengths of 32 seeded Wikipedia leads of the presets' corpus (padded, trimmed to the longest, as the trainer
batches them; tokens/s count real tokens), so that work skipped on padding shows. `--side-by-side`: the
trees' processes run at once, one thread each, as `reproduce --jobs 2` runs its lanes (sharing memory
bandwidth and caches), instead of one after the other with every core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

CHILD = """
import json, statistics, sys, time
import torch
from tinylm.config import ModelConfig, TrainConfig
from tinylm.model import TinyBertForMaskedLM
from tinylm.objectives import MLMObjective
from tinylm.train import make_optimizer
from tinylm.bench.pretrain import sample_batch
from tinylm.perf import tune_cpu_allocator
from tinylm.predict import autocast
tune_cpu_allocator()  # as the trainer does
layers, steps, lengths = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
precision = sys.argv[4]  # fp32 or bf16, under the trainer's own autocast
torch.manual_seed(0)
cfg = ModelConfig(layers=layers, hidden_size=128, heads=2, ffn_size=512, dropout=0.0, attention_dropout=0.0)
model = TinyBertForMaskedLM(cfg).train()
objective = MLMObjective(cfg.vocab_size, seed=0)
opt = make_optimizer(model, TrainConfig(lr=1e-3), torch.device("cpu"))
ids = sample_batch(32, 128, cfg.vocab_size)
attention = torch.ones_like(ids)
if lengths:  # real lead lengths: pad after each row's length ([SEP] moved there), trim to the longest
    n = torch.tensor(lengths)
    attention = (torch.arange(128)[None, :] < n[:, None]).long()
    ids = ids * attention
    ids[torch.arange(32), n - 1] = 102
    ids, attention = ids[:, : int(n.max())], attention[:, : int(n.max())]
batch = {"input_ids": ids, "attention": attention}
times = []
for i in range(steps + 3):
    t = time.perf_counter()
    with autocast(torch.device("cpu"), precision):
        loss, stats = objective.loss(model, batch)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if i >= 3:
        times.append(time.perf_counter() - t)
print(json.dumps(int(attention.sum()) / statistics.median(times)))
"""


def start(tree: str, layers: int, steps: int, lengths: list[int], precision: str, threads: str = "") -> Any:
    env = (
        os.environ | {"PYTHONPATH": os.path.abspath(tree)} | ({"OMP_NUM_THREADS": threads} if threads else {})
    )
    argv = [sys.executable, "-c", CHILD, str(layers), str(steps), json.dumps(lengths), precision]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc: Any) -> float:
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a measurement failed:\n{err}")
    return float(out.strip().splitlines()[-1])


def measure(tree: str, layers: int, steps: int, lengths: list[int], precision: str) -> float:
    return result(start(tree, layers, steps, lengths, precision))


def measure_side_by_side(
    trees: list[str], layers: int, steps: int, lengths: list[int], precision: str
) -> list[float]:
    """Every tree's step at once, one process of one thread each (as `reproduce --jobs N` runs its lanes)."""
    procs = [start(t, layers, steps, lengths, precision, threads="1") for t in trees]
    return [result(p) for p in procs]


def real_lengths(n: int = 32, seed: int = 0) -> list[int]:
    """The token lengths of n seeded leads of the presets' Wikipedia corpus (first 2,000 articles)."""
    import numpy as np

    from tinylm.data.corpus import load_wiki_corpus
    from tinylm.data.sources import resolve_source
    from tinylm.data.tokenize import load_tokenizer
    from tinylm.registry import PAPER_CORPUS_SEED

    src = resolve_source(None)
    corpus = load_wiki_corpus(src, load_tokenizer(src), 2000, PAPER_CORPUS_SEED, 128, 100)
    pick = np.random.default_rng(seed).choice(len(corpus.train.lengths), n, replace=False)
    return [int(x) for x in corpus.train.lengths[pick]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trees", nargs="+", default=["src"], help="source trees (directories holding tinylm/)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--real-lengths", action="store_true", help="rows cut to real Wikipedia lead lengths")
    p.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: the step under bf16 autocast"
    )
    p.add_argument(
        "--side-by-side",
        action="store_true",
        help="run the trees' measurements at once, one single-thread process each (the grid's lanes)",
    )
    args = p.parse_args()
    sys.path.insert(0, os.path.abspath(args.trees[-1]))
    from tinylm.machine import cpu_name

    lengths = real_lengths() if args.real_lengths else []

    runs: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for layers in (2, 1):
            if args.side_by_side:
                got = measure_side_by_side(args.trees, layers, args.steps, lengths, args.precision)
            else:
                got = [measure(t, layers, args.steps, lengths, args.precision) for t in args.trees]
            for tree, x in zip(args.trees, got, strict=True):
                runs.setdefault((tree, layers), []).append(x)
    shape = f"real lead lengths (mean {sum(lengths) / len(lengths):.1f})" if lengths else "32 × 128 tokens"
    step = f"tokens/s of one training step ({args.precision})"
    if args.side_by_side:
        step += ", the trees side by side (one thread each)"
    print(f"CPU: {cpu_name()}; median of {args.rounds} rounds, {step}, {shape}")
    for layers in (2, 1):
        base = statistics.median(runs[(args.trees[0], layers)])
        for tree in args.trees:
            med = statistics.median(runs[(tree, layers)])
            each = json.dumps([round(x) for x in runs[(tree, layers)]])
            print(f"{layers}/128  {tree:<30} {med:>9,.0f}  ×{med / base:.2f}  {each}")


if __name__ == "__main__":
    main()
