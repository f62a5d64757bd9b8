"""`tinylm reproduce`: a preset's grid run end to end (resumable), then the report.

OUT/plan.json (the grid), OUT/runs/ID/ (one directory per job), OUT/results.json (seed-determined
numbers only: identical when the grid is resumed or rerun), OUT/timings.json (wall clock, latency),
OUT/report.md and OUT/figures/*.png.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinylm.errors import ConfigError
from tinylm.fileio import DirLock, read_json_object, write_json, write_text
from tinylm.paper.analyse import Results, analyse, committee_latency, latency_rows
from tinylm.paper.analyse_future import analyse_future, future_latency
from tinylm.paper.context import Context
from tinylm.paper.executor import run_local, run_ray
from tinylm.paper.figures import write_figures, write_future_figures
from tinylm.paper.grid import build_grid, validate_jobs
from tinylm.paper.invocations import InvocationClock
from tinylm.paper.jobs import Job
from tinylm.paper.presets import Preset, load_preset
from tinylm.paper.render import render
from tinylm.paper.render_future import future_sections
from tinylm.paper.reuse import reusable, reuse_runs, reused_runs, source_runs_dirs
from tinylm.registry import PAPER_CORPUS_SEED

Log = Callable[[str], None]


def prepare_corpora(p: Preset, data_dir: str | None, cache_dir: str, log: Log = print) -> None:
    """Tokenize the largest nested subset and the selection pool once, before workers start."""
    from tinylm.data.corpus import load_wiki_corpus
    from tinylm.data.sources import resolve_source
    from tinylm.data.tokenize import load_tokenizer

    source = resolve_source(data_dir)
    n = max(max(p.corpus_sizes), p.controlled.pool if p.controlled else 0)
    c = load_wiki_corpus(
        source, load_tokenizer(source), n, PAPER_CORPUS_SEED, p.max_length, p.eval_articles, cache_dir
    )
    log(f"corpus cache: {n:,} articles ({'reused' if c.description['cache_hit'] else 'built'})")


def dry_run_grid(p: Preset, jobs: list[Job]) -> tuple[Preset, list[Job]]:
    """One pre-training and one fine-tuning job of the grid (run for 2 steps each) and a preset that
    tokenizes only what they need."""
    pre = next(j for j in jobs if j.kind == "pretrain")
    ft = next(j for j in jobs if j.kind == "finetune" and j.deps == [pre.id])
    ctl = dataclasses.replace(p.controlled, pool=0) if p.controlled else None
    small = dataclasses.replace(p, corpus_sizes=[min(p.corpus_sizes)], controlled=ctl)
    return small, [pre, ft]


def machine() -> dict[str, Any]:
    import torch

    from tinylm.machine import cpu_name

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


#: summary.json's C2 records: (design, results key, claim)
C2_RECORDS = (("equal_tokens", "E2", "C2"), ("equal_epochs", "E2-epochs", "C2-epochs"))


def summary(p: Preset, results: dict[str, Any], wall_seconds: float) -> dict[str, Any]:
    """The machine-readable summary: preset, wall time, the gate, each claim's decision."""
    keys = ("run", "tokens", "mlm_loss", "unigram_loss", "passed")
    return {
        "preset": p.name,
        "wall_minutes": round(wall_seconds / 60, 1),
        "gate": {
            "threshold_nats": results["gate"]["threshold_nats"],
            "models": [
                {k: m[k] for k in keys} | ({"set_aside": m["set_aside"]} if m.get("set_aside") else {})
                for m in results["gate"]["models"]
            ],
        },
        "verdicts": {
            c: {k: d.get(k) for k in ("verdict", "test", "p", "effect_pp")}
            for c, d in results["decisions"].items()
        },
        "e0": results.get("E0", []),
        "e3_metric_correlations": results.get("E3", {}).get("metric_correlations"),
        "c2": {
            design: _c2_record(results[key], results["decisions"].get(claim))
            for design, key, claim in C2_RECORDS
            if key in results
        },
        **_future_summary(results),
    }


def _c2_record(e2: dict[str, Any], decision: dict[str, Any] | None) -> dict[str, Any]:
    """One C2 design: its decision (after the adequacy gate), the gap per task and size, and each size's
    pre-training (epochs, held-out MLM and unigram loss, replicates)."""
    return {
        "decision": decision,
        "sizes": e2.get("sizes"),
        "gap_pp": {t: [100 * g for g in d["gap_mean"]] for t, d in e2.get("tasks", {}).items()},
        "pretraining": e2.get("pretraining_mlm", {}),
    }


