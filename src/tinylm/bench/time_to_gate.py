"""`tinylm bench time-to-gate`: how long pre-training recipes take to get a tiny model past the gate.

Each recipe pre-trains in a lane of its own (one process, `--threads` torch threads; lanes run side by
side on the same machine, on the same articles and held-out articles) until its held-out MLM loss is
`--gate` nats below the unigram baseline of the same masked targets, or until `--max-tokens`; the
held-out loss is evaluated every `--eval-every` steps. Time to gate = tokens to gate ÷ tokens per second:
the table gives both halves, the wall seconds of training (evaluations excluded) and each lane's ratio to
the baseline lane (`--baseline`: by default `tiny-pretrain-v1`, the first recipe; always run), all
measured in one run. The `member …` recipes are the committee members (1-layer/128, plain, 4 heads, or
with the paper's Conv2d front-end) on today's recipe: run them with `--baseline "member 1/128"`.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import multiprocessing as mp
import tempfile
from pathlib import Path
from typing import Any

#: The baseline lane: the recipe as it shipped before the time-to-gate work (`tiny-pretrain-v1`, the plain
#: loss path); it is always run, and every ratio is to it.
BASELINE = "tiny-pretrain-v1"
#: The current recipe: its lane runs `tiny-pretrain`'s differences from the baseline (also on another base),
#: on its own budget (its schedule decays over it).
CURRENT = "tiny-pretrain"
CURRENT_PLAIN = "tiny-pretrain, plain loss"
#: The second recipe (v1 on the fused loss, 15 % masking throughout, 14M tokens), kept by name.
PREVIOUS = "tiny-pretrain-v2"
#: The third (v2 with the 40 % → 15 % masking schedule on 9M tokens, the full softmax), kept by name.
THIRD = "tiny-pretrain-v3"
#: Today's recipe with one more change (the sampled softmax's screens of 2026-12-05).
ONE_MORE: dict[str, dict[str, Any]] = {
    "tiny-pretrain, full softmax from 50%": {"sampled_softmax_share": 0.5},
    "tiny-pretrain, 512 candidates": {"sampled_softmax": 512},
    "tiny-pretrain, 4096 candidates": {"sampled_softmax": 4096},
    "tiny-pretrain, mask 60→15%": {"mask_prob_start": 0.6},
}
#: Recipes read from a shipped config file: their differences from the baseline's file (then their own).
FROM_CONFIG = {CURRENT: CURRENT, CURRENT_PLAIN: CURRENT, PREVIOUS: PREVIOUS, THIRD: THIRD} | {
    name: CURRENT for name in ONE_MORE
}
#: A 1-layer/128 committee member, plain and with the paper's Conv2d front-end (the `cpu` preset's member).
MEMBER = "member 1/128"
MEMBER_CONV = "member 1/128 + conv"
CONV_FRONT_END: dict[str, Any] = {"conv_layers": 2, "conv_kernel": "3", "conv_channels": 8}
#: Recipes: changes to the baseline's settings.
RECIPES: dict[str, dict[str, Any]] = {
    BASELINE: {"fused_loss": False},
    CURRENT: {},
    CURRENT_PLAIN: {"fused_loss": False},
    PREVIOUS: {},
    THIRD: {},
    "fused loss": {},
    "batch 16": {"batch_size": 16, "warmup_steps": 460},
    "batch 16, lr 1.4e-3": {"batch_size": 16, "warmup_steps": 460, "lr": 1.4e-3},
    "lr 3e-3": {"lr": 3e-3},
    "warm-up 1%": {"warmup_steps": 45},
    "mask 30→15%": {"mask_prob_start": 0.3},
    "mask 40→15%": {"mask_prob_start": 0.4},
    "mask 30→15%, predict 15%": {"mask_prob_start": 0.3, "predict_prob": 0.15},
    "mask 40→15%, predict 15%": {"mask_prob_start": 0.4, "predict_prob": 0.15},
    "sinusoidal positions": {"position_init": "sinusoidal"},
    "mimetic attention": {"attention_init": "mimetic"},
    "sinusoidal + mimetic": {"position_init": "sinusoidal", "attention_init": "mimetic"},
    "mimetic + mask 30→15%": {"attention_init": "mimetic", "mask_prob_start": 0.3},
    # today's recipe with one change (the sampled softmax's screens of 2026-12-05)
    **ONE_MORE,
    "window ±2 → full at 25%": {"attention_window_start": 2, "attention_window_share": 0.25},
    "window ±8 → full at 25%": {"attention_window_start": 8, "attention_window_share": 0.25},
    # committee members (issue 21, item 5): the paper's BERT-1 variants at tiny width, on tiny-pretrain-v2's
    # recipe (15 % masking; the cpu preset's members), and a plain one with today's masking schedule
    MEMBER: {"fused_loss": True, "model": "tiny-1x128", "warmup_steps": 330},
    "member 1/128, 4 heads": {"fused_loss": True, "model": "tiny-1x128", "heads": 4, "warmup_steps": 330},
    MEMBER_CONV: {"fused_loss": True, "model": "tiny-1x128", "warmup_steps": 330} | CONV_FRONT_END,
    "member 1/128, mask 40→15%": {"fused_loss": True, "model": "tiny-1x128", "warmup_steps": 330}
    | {"mask_prob_start": 0.4},
}


def recipe_changes(name: str) -> dict[str, Any]:
    """A recipe's changes to the baseline's settings (the current recipe's: what its config file changes)."""
    from tinylm.config import named_config, read_yaml

    if name in FROM_CONFIG:
        v1, now = read_yaml(named_config(BASELINE)), read_yaml(named_config(FROM_CONFIG[name]))
        return {k: v for k, v in now.items() if v1.get(k) != v} | RECIPES[name]
    return RECIPES[name]


class GateReached(Exception):
    """Raised from the step hook once an evaluation is past the gate: the lane stops there."""


def recipe_settings(name: str, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `tinylm pretrain` settings of a recipe: `tiny-pretrain` (or `base`) with the recipe's changes."""
    from tinylm.config import named_config, read_yaml

    if name not in RECIPES:
        from tinylm.errors import ConfigError

        raise ConfigError([f"recipe: unknown recipe {name!r} (expected one of {', '.join(RECIPES)})"])
    start = read_yaml(named_config(BASELINE)) if base is None else dict(base)
    return start | recipe_changes(name)


def lane_settings(name: str, base: dict[str, Any] | None, fixed: dict[str, Any]) -> dict[str, Any]:
    """A lane's settings: the recipe's, with the run's `fixed` ones (token cap, evaluations); a recipe with
    a budget of its own (`tiny-pretrain`) keeps it: its schedules decay over it, and it is its cap."""
    own = recipe_changes(name).get("max_tokens")
    return recipe_settings(name, base) | fixed | ({"max_tokens": own} if own else {})


def crossing(path: Path, gate: float) -> dict[str, Any]:
    """From a run's metrics.jsonl: its held-out curve and the first evaluation at least `gate` nats below
    the unigram baseline (steps, tokens, training seconds without evaluations); None where never."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    evals = [r for r in records if "eval" in r]
    curve, spent_on_evals, hit = [], 0.0, None
    for r in evals:
        seconds = r["wall_seconds"] - spent_on_evals
        spent_on_evals += r["eval_seconds"]
        point = {"step": r["step"], "tokens": r["tokens"], "seconds": round(seconds, 2)}
        point |= {"mlm_loss": r["eval"]["mlm_loss"], "unigram_loss": r["eval"]["unigram_loss"]}
        curve.append(point)
        if hit is None and point["unigram_loss"] - point["mlm_loss"] >= gate:
            hit = point
    last = curve[-1] if curve else {}
    return {
        "steps_to_gate": hit and hit["step"],
        "tokens_to_gate": hit and hit["tokens"],
        "seconds_to_gate": hit and hit["seconds"],
        "tokens_per_s": round(last["tokens"] / last["seconds"], 1) if last and last["seconds"] > 0 else None,
        "final_loss": last.get("mlm_loss"),
        "unigram_loss": last.get("unigram_loss"),
        "curve": curve,
    }


def run_lane(name: str, settings: dict[str, Any], gate: float, out: str, threads: int) -> dict[str, Any]:
    """One lane (in its own process): pre-train until the gate or the token cap; the lane's row."""
    import torch

    from tinylm.pretrain import pretrain
    from tinylm.settings import PretrainSettings
    from tinylm.train import Progress

    torch.set_num_threads(threads)
    run_name = "".join(c if c.isalnum() or c in "-." else "_" for c in name)
    metrics = Path(out) / run_name / "metrics.jsonl"

    def stop_at_gate(p: Progress) -> None:
        if settings["eval_every"] and p.step % settings["eval_every"] == 0:
            last = [json.loads(line) for line in metrics.read_text().splitlines() if '"eval"' in line][-1]
            if last["eval"]["unigram_loss"] - last["eval"]["mlm_loss"] >= gate:
                raise GateReached

    run = {"out": out, "name": run_name, "progress": False, "threads": threads, "prune": True}
    with contextlib.suppress(GateReached):
        pretrain(PretrainSettings.build(settings | run), log=lambda *_: None, on_step=stop_at_gate)
    return {"recipe": name, "settings": settings} | crossing(metrics, gate)


def bench_time_to_gate(
    recipes: list[str],
    gate: float,
    max_tokens: int,
    eval_every: int,
    lanes: int,
    threads: int = 1,
    base: dict[str, Any] | None = None,
    common: dict[str, Any] | None = None,
    baseline: str = BASELINE,
    seeds: list[int] | None = None,
) -> dict[str, Any]:
    """Every recipe (`baseline` first) in `lanes` parallel processes, once per seed of `seeds` (None: the
    recipe's own seed); the rows, each with its ratios to the baseline lane of the same seed, and with
    several seeds a summary per recipe (medians over seeds)."""
    import torch

    from tinylm.machine import cpu_name

    names = [baseline] + [r for r in recipes if r != baseline]
    fixed = {"max_tokens": max_tokens, "eval_every": eval_every, "checkpoint_every": 10**9} | (common or {})
    seed_list: list[int | None] = list(seeds) if seeds else [None]
    plan = [(n, s) for s in seed_list for n in names]
    with tempfile.TemporaryDirectory() as out, cf.ProcessPoolExecutor(lanes, mp.get_context("spawn")) as pool:
        futures = [
            pool.submit(
                run_lane,
                n if s is None else f"{n} seed {s}",
                lane_settings(n, base, fixed) | ({} if s is None else {"seed": s}),
                gate,
                out,
                threads,
            )
            for n, s in plan
        ]
        rows = [
            f.result() | {"recipe": n, "seed": s, "baseline": n == baseline}
            for (n, s), f in zip(plan, futures, strict=True)
        ]
    for r in rows:
        _ratios(r, next(x for x in rows if x["baseline"] and x["seed"] == r["seed"]))
    return {
        "cpu": cpu_name(),
        "threads_per_lane": threads,
        "lanes_at_once": lanes,
        "lanes": rows,
        "seeds": seeds,
        "summary": summarise_seeds(rows) if seeds and len(seeds) > 1 else None,
        "gate_nats": gate,
        "max_tokens": max_tokens,
        "eval_every": eval_every,
        "torch": torch.__version__,
    }


def _ratios(r: dict[str, Any], ref: dict[str, Any]) -> None:
    """A lane's tokens, seconds and tokens/s as ratios to the baseline lane `ref` (None where either never
    crossed)."""
    for key in ("tokens_to_gate", "seconds_to_gate", "tokens_per_s"):
        ok = r[key] is not None and ref[key]
        r[f"{key}_vs_baseline"] = round(r[key] / ref[key], 3) if ok else None


def _median(values: list[Any]) -> float | None:
    """The median, None when a lane never crossed (the median of a set with a 'never' is not a number
    we can state without it)."""
    import statistics

    return None if not values or any(v is None for v in values) else float(statistics.median(values))


def summarise_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recipe over its seeds: the per-seed tokens and seconds to the gate, their medians, how many
    seeds crossed, and the ratios of the medians to the baseline's medians."""
    out = []
    for name in dict.fromkeys(r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == name]
        entry: dict[str, Any] = {
            "recipe": name,
            "baseline": mine[0]["baseline"],
            "seeds": [r["seed"] for r in mine],
        }
        for key in ("tokens_to_gate", "seconds_to_gate", "tokens_per_s"):
            entry[key] = [r[key] for r in mine]
            entry[f"median_{key}"] = _median(entry[key])
        entry["crossed"] = sum(r["tokens_to_gate"] is not None for r in mine)
        out.append(entry)
    ref = out[0]
    for e in out:
        for key in ("tokens_to_gate", "seconds_to_gate", "tokens_per_s"):
            a, b = e[f"median_{key}"], ref[f"median_{key}"]
            e[f"median_{key}_vs_baseline"] = round(a / b, 3) if a is not None and b else None
    return out


def _cell(v: Any, fmt: str) -> str:
    return "never" if v is None else format(v, fmt)


def format_time_to_gate(r: dict[str, Any]) -> str:
    lines = [
        "| recipe | tokens/s | steps to gate | tokens to gate | seconds to gate | final loss (unigram) | "
        "time ÷ baseline | tokens ÷ baseline | tokens/s ÷ baseline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["lanes"]:
        seed = "" if x.get("seed") is None else f", seed {x['seed']}"
        cells = [
            f"{x['recipe']}{' (baseline)' if x['baseline'] else ''}{seed}",
            _cell(x["tokens_per_s"], ",.0f"),
            _cell(x["steps_to_gate"], ","),
            _cell(x["tokens_to_gate"], ","),
            _cell(x["seconds_to_gate"], ",.0f"),
            f"{_cell(x['final_loss'], '.3f')} ({_cell(x['unigram_loss'], '.3f')})",
            *(
                _cell(x[f"{k}_vs_baseline"], ".2f")
                for k in ("seconds_to_gate", "tokens_to_gate", "tokens_per_s")
            ),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Gate: held-out MLM loss {r['gate_nats']} nats below the unigram baseline; cap "
        f"{r['max_tokens']:,} tokens{_own_budgets(r)}; evaluated every {r['eval_every']} steps; "
        f"{len(r['lanes'])} lanes of "
        f"{r['threads_per_lane']} thread(s), {r.get('lanes_at_once', len(r['lanes']))} at a time, on "
        f"{r['cpu']} (torch {r['torch']}). Seconds: training wall time, evaluations excluded.",
    ]
    return "\n".join(lines + _summary_table(r.get("summary")))


def _own_budgets(r: dict[str, Any]) -> str:
    """The lanes that ran on a budget of their own (their schedule and cap), as a clause of the caption."""
    own = {
        x["recipe"]: x["settings"]["max_tokens"]
        for x in r["lanes"]
        if x["settings"]["max_tokens"] != r["max_tokens"]
    }
    return "".join(f" ({n}: its own {v:,})" for n, v in own.items())


def _summary_table(summary: list[dict[str, Any]] | None) -> list[str]:
    """Per recipe over seeds: medians and how many seeds crossed (ratios: of the medians)."""
    if not summary:
        return []
    lines = [
        "",
        "Over seeds (each lane's ratios above are to the baseline lane of its own seed):",
        "",
        "| recipe | seeds crossed | tokens to gate per seed | median tokens | median seconds | "
        "median time ÷ baseline | median tokens ÷ baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        per_seed = ", ".join(_cell(v, ",") for v in e["tokens_to_gate"])
        cells = [
            f"{e['recipe']}{' (baseline)' if e['baseline'] else ''}",
            f"{e['crossed']}/{len(e['seeds'])}",
            per_seed,
            _cell(e["median_tokens_to_gate"], ",.0f"),
            _cell(e["median_seconds_to_gate"], ",.0f"),
            _cell(e["median_seconds_to_gate_vs_baseline"], ".2f"),
            _cell(e["median_tokens_to_gate_vs_baseline"], ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def lane_styles(lanes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each lane's line in the figure: one colour per recipe, one line style per seed, labelled with both."""
    recipes = list(dict.fromkeys(x["recipe"] for x in lanes))
    seeds = list(dict.fromkeys(x.get("seed") for x in lanes))
    return [
        {
            "color": f"C{recipes.index(x['recipe']) % 10}",
            "ls": ("-", "--", ":", "-.")[seeds.index(x.get("seed")) % 4],
            "label": x["recipe"] + ("" if x.get("seed") is None else f", seed {x['seed']}"),
        }
        for x in lanes
    ]


def plot_time_to_gate(r: dict[str, Any], path: Path) -> None:
    """Held-out MLM loss against training seconds, one line per lane, the gate of the baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for x, style in zip(r["lanes"], lane_styles(r["lanes"]), strict=True):
        c = x["curve"]
        ax.plot([p["seconds"] / 60 for p in c], [p["mlm_loss"] for p in c], **style)
    if r["lanes"] and r["lanes"][0]["unigram_loss"] is not None:
        ax.axhline(
            r["lanes"][0]["unigram_loss"] - r["gate_nats"], color="grey", ls="--", lw=0.8, label="gate"
        )
    ax.set_xlabel(f"training minutes ({r['cpu']}, {r['threads_per_lane']} thread(s) per lane)")
    ax.set_ylabel("held-out MLM loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cmd(args: argparse.Namespace) -> int:
    from tinylm.machine import write_benchmark

    res = bench_time_to_gate(
        args.recipes,
        args.gate,
        args.max_tokens,
        args.eval_every,
        args.lanes,
        args.threads,
        baseline=args.baseline,
        seeds=args.seeds,
    )
    code = write_benchmark(Path(args.out), "time_to_gate", res, format_time_to_gate(res))
    plot_time_to_gate(res, Path(args.out) / "time_to_gate.png")
    return code


def add_time_to_gate_parser(bsub: argparse._SubParsersAction[Any]) -> None:
    q = bsub.add_parser(
        "time-to-gate",
        help="pre-training recipes side by side: tokens and wall seconds to the adequacy gate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument(
        "--recipes",
        nargs="+",
        default=[CURRENT],
        choices=list(RECIPES),
        help=f"recipes (default: {CURRENT}; the baseline always runs)",
    )
    q.add_argument(
        "--baseline",
        default=BASELINE,
        choices=list(RECIPES),
        help=f"the lane every ratio is to (default {BASELINE}, the first recipe; e.g. '{MEMBER}' for "
        f"the committee members' lanes)",
    )
    q.add_argument("--gate", type=float, default=1.5, help="nats below the unigram baseline (default 1.5)")
    q.add_argument(
        "--max-tokens",
        "--max_tokens",
        dest="max_tokens",
        type=int,
        default=14_000_000,
        help="schedule and token cap of the lanes whose recipe has no budget of its own (default 14M: "
        "tiny-pretrain-v2's budget; tiny-pretrain runs on its own)",
    )
    q.add_argument(
        "--eval-every",
        "--eval_every",
        dest="eval_every",
        type=int,
        default=100,
        help="held-out evaluation every N steps, where the crossing is looked for (default 100)",
    )
    q.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="run every recipe once per seed (e.g. --seeds 0 1 2): tokens to the gate vary with the seed, "
        "so a budget wants more than one; ratios are to the baseline lane of the same seed, and a summary "
        "gives the medians (default: the recipe's own seed, once)",
    )
    q.add_argument("--lanes", type=int, default=2, help="lanes run at once (default 2)")
    q.add_argument("--threads", type=int, default=1, help="torch threads per lane (default 1)")
    q.add_argument("--out", default="benchmarks", help="where to write time_to_gate.{json,md,png}")
    q.set_defaults(handler=_cmd)
