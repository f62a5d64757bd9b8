"""Screen a remedy for the 2/128 deep model's plateau (issue 21, item 4) in one lane, without a new setting.

One lane of `tiny-pretrain` as `tinylm bench time-to-gate` runs it (10 M-token schedule, evaluated every 100
steps), stopped at STOP tokens, with
- `--tau T`: every attention score multiplied by T (SDPA's scale = T / sqrt(head size)); a model trained
  this way is a plain BERT once T is folded into the query weights and bias (same architecture);
- `--lr-mult GROUP=M`: the learning rate of a parameter group times M (`positions`: the position
  embeddings; `embeddings`: word, position and token-type embeddings; `attention`: Q/K/V weights and
  biases), the same warm-up and decay;
- `--warmup N`: N warm-up steps instead of the recipe's 230.
The curve is compared, at equal steps, with the committed `tiny-pretrain` lane of
benchmarks/time_to_gate.json (same settings and seed; the runs are deterministic up to rounding).

    TINYLM_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python benchmarks/plateau_screen.py --tau 4
    TINYLM_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python benchmarks/plateau_screen.py --lr-mult positions=5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

import tinylm.train
from tinylm.bench.time_to_gate import CURRENT, crossing, recipe_settings
from tinylm.machine import cpu_name
from tinylm.pretrain import pretrain
from tinylm.settings import PretrainSettings
from tinylm.train import Progress

HERE = Path(__file__).parent
GROUPS = {
    "positions": ("embeddings.position_embeddings.",),
    "embeddings": ("embeddings.word_embeddings.", "embeddings.position_embeddings.", "embeddings.token_type"),
    "attention": ("attention.self.",),
}


def with_lr_multipliers(multipliers: dict[str, float], lr: float) -> None:
    """Make the trainer's parameter groups give the named parameters lr × their multiplier."""
    plain = tinylm.train.param_groups

    def groups(model, weight_decay):  # type: ignore[no-untyped-def]
        special = {
            id(p): m
            for name, p in model.named_parameters()
            for g, m in multipliers.items()
            if any(k in name for k in GROUPS[g])
        }
        out = []
        for group in plain(model, weight_decay):
            for m in sorted(set(special.values())):
                chosen = [p for p in group["params"] if special.get(id(p)) == m]
                out.append(group | {"params": chosen, "lr": lr * m})
            out.append(group | {"params": [p for p in group["params"] if id(p) not in special]})
        return [g for g in out if g["params"]]

    tinylm.train.param_groups = groups


class Stop(Exception):
    """Raised from the step hook at the token cap."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: the recipe's)")
    ap.add_argument("--lr-mult", nargs="*", default=[], metavar="GROUP=M", help=f"GROUP in {list(GROUPS)}")
    ap.add_argument("--stop", type=int, default=4_000_000, help="stop after this many training tokens")
    args = ap.parse_args()
    torch.set_num_threads(1)
    plain_sdpa = F.scaled_dot_product_attention

    def tempered(q, k, v, attn_mask=None, dropout_p=0.0, **kw):  # type: ignore[no-untyped-def]
        scale = args.tau / q.shape[-1] ** 0.5
        return plain_sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)

    F.scaled_dot_product_attention = tempered
    schedule = {"max_tokens": 10_000_000, "eval_every": 100, "checkpoint_every": 10**9}
    settings = recipe_settings(CURRENT) | schedule
    if args.warmup is not None:
        settings["warmup_steps"] = args.warmup
    multipliers = {g: float(m) for g, m in (x.split("=") for x in args.lr_mult)}
    with_lr_multipliers(multipliers, settings["lr"])

    def stop(p: Progress) -> None:
        if p.tokens >= args.stop and p.step % 100 == 0:
            raise Stop

    with tempfile.TemporaryDirectory() as out:
        run = {"out": out, "name": "lane", "progress": False, "threads": 1, "prune": True}
        with contextlib.suppress(Stop):
            pretrain(PretrainSettings.build(settings | run), log=lambda *_: None, on_step=stop)
        lane = crossing(Path(out) / "lane" / "metrics.jsonl", 1.5)
    committed = json.loads((HERE / "time_to_gate.json").read_text())["lanes"]
    ref = next(x for x in committed if x["recipe"] == CURRENT)
    by_step = {p["step"]: p for p in ref["curve"]}
    print(
        f"attention temperature {args.tau}, lr multipliers {multipliers}, warm-up {settings['warmup_steps']} "
        f"steps, {cpu_name()}, 1 thread"
    )
    print(f"step | tokens | held-out loss (this lane) | committed {CURRENT} lane | tokens/s (this lane)")
    for p in lane["curve"]:
        r = by_step.get(p["step"])
        theirs = r["mlm_loss"] if r else float("nan")
        speed = p["tokens"] / max(p["seconds"], 1e-9)
        print(f"{p['step']} | {p['tokens']:,} | {p['mlm_loss']:.3f} | {theirs:.3f} | {speed:,.0f}")


if __name__ == "__main__":
    main()