def _future_summary(results: dict[str, Any]) -> dict[str, Any]:
    """summary.json's e5, e6 and distill records (present when the preset ran them)."""
    out: dict[str, Any] = {}
    if "E5" in results:
        e5 = results["E5"]
        out["e5"] = {
            "answer": e5["answer"],
            "cells": [
                c | {"scratch_accuracy": t["scratch_accuracy"]}
                for t in e5["tasks"].values()
                for c in t["cells"]
            ],
            "metric_correlations": e5["metric_correlations"],
            "comparisons": [
                c for t in e5["tasks"].values() for c in t["own_vs_generic_full"] + t["cross_vs_generic"]
            ],
        }
    if "E6" in results:
        out["e6"] = {
            task: {
                "reference_accuracy": t["reference"]["accuracy"],
                "saturates_at": t["saturates_at"],
                "points": [
                    {k: pt[k] for k in ("committee", "k", "accuracy", "paired")} for pt in t["points"]
                ],
            }
            for task, t in results["E6"]["tasks"].items()
        }
    if "distill" in results:
        out["distill"] = {
            task: {
                "accuracy": t["accuracy"],
                "paired": t["paired"],
                "agreement_with_committee": t["agreement_with_committee"],
            }
            for task, t in results["distill"]["tasks"].items()
        }
    return out


def train_seconds(r: Results, reused: dict[str, str]) -> dict[str, float]:
    """Training seconds summed over the grid's pre-training and fine-tuning runs, evaluations excluded
    (`pretrain`, `finetune`: lane time, which interruptions and idle gaps between invocations do not
    inflate, pauses and other work on the machine do), and the runs' CPU time (`pretrain_cpu`,
    `finetune_cpu`: evaluations included, neither pauses nor waiting for a core; recorded by runs made
    since it existed, `*_cpu_runs` of them). Runs copied from other grids (`reused`) trained there: left
    out."""
    out = dict.fromkeys(("pretrain", "finetune", "pretrain_cpu", "finetune_cpu"), 0.0)
    runs = {"pretrain_cpu_runs": 0, "finetune_cpu_runs": 0}
    for j in r.jobs:
        if j.kind in ("pretrain", "finetune") and j.id not in reused:
            res = r.of(j)
            t = res.get("training", res)  # a fine-tuning's trainer numbers sit under "training"
            out[j.kind] += float(t.get("train_seconds") or 0) - float(t.get("eval_seconds") or 0)
            if "cpu_seconds" in t:
                out[f"{j.kind}_cpu"] += float(t["cpu_seconds"])
                runs[f"{j.kind}_cpu_runs"] += 1
    return {k: round(v, 1) for k, v in out.items()} | runs


def merged_run_seconds(out: Path, seconds: dict[str, float]) -> dict[str, float]:
    """Each job's seconds in the invocation that ran it: a job this invocation found finished (0 s here)
    keeps what an earlier invocation's timings.json recorded for it."""
    path = out / "timings.json"
    before = read_json_object(path, "a grid's timings").get("run_seconds", {}) if path.exists() else {}
    return {k: v if v > 0 else float(before.get(k, v)) for k, v in seconds.items()}


def write_report(
    out: Path,
    p: Preset,
    jobs: list[Job],
    tasks: list[str],
    seeds: int,
    wall_seconds: float,
    run_seconds: dict[str, float],
    log: Log = print,
) -> None:
    """Analyse the finished grid and write results.json, timings.json, figures/ and report.md."""
    log("analysing runs ...")
    results, curves = analyse(out, p, jobs, tasks, seeds)
    runs = Results(out, jobs)
    results |= analyse_future(runs, p, tasks)
    reused = reused_runs(Context(out, None), jobs)
    timings: dict[str, Any] = {
        "wall_seconds": round(wall_seconds, 1),
        "run_seconds": merged_run_seconds(out, run_seconds),
        "train_seconds": train_seconds(runs, reused),
        "reused_runs": reused,
        "latency": latency_rows(out, jobs),
        "committee_latency": committee_latency(out, jobs),
        "future_latency": future_latency(out, jobs),
        "machine": machine(),
    }
    write_figures(results, curves, timings["latency"], tasks, out / "figures")
    write_future_figures(results, timings, out / "figures")
    write_json(out / "timings.json", timings)
    write_json(out / "results.json", results)
    write_json(out / "summary.json", summary(p, results, wall_seconds))
    write_text(
        out / "report.md",
        render(
            p, results, timings, dict(Counter(j.kind for j in jobs)), future_sections(p, results, timings)
        ),
    )
    log(f"wrote {out / 'report.md'}, {out / 'results.json'}, {out / 'figures'}/")


