"""What each kind of grid job does: one function per kind, each leaving OUT/runs/ID/results.json.

Pre-training and fine-tuning jobs are the `tinylm pretrain` / `finetune` commands (resumed when
interrupted); overlap, committee and latency jobs compute their numbers here, so that the analysis
reads results and computes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinylm.fileio import write_json
from tinylm.paper import future_steps, reseed
from tinylm.paper.context import Context, best_of_groups, log_of
from tinylm.paper.jobs import Job
from tinylm.settings import FinetuneSettings, PretrainSettings


def _training_settings(job: Job, ctx: Context) -> dict[str, Any]:
    settings = job.run_settings() | {
        "out": str(ctx.runs_dir),
        "name": job.id,
        "resume": True,
        "progress": ctx.progress,
        "data_dir": ctx.data_dir,
        "cache_dir": str(ctx.cache_dir),
    }
    if ctx.dry_run:
        from tinylm.device import bf16_supported, pick_device

        settings |= {"max_steps": 2}
        if settings.get("precision") == "bf16" and not bf16_supported(pick_device("auto")):
            settings["precision"] = "fp32"
    return settings


def _in_runs(ctx: Context, path: str) -> str:
    """A path relative to OUT/runs (a job's output named in another job's settings) made absolute."""
    return path if Path(path).is_absolute() else str(ctx.runs_dir / path)


def pretrain_settings(job: Job, ctx: Context, seed: int | None = None) -> PretrainSettings:
    """The settings a pre-training job runs with in this grid (`seed`: a re-seeded attempt's)."""
    settings = _training_settings(job, ctx)
    if seed is not None:
        settings["seed"] = seed
    if settings.get("corpus", "wikipedia").startswith("file:"):  # E5: a `select` job's corpus
        settings["corpus"] = "file:" + _in_runs(ctx, settings["corpus"].removeprefix("file:"))
    return PretrainSettings.build(settings)


def run_pretrain(job: Job, ctx: Context) -> None:
    """One pre-training, trained again with the next seed while it ends below the gate and the job has
    re-seeds left (`reseed`)."""
    from tinylm.pretrain import pretrain

    reseed.run_reseeded(job, ctx, lambda seed: pretrain(pretrain_settings(job, ctx, seed), log=log_of(ctx)))


def run_finetune(job: Job, ctx: Context) -> None:
    from tinylm.finetune import finetune

    settings = _training_settings(job, ctx)
    if settings.get("init", "scratch") != "scratch":
        settings["init"] = _in_runs(ctx, settings["init"])
    if settings.get("teacher"):  # distillation: a `teacher` job's committee
        settings["teacher"] = _in_runs(ctx, settings["teacher"])
    if settings.get("distill_unlabelled"):  # and a `select` job's corpus as unlabelled text
        settings["distill_unlabelled"] = "file:" + _in_runs(
            ctx, settings["distill_unlabelled"].removeprefix("file:")
        )
    if ctx.dry_run:
        settings |= {"samples_per_label_train": 2, "samples_per_label_test": 2}
    # from a pre-trained model: its architecture, with the head's pooling and the fine-tuning dropout set
    # by the job (the same in both arms, whatever dropout the pre-training used)
    finetune(FinetuneSettings.build(settings), log=log_of(ctx))


def run_overlap(job: Job, ctx: Context) -> None:
    """Overlap of each nested corpus size with each task's training samples (counted once, cumulatively)."""
    from tinylm.data.sources import resolve_source
    from tinylm.data.token_stats import task_token_counts
    from tinylm.data.tokenize import load_tokenizer
    from tinylm.overlap import CorpusSpec, overlap_rows

    s = job.settings
    source = resolve_source(ctx.data_dir)
    tok = load_tokenizer(source)
    counts = {
        t: task_token_counts(t, source, tok, s["max_length"], per_label=tuple(s["samples"][t]))
        for t in s["tasks"]
    }
    rows = overlap_rows(
        [CorpusSpec("wiki", tuple(s["sizes"]))],
        {t: {"train": c["train"]} for t, c in counts.items()},
        source,
        tok,
        s["corpus_seed"],
        s["max_length"],
        s["eval_articles"],
        str(ctx.cache_dir),
    )
    write_json(ctx.result_path(job.id), {"kind": "overlap", "settings": s, "rows": rows})


def run_committee(job: Job, ctx: Context) -> None:
    """The members' soft committee on their task's test split, next to the reference (the last dependency).
    Run paths are stored relative to OUT, so results do not depend on where OUT is."""
    from tinylm.committee import evaluate_committee, load_member, measured_latency

    s = job.settings
    # each member's (and the reference's) lr sweep
    *members, ref = best_of_groups(job.deps, s.get("group_sizes", [1] * len(job.deps)), ctx)
    result, committee = evaluate_committee(
        [str(ctx.runs_dir / m) for m in members],
        s["task"],
        str(ctx.runs_dir / ref),
        s["rule"],
        orderings=s["orderings"],
        seed=s["seed"],
    )
    for m, job_id in zip(result["members"], members, strict=True):
        m["run"] = f"runs/{job_id}"
    result["reference"]["run"] = f"runs/{ref}"
    reference, _ = load_member(ctx.runs_dir / ref)  # timed here, not in every committee evaluation
    result["latency"] = measured_latency(committee, reference, reference.cfg.max_length)
    write_json(ctx.result_path(job.id), result)


def run_latency(job: Job, ctx: Context) -> None:
    from tinylm.latency import bench_latency

    s = job.settings
    result = bench_latency(
        s["k"],
        s["batch"],
        s["precision"],
        s["max_length"],
        s["reps"],
        max(1, s["reps"] // 5),
        log=lambda *_: None,
        onnx=s.get("onnx", True),
    )
    write_json(ctx.result_path(job.id), result)


STEPS: dict[str, Callable[[Job, Context], None]] = {
    "pretrain": run_pretrain,
    "finetune": run_finetune,
    "overlap": run_overlap,
    "committee": run_committee,
    "latency": run_latency,
    **future_steps.STEPS,
}


def finished(job: Job, ctx: Context) -> bool:
    """Whether a job has nothing left to do: its results exist, and a re-seeded pre-training's model is
    past the gate or has no re-seed left."""
    return ctx.result_path(job.id).is_file() and not reseed.needs_another(job, ctx)


def run_job(job: Job, ctx: Context) -> dict[str, Any]:
    """Run (or resume) one job in this process; returns its id and wall seconds."""
    t0 = time.time()
    STEPS[job.kind](job, ctx)
    return {"id": job.id, "seconds": round(time.time() - t0, 1)}
