"""report.md's sections on the paper's future work: E5, E6 and the distillation (nothing is computed here
but the Pareto front, from results and timings)."""

from __future__ import annotations

from typing import Any

from tinylm.config import model_shape
from tinylm.paper.analyse_future import pareto_front
from tinylm.paper.presets import Preset
from tinylm.paper.render import metric_correlation_lines


def _p(x: float | None) -> str:
    return "–" if x is None else (f"{x:.2g}" if x >= 1e-4 else "<1e-4")


def _nats(values: list[float | None]) -> str:
    return ", ".join("–" if v is None else f"{v:.2f}" for v in values)


def _e5(p: Preset, e5: dict[str, Any]) -> list[str]:
    assert p.e5 is not None
    fractions = ", ".join(f"{f:g}" for f in p.e5.fractions)
    L = [
        "## E5 — task-specific vs generic pre-training corpora (beyond the paper)",
        "",
        f"**{e5['answer']}**",
        "",
        f"Model {model_shape(p.e5.model)}; corpora: *generic* = the nested {p.main_corpus:,}-article "
        f"Wikipedia subset; *TASK* = the {p.e5.articles:,} articles of the first {p.e5.pool:,} (seeded "
        f"order) with the highest `{p.e5.metric}` overlap with TASK's training samples (`tinylm corpus "
        f"select`); budgets: {p.e5.tokens:,} tokens × {fractions}; {p.e5.seeds} pre-training(s) per cell,"
        " each fine-tuned with its replicate's seeds. Gap = accuracy − a scratch "
        "model of the same architecture and seed; mean ± std over (replicate, seed) units.",
        "",
        "| fine-tuned on | corpus | × tokens | gap (pp) | n | nats below unigram (per pre-training) |",
        "|---|---|---|---|---|---|",
    ]
    for task, t in e5["tasks"].items():
        for c in t["cells"]:
            L.append(
                f"| {task} | {c['corpus']} | {c['fraction']:g} | {c['gap_pp']:+.1f} ± "
                f"{c['gap_std_pp']:.1f} | {c['n']} | {_nats(c['nats_below_unigram'])} |"
            )
    L += ["", "Comparisons (paired over shared units; two-sided t-test p):", ""]
    for task, t in e5["tasks"].items():
        for c in t["own_vs_generic_full"] + t["cross_vs_generic"]:
            (ca, fa), (cb, fb) = c["a"], c["b"]
            L.append(
                f"- {task}: {ca} at {fa:g}× − {cb} at {fb:g}×: {c['diff_pp']:+.1f} pp (p = {_p(c['p'])}, "
                f"n = {c['n']})"
            )
    L += ["", "Selected corpora (overlap with their task's training samples):", ""]
    for task, m in e5["selections"].items():
        o = m["overlap_train"]
        L.append(
            f"- {task}: weighted overlap {o['weighted_overlap']:.3f}, occurrence coverage "
            f"{o['occurrence_coverage']:.3f}; score {m['metric']} chosen mean "
            f"{m['scores']['chosen_mean']:.3f} vs pool mean {m['scores']['pool_mean']:.3f}"
        )
    what = "each corpus at the full budget, its overlap with the fine-tuning task's training samples"
    return L + [
        "",
        *metric_correlation_lines(e5.get("metric_correlations"), what),
        "![E5](figures/e5_gaps.png)",
        "",
    ]


def _e6_task(task: str, t: dict[str, Any], lat: dict[str, Any]) -> list[str]:
    ms = lat.get("ms", {})
    batches = sorted({b for v in ms.values() for b in v}, key=int)
    head = " | ".join(f"ms/input b{b}" for b in batches)
    L = [
        f"**{task}** (deep model: {100 * t['reference']['accuracy']:.1f} %, "
        + ", ".join(f"{ms.get('deep', {}).get(b, float('nan')):.3f} ms/input at batch {b}" for b in batches)
        + f"; saturation within {1.0:g} pp of the curve's best, random orders: "
        + ", ".join(f"{c} k = {k}" for c, k in sorted(t["saturates_at"].items()))
        + ")",
        "",
        f"| committee | k | accuracy | random orders | − deep (95% CI, pp) | {head} | training PFLOP |",
        "|---|---|---|---|---|" + "---|" * len(batches) + "---|",
    ]
    for pt in t["points"]:
        lo, hi = pt["paired"]["ci95_pp"]
        name = f"{pt['committee']}:{pt['k']}"
        cells = " | ".join(f"{ms.get(name, {}).get(b, float('nan')):.3f}" for b in batches)
        flops = (pt["cost"]["pretrain_flops"] + pt["cost"]["finetune_flops"]) / 1e15
        L.append(
            f"| {pt['committee']} | {pt['k']} | {100 * pt['accuracy']:.1f} | "
            f"{100 * pt['random_order_mean']:.1f} ± {100 * pt['random_order_std']:.1f} | "
            f"[{lo:+.1f}, {hi:+.1f}] | {cells} | {flops:.3f} |"
        )
    if ms and batches:
        front = pareto_front(t["points"], ms, batches[0])
        L += ["", f"Best shallow configuration per latency budget (batch {batches[0]}, Pareto front):", ""]
        L += [
            f"- ≤ {f['ms']:.3f} ms/input: {f['committee']} k = {f['k']} ({100 * f['accuracy']:.1f} %)"
            for f in front
        ]
    return L + ["", f"![E6 {task}](figures/e6_pareto_{task}.png)", ""]


