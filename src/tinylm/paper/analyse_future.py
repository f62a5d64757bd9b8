"""E5, E6 and the distillation from the jobs' results.json files alone (the paper's future work).

Like `analyse`, nothing here is trained or timed: E6's latency and the Pareto front built on it come from
timings.json (`e6_latency`, `pareto_front`), next to the accuracies computed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinylm.paper.analyse import Results, metric_correlations, paired_comparison, training_cost
from tinylm.paper.jobs import Job, by_role
from tinylm.paper.presets import Preset
from tinylm.paper.reseed import nats_below_unigram
from tinylm.paper.stats import mean_std, paired_test

#: a committee curve has saturated at the smallest k whose accuracy is within this many points of its best
SATURATION_PP = 1.0


def _gate_gap(r: Results, job: Job) -> float | None:
    """Nats between the unigram baseline and the held-out MLM loss of a pre-training (None: not measured)."""
    return nats_below_unigram(r.of(job))


def _e5_cell(
    r: Results, p: Preset, task: str, corpus: str, f: float, scratch: dict[int, float]
) -> dict[str, Any]:
    """One E5 cell: the gaps over scratch per (pre-training replicate, seed) unit, and its models."""
    jobs = r.finetunes(task, init="e5", corpus=corpus, fraction=f, pooling=p.poolings[0])
    gaps = {(j.role["pseed"], j.role["seed"]): 100 * (r.accuracy(j) - scratch[j.role["seed"]]) for j in jobs}
    pre = by_role(r.jobs, "pretrain", e5=corpus, fraction=f)
    mean, sd = mean_std(list(gaps.values()))
    return {
        "task": task,
        "corpus": corpus,
        "fraction": f,
        "gap_pp": mean,
        "gap_std_pp": sd,
        "n": len(gaps),
        "units": {f"{a}/{b}": g for (a, b), g in sorted(gaps.items())},
        "pretrain_tokens": [r.of(j)["tokens"] for j in pre],
        "nats_below_unigram": [_gate_gap(r, j) for j in pre],
    }


def _compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Cell a − cell b over their shared (replicate, seed) units: a paired t-test (two-sided p)."""
    shared = sorted(set(a["units"]) & set(b["units"]))
    test = paired_test([a["units"][u] - b["units"][u] for u in shared])
    return {
        "a": (a["corpus"], a["fraction"]),
        "b": (b["corpus"], b["fraction"]),
        "diff_pp": test["mean"],
        "p": test["p_two_sided"],
        "n": test["n"],
    }


def analyse_e5(r: Results, p: Preset, tasks: list[str]) -> dict[str, Any] | None:
    """E5: per task, the gap over a scratch E5 model of every corpus (generic, selected for each E5 task) at
    every budget fraction; the task's own corpus at each fraction against the generic one at full budget;
    the selections' overlap with their task."""
    if p.e5 is None:
        return None
    e5 = p.e5
    e5_tasks = [t for t in e5.tasks if t in tasks]
    corpora, full = ["generic", *e5_tasks], max(e5.fractions)
    out: dict[str, Any] = {"tasks": {}, "fractions": e5.fractions, "corpora": corpora, "model": e5.model}
    out["selections"] = {t: r.of(r.one("select", e5_select=t))["manifest"] for t in e5_tasks}
    for task in e5_tasks:
        scr = {j.role["seed"]: r.accuracy(j) for j in r.finetunes(task, init="scratch-e5")}
        cells = [_e5_cell(r, p, task, c, f, scr) for c in corpora for f in e5.fractions]
        cell = {(c["corpus"], c["fraction"]): c for c in cells}
        generic = cell[("generic", full)]
        out["tasks"][task] = {
            "scratch_accuracy": float(np.mean(list(scr.values()))),
            "cells": cells,
            "own_vs_generic_full": [_compare(cell[(task, f)], generic) for f in e5.fractions],
            "cross_vs_generic": [
                _compare(cell[(c, f)], cell[("generic", f)])
                for c in e5_tasks
                if c != task
                for f in e5.fractions
            ],
        }
    out["answer"] = e5_answer(out)
    out["metric_correlations"] = metric_correlations(_e5_points(r, p, out))
    return out


def _e5_points(r: Results, p: Preset, e5: dict[str, Any]) -> list[dict[str, Any]]:
    """E5's (task, corpus) cells at the full budget as overlap points: the gap over scratch and the corpus's
    overlap with the task's training samples (the generic corpus's from E3's overlap job)."""
    full = max(e5["fractions"])
    rows = r.of(r.one("overlap"))["rows"]
    generic = {
        row["task"]: row
        for row in rows
        if row["corpus"] == f"wiki:{p.main_corpus}" and row["split"] == "train"
    }
    points = []
    for task, t in e5["tasks"].items():
        for c in [c for c in t["cells"] if c["fraction"] == full]:
            if c["corpus"] == "generic":
                overlap = generic[task]
            else:
                overlap = r.of(r.one("select", e5_select=c["corpus"]))["overlap"][task]
            points.append(overlap | {"corpus": c["corpus"], "task": task, "gap_mean": c["gap_pp"] / 100})
    return points


