"""The report's figures (PNG, written atomically): E1 curves, E2/E3 gap plots, E4 latency bars.

Committee accuracy-vs-size plots come from `tinylm.committee.plot_curve` (the `committee` command's own).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.logs import quiet_logger
from tinylm.paper.stats import mean_std


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    with quiet_logger("matplotlib.font_manager"):  # "findfont: Font family ['STIXGeneral'] not found" ×20
        fig.tight_layout()
        fig.savefig(tmp, dpi=110)
    _plt().close(fig)
    os.replace(tmp, path)


def fig_epochs(curves: dict[str, dict[str, list[list[float]]]], path: Path) -> None:
    plt = _plt()
    tasks = list(curves)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for label, runs in curves[task].items():
            # runs stopped early (`patience`) are shorter: an epoch's mean is over the runs that got there
            arr = np.full((len(runs), max(map(len, runs))), np.nan)
            for i, run in enumerate(runs):
                arr[i, : len(run)] = np.array(run) * 100
            ep = np.arange(1, arr.shape[1] + 1)
            ax.plot(ep, np.nanmean(arr, 0), marker="o", label=f"{label} (mean of {len(runs)} seeds)")
            if len(runs) > 1:
                ax.fill_between(ep, np.nanmin(arr, 0), np.nanmax(arr, 0), alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("fine-tuning epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        "E1: accuracy per epoch, pre-trained vs from scratch (band: min–max over seeds)", fontsize=10
    )
    _save(fig, path)


def fig_gap_vs(
    xs: dict[str, list[float]],
    gaps: dict[str, list[tuple[float, float]]],
    xlabel: str,
    title: str,
    path: Path,
    logx: bool = False,
) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    _gap_panel(ax, xs, gaps, xlabel, title)
    if logx:
        ax.set_xscale("log")
    _save(fig, path)


def _gap_panel(
    ax: Any, xs: dict[str, list[float]], gaps: dict[str, list[tuple[float, float]]], xlabel: str, title: str
) -> None:
    """One axes of gap (pp, ± std) against x, a line per task, with the zero line."""
    for task in xs:
        m = [g[0] * 100 for g in gaps[task]]
        sd = [g[1] * 100 for g in gaps[task]]
        ax.errorbar(xs[task], m, yerr=sd, marker="o", capsize=3, label=task)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("gap: pre-trained − scratch accuracy (pp)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def fig_e3(e3: dict[str, Any], tasks: list[str], path: Path) -> None:
    """E3: the gap against token overlap, one panel per metric: the coverage metric and the
    frequency-weighted overlap (each titled with its Pearson r over the points, where computed)."""
    plt = _plt()
    metrics = [e3["metric_for_plot"]] + [
        m for m in ("weighted_overlap",) if all(r.get(m) is not None for r in e3["rows"])
    ]
    corr = (e3.get("metric_correlations") or {}).get("metrics") or {}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.0), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        pts = {t: sorted((r[m], r["gap_mean"]) for r in e3["rows"] if r["task"] == t) for t in tasks}
        r = (corr.get(m) or {}).get("r")  # None: too few points, or nothing varies
        _gap_panel(
            ax,
            {t: [x for x, _ in p] for t, p in pts.items()},
            {t: [(g, 0.0) for _, g in p] for t, p in pts.items()},
            f"token overlap: {m} with the task's training tokens",
            f"{m}" + ("" if r is None else f" (Pearson r = {r:+.2f})"),
        )
    fig.suptitle("E3: gap vs token overlap (each point: one corpus)", fontsize=10)
    _save(fig, path)


def fig_latency(rows: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    sel = [r for r in rows if r["batch"] == 1 and r["precision"] == "fp32"]
    labels = [
        f"{r['model'].replace('committee of BERT-1', 'committee')}\n{r['mode']} k={r['k']}" for r in sel
    ]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(sel)), 4.2))
    ax.bar(
        range(len(sel)),
        [r["ms_per_input"] for r in sel],
        color=["tab:red" if "BERT-6" in r["model"] else "tab:blue" for r in sel],
    )
    ax.set_xticks(range(len(sel)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("latency (ms per input, batch 1, fp32)")
    ax.set_title("E4: inference latency on this machine", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def e0_title(rows: list[dict[str, Any]]) -> str:
    """E0's figure title: what each point is (one fine-tuning seed, or the mean ± std over several)."""
    seeds = max((r.get("seeds") or 1 for r in rows), default=1)
    tuned = "fine-tuning seed 0" if seeds == 1 else f"mean ± std over {seeds} fine-tuning seeds"
    return f"E0: what pre-training buys against how long it ran\n(one pre-training run; {tuned})"