def reproduce(
    preset: str,
    out: str,
    seeds: int | None,
    tasks: list[str] | None,
    n_jobs: int,
    data_dir: str | None,
    dry_run: bool = False,
    log: Log = print,
    estimate_only: bool = False,
    gpus: list[int] | None = None,
    gpu_tflops: float = 100.0,
    gpu_launch_us: float = 10.0,
    executor: str = "local",
    ray_address: str | None = None,
    reuse_from: list[str] | None = None,
) -> Path:
    """Run the grid of a preset and write the report; rerun with the same OUT to resume. The grid's cost
    estimate is printed first (`estimate_only`: printed, nothing run). `reuse_from`: other grids' OUT
    directories whose finished pre-trainings with the same settings are copied in first (`paper.reuse`)."""
    p = load_preset(preset)
    tasks = tasks or p.tasks
    seeds = p.seeds if seeds is None else seeds
    problems = [
        f"tasks: {t} has no per-label sample sizes in the preset" for t in tasks if t not in p.samples
    ]
    problems += [f"seeds: must be at least 1, got {seeds}"] if seeds < 1 else []
    problems += [f"jobs: must be at least 1, got {n_jobs}"] if n_jobs < 1 else []
    problems += (
        [f"executor: expected local or ray, got {executor!r}"] if executor not in ("local", "ray") else []
    )
    sources, bad_sources = source_runs_dirs(reuse_from or [])
    problems += bad_sources
    if problems:
        raise ConfigError(problems, "reproduce")
    jobs = build_grid(p, tasks, seeds)
    validate_jobs(jobs)
    if dry_run:  # the paper preset on a CPU: one pre-training and one fine-tuning run, two steps each
        p, jobs = dry_run_grid(p, jobs)
    outp = Path(out)
    ctx = Context(outp, data_dir, dry_run=dry_run)
    if estimate_only:
        found = set(reusable(jobs, ctx, sources, log)) if sources else set()
        _print_estimate(p, jobs, data_dir, tasks, gpus, (gpu_tflops, gpu_launch_us), log, ctx, found)
        return outp
    # the lock first: a second reproduce on the same OUT stops here, changing nothing and timing nothing
    with DirLock(outp, "reproduce"):
        if sources:
            reuse_runs(jobs, ctx, sources, log)
        expected = None
        if not dry_run:
            expected = _print_estimate(p, jobs, data_dir, tasks, gpus, (gpu_tflops, gpu_launch_us), log, ctx)
        return _run_grid(
            outp, p, jobs, tasks, seeds, n_jobs, data_dir, dry_run, log, executor, ray_address, expected
        )


def _print_estimate(
    p: Preset,
    jobs: list[Job],
    data_dir: str | None,
    tasks: list[str],
    gpus: list[int] | None,
    gpu: tuple[float, float],
    log: Log,
    ctx: Context,
    to_copy: set[str] | frozenset[str] = frozenset(),
) -> dict[str, float]:
    """Prints the estimate (`gpu`: the assumed sustained TFLOP/s and µs per operator launch of one GPU)
    and what is left of it (jobs finished in OUT, or `to_copy` from other grids); returns the estimated
    seconds of each training job on this machine (the grid's ETA starts from them)."""
    from tinylm.paper.estimate import estimate, format_estimate, format_left
    from tinylm.paper.steps import finished

    cost = estimate(jobs, data_dir, tasks, p.max_length, gpus or [1, 8], *gpu)
    log(f"estimate for preset {p.name} ({len(jobs)} jobs):\n{format_estimate(cost)}")
    left = format_left(cost, {j.id for j in jobs if finished(j, ctx)}, set(to_copy))
    if left:
        log(left)
    return {r["id"]: 60.0 * r["minutes_here"] for r in cost["rows"]}


def _run_grid(
    outp: Path,
    p: Preset,
    jobs: list[Job],
    tasks: list[str],
    seeds: int,
    n_jobs: int,
    data_dir: str | None,
    dry_run: bool,
    log: Log,
    executor: str = "local",
    ray_address: str | None = None,
    expected: dict[str, float] | None = None,
) -> Path:
    plan = [
        {"id": j.id, "kind": j.kind, "role": j.role, "deps": j.deps, "settings": j.settings}
        | ({"also": j.also} if j.also else {})
        for j in jobs
    ]
    write_json(
        outp / "plan.json",
        {
            "preset": p.as_dict() | {"name": p.name},
            "jobs": plan,
            "args": {
                "seeds": seeds,
                "tasks": tasks,
                "jobs": n_jobs,
                "dry_run": dry_run,
                "executor": executor,
            },
        },
    )
    t0 = time.time()
    ctx = Context(outp, data_dir, progress=True, dry_run=dry_run)
    clock = None if dry_run else InvocationClock(outp, n_jobs).start()  # killed runs count too
    try:
        prepare_corpora(p, data_dir, str(ctx.cache_dir), log)
        if executor == "ray":
            seconds = run_ray(jobs, ctx, ray_address, log, num_cpus=n_jobs if n_jobs > 1 else None)
        else:
            seconds = run_local(jobs, ctx, n_jobs, log, expected)
    except BaseException:
        if clock is not None:
            clock.stop("interrupted")
        raise
    if clock is None:
        log(f"dry run finished: {len(jobs)} runs of 2 steps each in {time.time() - t0:.0f} s")
        return outp
    total = clock.stop("jobs finished, report not written")  # the grid's whole cost, every invocation
    try:
        write_report(outp, p, jobs, tasks, seeds, total, seconds, log)
    except BaseException:
        clock.mark("interrupted while writing the report")
        raise
    clock.mark("finished")
    return outp