def _e6(e6: dict[str, Any], timings: dict[str, Any]) -> list[str]:
    archs = "; ".join(f"{a} = {model_shape(m)}" for a, m in e6["architectures"].items())
    L = [
        "## E6 — larger and mixed committees (beyond the paper)",
        "",
        f"Member pool: {e6['per_arch']} independently pre-trained members of each architecture ({archs}); "
        "*archN* committees take that architecture's members in pool order, *mixed* takes the whole pool in "
        "order (the architectures alternate). Accuracy of the soft committee (mean of softmaxes) on the "
        "task's test items; random orders: mean ± std over 20 random member orders; CI: paired bootstrap "
        "against the deep model on the same items; latency: these models, fp32, stacked per architecture, "
        "on this machine (timings.json).",
        "",
    ]
    for task, t in e6["tasks"].items():
        L += _e6_task(task, t, timings.get("future_latency", {}).get(f"ensemble:{task}", {}))
    return L


def _ci(cmp: dict[str, Any]) -> str:
    return f"[{cmp['ci95_pp'][0]:+.1f}, {cmp['ci95_pp'][1]:+.1f}] (p {_p(cmp['mcnemar_p'])})"


def _distill(d: dict[str, Any], timings: dict[str, Any]) -> list[str]:
    L = [
        "## Distillation — the committee in one member (beyond the paper)",
        "",
        " ".join(
            [
                "*student* starts from member 0's pre-trained weights and is fine-tuned on the labels",
                f"and the committee's soft probabilities (T = {d['temperature']:g}, α = {d['alpha']:g});",
                "*student+text* also learns E5's corpus selected for the task as unlabelled text (soft",
                "targets only); *member 0*: the same weights fine-tuned on the labels alone; *best member*:",
                "chosen on validation. Latency: batch 1, fp32, this machine (every student has member 0's",
                "architecture). Student − model: paired bootstrap 95% CI (McNemar p) on the same test items.",
            ]
        ),
        "",
        "| task | model | accuracy | agrees with committee | ms/input (b1) | training PFLOP |",
        "|---|---|---|---|---|---|",
    ]
    for task, t in d["tasks"].items():
        ms = timings.get("future_latency", {}).get(f"distill:{task}", {}).get("ms", {})
        for name in [*t["students"], "committee", "best_member", "member0", "deep"]:
            cost = t["cost"].get(name)
            pf = "–" if cost is None else f"{(cost['pretrain_flops'] + cost['finetune_flops']) / 1e15:.3f}"
            lat = ms.get("student" if name in t["students"] else name, {}).get("1")
            agree = t["agreement_with_committee"].get(name)
            agree_cell = "–" if agree is None else f"{100 * agree:.1f}"
            lat_cell = "–" if lat is None else f"{lat:.3f}"
            L.append(
                f"| {task} | {name} | {100 * t['accuracy'][name]:.1f} | {agree_cell} | {lat_cell} | {pf} |"
            )
    L += [
        "",
        "| task | student | − committee | − best member | − member 0 | − deep model |",
        "|---|---|---|---|---|---|",
    ]
    for task, t in d["tasks"].items():
        for name, cmp in t["paired"].items():
            cells = " | ".join(_ci(cmp[k]) for k in ("committee", "best_member", "member0", "deep"))
            L.append(f"| {task} | {name} | {cells} |")
    return L + [""]


def future_sections(p: Preset, r: dict[str, Any], timings: dict[str, Any]) -> list[str]:
    """The report's E5, E6 and distillation sections (none when the preset does not run them)."""
    L: list[str] = []
    if "E5" in r:
        L += _e5(p, r["E5"])
    if "E6" in r:
        L += _e6(r["E6"], timings)
    if "distill" in r:
        L += _distill(r["distill"], timings)
    return L