def fig_e0(rows: list[dict[str, Any]], path: Path) -> None:
    """E0: gap (pre-trained snapshot − scratch) against training tokens seen, one line per task and head;
    held-out MLM loss minus the unigram baseline on a second axis."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    for key in sorted({(r["task"], r["pooling"]) for r in rows}):
        pts = sorted(
            (r["tokens"], r["gap_pp"], mean_std(r.get("gap_pp_per_seed") or [0.0])[1])
            for r in rows
            if (r["task"], r["pooling"]) == key
        )
        ax.errorbar(
            [t / 1e6 for t, _, _ in pts],
            [g for _, g, _ in pts],
            yerr=[e for _, _, e in pts],
            marker="o",
            capsize=3,
            label=f"{key[0]}, {key[1]} head",
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("pre-training tokens seen (millions; 0 = the initial model)")
    ax.set_ylabel("gap: pre-trained − scratch accuracy (pp)")
    ax.grid(alpha=0.3)
    mlm = sorted(
        {(r["tokens"], r["mlm_loss"] - r["unigram_loss"]) for r in rows if r["mlm_loss"] is not None}
    )
    ax2 = ax.twinx()
    ax2.plot(
        [t / 1e6 for t, _ in mlm], [d for _, d in mlm], color="black", ls="--", lw=1, label="MLM − unigram"
    )
    ax2.set_ylabel("held-out MLM loss − unigram baseline (nats, dashed)")
    lines = ax.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="best")
    ax.set_title(e0_title(rows), fontsize=9)
    _save(fig, path)


def write_figures(
    results: dict[str, Any], curves: dict[str, Any], latency: dict[str, Any], tasks: list[str], figs: Path
) -> None:
    """Every figure of the report into `figs` (E2/E3 plots only when the preset ran them)."""
    from tinylm.committee import plot_curve

    fig_epochs(curves, figs / "e1_accuracy_per_epoch.png")
    if results.get("E0"):
        fig_e0(results["E0"], figs / "e0_gap_vs_tokens.png")
    e2 = results["E2"]
    if "pooled_test" in e2:
        gaps = {
            t: list(zip(e2["tasks"][t]["gap_mean"], e2["tasks"][t]["gap_std"], strict=True)) for t in tasks
        }
        fig_gap_vs(
            {t: e2["sizes"] for t in tasks},
            gaps,
            "pre-training subset (articles, log scale)",
            "E2: gap vs corpus size (± std over pre-training replicates × fine-tuning seeds)",
            figs / "e2_gap_vs_size.png",
            logx=True,
        )
        fig_e3(results["E3"], tasks, figs / "e3_gap_vs_overlap.png")
    for t in tasks:
        plot_curve(results["E4"]["tasks"][t], figs / f"e4_committee_{t}.png")
    fig_latency(latency["rows"], figs / "e4_latency.png")


def fig_e5(e5: dict[str, Any], path: Path) -> None:
    """E5: the gap over scratch of every corpus at every budget fraction, one group of bars per task."""
    plt = _plt()
    tasks = list(e5["tasks"])
    cells = [(c, f) for c in e5["corpora"] for f in e5["fractions"]]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(tasks) * len(cells) / 3), 4.0))
    width = 0.8 / len(cells)
    for i, (corpus, f) in enumerate(cells):
        rows = [
            next(c for c in e5["tasks"][t]["cells"] if (c["corpus"], c["fraction"]) == (corpus, f))
            for t in tasks
        ]
        xs = np.arange(len(tasks)) + (i - (len(cells) - 1) / 2) * width
        hatch = "" if f == max(e5["fractions"]) else "//"
        gaps, sds = [r["gap_pp"] for r in rows], [r["gap_std_pp"] for r in rows]
        color = f"C{e5['corpora'].index(corpus)}"
        ax.bar(xs, gaps, width, yerr=sds, capsize=2, label=f"{corpus} ×{f:g}", hatch=hatch, color=color)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(np.arange(len(tasks)), [f"fine-tuned on {t}" for t in tasks])
    ax.set_ylabel("gap over scratch (pp)")
    ax.set_title("E5: task-selected vs generic pre-training corpora (× tokens of the budget)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


def fig_e6_pareto(task: dict[str, Any], ms: dict[str, dict[str, float]], batch: str, path: Path) -> None:
    """E6: accuracy against latency per input of every committee, with the deep model."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in sorted({pt["committee"] for pt in task["points"]}):
        pts = sorted((pt for pt in task["points"] if pt["committee"] == name), key=lambda pt: pt["k"])
        xs = [ms[f"{name}:{pt['k']}"][batch] for pt in pts]
        ax.plot(xs, [100 * pt["accuracy"] for pt in pts], "o-", label=name)
        for x, pt in zip(xs, pts, strict=True):
            ax.annotate(str(pt["k"]), (x, 100 * pt["accuracy"]), xytext=(3, 3), textcoords="offset points")
    ax.plot(
        [ms["deep"][batch]], [100 * task["reference"]["accuracy"]], "k*", markersize=12, label="deep model"
    )
    ax.set_xscale("log")
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    # labelled ticks at 1, 2, 3, 5 × each decade: a range within one decade still gets numbers
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"ms per input (batch {batch}, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"E6 on {task['task']}: committees of k members (labels: k)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def write_future_figures(results: dict[str, Any], timings: dict[str, Any], figs: Path) -> None:
    """E5's bars and E6's accuracy–latency figure per task (when the preset ran them)."""
    if "E5" in results:
        fig_e5(results["E5"], figs / "e5_gaps.png")
    for task, t in results.get("E6", {}).get("tasks", {}).items():
        ms = timings.get("future_latency", {}).get(f"ensemble:{task}", {}).get("ms", {})
        if ms:
            fig_e6_pareto(t, ms, min(ms["deep"], key=int), figs / f"e6_pareto_{task}.png")
