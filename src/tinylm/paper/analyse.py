"""E1–E4 from the jobs' results.json files alone: tables, tests and a rule-based verdict per claim.

Everything here depends only on the grid's seeds (identical when a grid is resumed or rerun); nothing
is trained, tokenized or timed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.paper.grid import Job, by_role
from tinylm.paper.presets import Preset
from tinylm.paper.stats import mean_std, paired_test, pearson

ALPHA = 0.05


class Results:
    """The results.json of every job of a grid, looked up by job or by role."""

    def __init__(self, out: Path, jobs: list[Job]):
        self.jobs = jobs
        self.by_id: dict[str, dict[str, Any]] = {
            j.id: json.loads((out / "runs" / j.id / "results.json").read_text()) for j in jobs
        }

    def of(self, job: Job) -> dict[str, Any]:
        return self.by_id[job.id]

    def accuracy(self, job: Job, which: str = "final_epoch") -> float:
        return float(self.by_id[job.id][which]["accuracy"])

    def finetunes(self, task: str, **role: Any) -> list[Job]:
        return by_role(self.jobs, "finetune", task=task, **role)

    def one(self, kind: str, **role: Any) -> Job:
        return by_role(self.jobs, kind, **role)[0]


def verdict_from_test(test: dict[str, Any], all_positive: bool) -> str:
    """holds: mean > 0, one-sided p < α and every per-task mean > 0; does not hold: mean < 0 with two-sided
    p < α; otherwise inconclusive."""
    if test.get("p_greater") is None:
        return "inconclusive"
    if test["mean"] > 0 and test["p_greater"] < ALPHA and all_positive:
        return "holds"
    if test["mean"] < 0 and test["p_two_sided"] < ALPHA:
        return "does not hold"
    return "inconclusive"


def analyse_e1(r: Results, p: Preset, tasks: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """C1: pre-trained (main corpus) vs scratch, paired over seeds; also the per-epoch curves for the
    figure."""
    e1: dict[str, Any] = {"corpus_size": p.main_corpus, "tasks": {}}
    all_gaps: list[float] = []
    curves: dict[str, Any] = {}
    for task in tasks:
        pre, scr = r.finetunes(task, init="pretrained", size=p.main_corpus), r.finetunes(task, init="scratch")
        gaps = [r.accuracy(a) - r.accuracy(b) for a, b in zip(pre, scr, strict=True)]
        all_gaps += gaps
        e1["tasks"][task] = {
            "pretrained": [r.accuracy(j) for j in pre],
            "scratch": [r.accuracy(j) for j in scr],
            "pretrained_best_epoch": [r.accuracy(j, "best_epoch") for j in pre],
            "scratch_best_epoch": [r.accuracy(j, "best_epoch") for j in scr],
            "gaps": gaps,
            "test": paired_test(gaps),
        }
        curves[task] = {
            label: [[e["accuracy"] for e in r.of(j)["per_epoch"]] for j in js]
            for label, js in (("pre-trained", pre), ("scratch", scr))
        }
    e1["pooled_test"] = paired_test(all_gaps)
    e1["verdict"] = verdict_from_test(
        e1["pooled_test"], all(np.mean(t["gaps"]) > 0 for t in e1["tasks"].values())
    )
    return e1, curves


def analyse_e2(r: Results, p: Preset, tasks: list[str], seeds: int) -> dict[str, Any]:
    """C2: the per-(task, seed) slope of the gap against log10(articles) over the nested sizes."""
    sizes = sorted(p.corpus_sizes)
    e2: dict[str, Any] = {"sizes": sizes, "tasks": {}}
    slopes_all: list[float] = []
    for task in tasks:
        scr = {j.role["seed"]: r.accuracy(j) for j in r.finetunes(task, init="scratch")}
        per_size = {
            n: {
                j.role["seed"]: r.accuracy(j) - scr[j.role["seed"]]
                for j in r.finetunes(task, init="pretrained", size=n)
            }
            for n in sizes
        }
        slopes = [
            float(np.polyfit(np.log10(sizes), np.array([per_size[n][s] for n in sizes]), 1)[0])
            for s in range(seeds)
        ]
        slopes_all += slopes
        stats = [mean_std(list(per_size[n].values())) for n in sizes]
        e2["tasks"][task] = {
            "gap_mean": [m for m, _ in stats],
            "gap_std": [sd for _, sd in stats],
            "slope_per_decade": slopes,
            "test": paired_test(slopes),
        }
    e2["pooled_test"] = paired_test(slopes_all)
    e2["verdict"] = verdict_from_test(
        e2["pooled_test"], all(np.mean(t["slope_per_decade"]) > 0 for t in e2["tasks"].values())
    )
    e2["pretraining_mlm"] = {}
    for j in r.jobs:
        if j.kind == "pretrain" and j.role.get("deep") and "selection" not in j.role:
            ev = r.of(j).get("final_eval", {})
            e2["pretraining_mlm"][str(j.role["size"])] = {
                "mlm_loss": ev.get("mlm_loss"),
                "mlm_accuracy": ev.get("mlm_accuracy"),
            }
    return e2


def _controlled(r: Results, p: Preset) -> dict[str, Any]:
    ctl = p.controlled
    hi = {j.role["seed"]: r.accuracy(j) for j in r.finetunes(ctl.task, init="controlled", selection="high")}
    lo = {j.role["seed"]: r.accuracy(j) for j in r.finetunes(ctl.task, init="controlled", selection="low")}
    diffs = [hi[s] - lo[s] for s in sorted(hi)]
    selection = {}
    for d in ("high", "low"):
        sel = r.of(r.one("pretrain", selection=d))["data"]["selection"]
        selection[d] = {
            k: sel[k] for k in ("rule", "mean_score", "pool_mean_score", "achieved_overlap_train")
        }
    return {
        "task": ctl.task,
        "num_articles": ctl.num_articles,
        "pool": ctl.pool,
        "high": [hi[s] for s in sorted(hi)],
        "low": [lo[s] for s in sorted(lo)],
        "diffs": diffs,
        "test": paired_test(diffs),
        "selection": selection,
    }


def analyse_e3(r: Results, p: Preset, tasks: list[str], e2: dict[str, Any]) -> dict[str, Any]:
    """C3: overlap rows with the E2 gap of their (task, size), and the controlled high- vs low-overlap
    test."""
    sizes = sorted(p.corpus_sizes)
    rows = r.of(r.one("overlap"))["rows"]
    metric = "coverage@5"
    for row in rows:
        row["gap_mean"] = e2["tasks"][row["task"]]["gap_mean"][sizes.index(row["articles"])]
    corr = pearson([row[metric] for row in rows], [row["gap_mean"] for row in rows])
    e3: dict[str, Any] = {"metric_for_plot": metric, "rows": rows, "pearson_gap_vs_overlap": corr}
    if p.controlled.task in tasks:
        e3["controlled"] = _controlled(r, p)
        e3["verdict"] = verdict_from_test(e3["controlled"]["test"], e3["controlled"]["test"]["mean"] > 0)
    else:
        e3["verdict"] = "inconclusive"
        e3["controlled"] = None
    return e3


def analyse_e4(r: Results, p: Preset, tasks: list[str]) -> dict[str, Any]:
    """C4: the committee of all members vs the deep model; does not hold if on any task the committee is
    below the deep model by more than 2 binomial standard errors of the difference."""
    e4: dict[str, Any] = {"members": p.members, "tasks": {}}
    worse = []
    for task in tasks:
        res = r.of(r.one("committee", task=task))
        n, c, ref = res["num_test"], res["committee_accuracy"], res["reference"]["accuracy"]
        se = math.sqrt(c * (1 - c) / n + ref * (1 - ref) / n)
        worse.append(c < ref - 2 * se)
        res |= {
            "difference": c - ref,
            "difference_se": se,
            "member_architectures": [p.member_model(i) for i in range(p.members)],
        }
        e4["tasks"][task] = res
    e4["verdict"] = "does not hold" if any(worse) else "holds"
    return e4


def analyse(
    out: Path, p: Preset, jobs: list[Job], tasks: list[str], seeds: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """results.json's content and the E1 per-epoch curves (for the figure)."""
    r = Results(out, jobs)
    e1, curves = analyse_e1(r, p, tasks)
    e2 = analyse_e2(r, p, tasks, seeds)
    e3 = analyse_e3(r, p, tasks, e2)
    e4 = analyse_e4(r, p, tasks)
    results = {
        "accuracy_used": "final epoch (best epoch reported alongside)",
        "E1": e1,
        "E2": e2,
        "E3": e3,
        "E4": e4,
        "preset": p.name,
        "tasks": tasks,
        "seeds": seeds,
        "verdicts": {"C1": e1["verdict"], "C2": e2["verdict"], "C3": e3["verdict"], "C4": e4["verdict"]},
    }
    return results, curves


def latency_rows(out: Path, jobs: list[Job]) -> dict[str, Any]:
    """The latency job's table (wall-clock: reported in timings.json, never in results.json)."""
    return Results(out, [j for j in jobs if j.kind == "latency"]).of(
        next(j for j in jobs if j.kind == "latency")
    )
