"""Screen an attention-softmax temperature for the 2/128 deep model's plateau (issue 21, item 4).

One lane of `tiny-pretrain` as `tinylm bench time-to-gate` runs it (10 M-token schedule, evaluated every 100
steps), with every attention score multiplied by TAU (SDPA's scale = TAU / sqrt(head size)), stopped at
STOP tokens. A model trained this way is a plain BERT once TAU is folded into the query weights and bias,
so the architecture is unchanged. The curve is compared, at equal tokens, with the committed
`tiny-pretrain` lane of benchmarks/time_to_gate.json (same settings and seed; the runs are deterministic
up to rounding).

    TINYLM_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python benchmarks/attention_temperature.py --tau 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from tinylm.bench.time_to_gate import CURRENT, crossing, recipe_settings
from tinylm.machine import cpu_name
from tinylm.pretrain import pretrain
from tinylm.settings import PretrainSettings
from tinylm.train import Progress

HERE = Path(__file__).parent


class Stop(Exception):
    """Raised from the step hook at the token cap."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tau", type=float, default=4.0)
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
    print(f"attention temperature {args.tau}, {cpu_name()}, 1 thread; committed {CURRENT} lane beside it")
    print("step | tokens | held-out loss (tau) | committed tiny-pretrain | tokens/s (tau)")
    for p in lane["curve"]:
        r = by_step.get(p["step"])
        theirs = r["mlm_loss"] if r else float("nan")
        speed = p["tokens"] / max(p["seconds"], 1e-9)
        print(f"{p['step']} | {p['tokens']:,} | {p['mlm_loss']:.3f} | {theirs:.3f} | {speed:,.0f}")


if __name__ == "__main__":
    main()