def e5_answer(e5: dict[str, Any]) -> str:
    """The report's one sentence: does the task's own small corpus beat the generic one, and at what
    fraction of the compute (the smallest fraction whose gap is at least the generic full-budget gap)?"""
    parts = []
    for task, t in e5["tasks"].items():
        wins = [c for c in t["own_vs_generic_full"] if c["diff_pp"] >= 0]
        if wins:
            f = min(c["a"][1] for c in wins)
            c = next(c for c in wins if c["a"][1] == f)
            p = "n/a" if c["p"] is None else f"{c['p']:.2g}"
            parts.append(
                f"on {task}, yes at {f:g}× the tokens ({c['diff_pp']:+.1f} pp, p = {p}, n = {c['n']})"
            )
        else:
            best = max(t["own_vs_generic_full"], key=lambda c: c["diff_pp"])
            parts.append(f"on {task}, no (best {best['diff_pp']:+.1f} pp at {best['a'][1]:g}× the tokens)")
    return (
        "Does a small task-specific corpus match or beat the larger generic one at the generic corpus's full "
        "budget, and at what fraction of its tokens? " + "; ".join(parts) + "."
    )


def saturation(points: list[dict[str, Any]], committee: str) -> int | None:
    """The smallest k of a committee curve within SATURATION_PP of the curve's best accuracy."""
    curve = sorted((pt["k"], pt["random_order_mean"]) for pt in points if pt["committee"] == committee)
    if not curve:
        return None
    best = max(acc for _, acc in curve)
    k: int = next(k for k, acc in curve if 100 * (best - acc) <= SATURATION_PP)
    return k


def analyse_e6(r: Results, p: Preset, tasks: list[str]) -> dict[str, Any] | None:
    """E6 per task: every committee point with its accuracy, paired comparison with the deep model and
    training cost; where each curve saturates; the architectures of the pool."""
    if p.e6 is None:
        return None
    out: dict[str, Any] = {
        "architectures": {f"arch{a}": m for a, m in enumerate(p.shallow)},
        "per_arch": p.e6.per_arch,
        "saturation_pp": SATURATION_PP,
        "tasks": {},
    }
    for task in [t for t in p.e6.tasks if t in tasks]:
        res = {k: v for k, v in r.of(r.one("ensemble", task=task)).items() if k != "latency"}
        for pt in res["points"]:
            pt["paired"] = paired_comparison(pt["paired_counts"])
            pt["cost"] = training_cost(r, pt["runs"], p.max_length)
        res["reference"]["cost"] = training_cost(r, [res["reference"]["run"]], p.max_length)
        res["saturates_at"] = {
            c: saturation(res["points"], c) for c in {pt["committee"] for pt in res["points"]}
        }
        out["tasks"][task] = res
    return out


def analyse_distill(r: Results, p: Preset, tasks: list[str]) -> dict[str, Any] | None:
    """Per distillation task: accuracies of the students, committee, best and first member and deep model
    on the same items, each student's paired comparison with each model, and each one's training cost."""
    if p.distill is None:
        return None
    out: dict[str, Any] = {"temperature": p.distill.temperature, "alpha": p.distill.alpha, "tasks": {}}
    for task in [t for t in p.distill.tasks if t in tasks]:
        res = {k: v for k, v in r.of(r.one("distill", task=task)).items() if k != "latency"}
        res["paired"] = {
            a: {k: paired_comparison(c) for k, c in counts.items()}
            for a, counts in res["paired_counts"].items()
        }
        runs = res["runs"]
        res["cost"] = {
            name: training_cost(r, [run], p.max_length) for name, run in runs["students"].items()
        } | {
            "committee": training_cost(r, runs["members"], p.max_length),
            "member0": training_cost(r, runs["members"][:1], p.max_length),
            "deep": training_cost(r, [runs["deep"]], p.max_length),
        }
        out["tasks"][task] = res
    return out


def analyse_future(r: Results, p: Preset, tasks: list[str]) -> dict[str, Any]:
    """The results.json sections E5, E6 and distill (absent when the preset does not run them)."""
    found = {
        "E5": analyse_e5(r, p, tasks),
        "E6": analyse_e6(r, p, tasks),
        "distill": analyse_distill(r, p, tasks),
    }
    return {k: v for k, v in found.items() if v is not None}


def future_latency(out: Path, jobs: list[Job]) -> dict[str, Any]:
    """Per task, the ensemble and distill jobs' timings (wall-clock: timings.json only)."""
    timed = [j for j in jobs if j.kind in ("ensemble", "distill")]
    r = Results(out, timed)
    return {f"{j.kind}:{j.role['task']}": r.of(j)["latency"] for j in timed}


def pareto_front(
    points: list[dict[str, Any]], ms: dict[str, dict[str, float]], batch: str
) -> list[dict[str, Any]]:
    """The committees no other committee beats on both accuracy and latency per input at `batch`, fastest
    first: the best shallow configuration for each latency budget."""
    rows = sorted(
        (
            {
                "committee": pt["committee"],
                "k": pt["k"],
                "accuracy": pt["accuracy"],
                "ms": ms[f"{pt['committee']}:{pt['k']}"][batch],
            }
            for pt in points
        ),
        key=lambda x: (x["ms"], -x["accuracy"]),
    )
    front: list[dict[str, Any]] = []
    for row in rows:
        if not front or row["accuracy"] > front[-1]["accuracy"]:
            front.append(row)
    return front
