"""Committee members pre-trained again when they end below the adequacy gate (`member_reseeds` of a preset).

A plain 1-layer member's escape from the unigram plateau is fragile: the same recipe and budget passed the
gate in one `cpu` run and ended 0.92 nats short of it in the next. A member pre-training job with
`gate_reseeds: K` whose finished model is below the gate (`gate_nats`) is set aside, whole, in
OUT/runs/ID.below-gate/seed-S and trained again with seed S + RESEED_STRIDE, at most K times; the last
attempt is kept whatever its loss (the claims that use it are then not tested). Members are chosen on
their pre-training loss alone, never on a downstream accuracy, and the report lists every attempt set
aside. Resumable: a grid stopped at any point continues with the attempt it was on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinylm.fileio import read_json_object
from tinylm.paper.context import Context
from tinylm.paper.jobs import Job

#: OUT/runs/ID + this: the attempts of job ID set aside below the gate (one run directory per seed).
SET_ASIDE_SUFFIX = ".below-gate"
#: Attempt a of a job of seed s trains with seed s + a × RESEED_STRIDE (distinct from every member's seed).
RESEED_STRIDE = 1000


def nats_below_unigram(results: dict[str, Any]) -> float | None:
    """How far a pre-training's held-out MLM loss is below the unigram baseline of the same targets."""
    ev = results.get("final_eval", {})
    loss, uni = ev.get("mlm_loss"), ev.get("unigram_loss")
    return None if loss is None or uni is None else float(uni) - float(loss)


def passes(results: dict[str, Any], gate_nats: float) -> bool:
    """The adequacy gate: held-out MLM loss at least `gate_nats` below the unigram baseline."""
    gap = nats_below_unigram(results)
    return gap is not None and gap >= gate_nats


def attempt_seed(job: Job, attempt: int) -> int:
    return int(job.settings["seed"]) + attempt * RESEED_STRIDE


def set_aside_dir(runs_dir: Path, job_id: str) -> Path:
    return runs_dir / f"{job_id}{SET_ASIDE_SUFFIX}"


def set_aside(runs_dir: Path, job_id: str) -> list[Path]:
    """The attempts of a job set aside below the gate, in the order they ran (their seeds grow)."""
    d = set_aside_dir(runs_dir, job_id)
    found = [p for p in d.glob("seed-*") if (p / "results.json").is_file()] if d.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.removeprefix("seed-")))


def _read(path: Path) -> dict[str, Any]:
    return read_json_object(path, "(a pre-training's results)")


def needs_another(job: Job, ctx: Context) -> bool:
    """Whether a finished job's model is below the gate with a re-seed left (so the job is not done)."""
    reseeds = int(job.settings.get("gate_reseeds", 0))
    result = ctx.result_path(job.id)
    if not reseeds or not result.is_file():
        return False
    below = not passes(_read(result), float(job.settings["gate_nats"]))
    return below and len(set_aside(ctx.runs_dir, job.id)) < reseeds


def run_reseeded(job: Job, ctx: Context, train: Callable[[int], object]) -> None:
    """`train(seed)` (which resumes or reuses a run in OUT/runs/ID) for the job's seed, then, while its
    model is below the gate and re-seeds are left, set the run aside and train the next seed."""
    reseeds = int(job.settings.get("gate_reseeds", 0))
    gate = float(job.settings.get("gate_nats", 0.0))
    for attempt in range(len(set_aside(ctx.runs_dir, job.id)), reseeds + 1):
        seed = attempt_seed(job, attempt)
        train(seed)
        if attempt == reseeds or passes(_read(ctx.result_path(job.id)), gate):
            return
        target = set_aside_dir(ctx.runs_dir, job.id) / f"seed-{seed}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(ctx.runs_dir / job.id, target)  # one rename: a stop here leaves either state whole


def attempts_set_aside(runs_dir: Path, job: Job) -> list[dict[str, Any]]:
    """Every attempt of a job set aside below the gate: its seed, tokens, losses and run (relative to OUT)."""
    out = []
    for p in set_aside(runs_dir, job.id):
        res = _read(p / "results.json")
        ev = res.get("final_eval", {})
        out.append(
            {
                "seed": int(p.name.removeprefix("seed-")),
                "run": f"runs/{p.parent.name}/{p.name}",
                "tokens": res.get("tokens"),
                "mlm_loss": ev.get("mlm_loss"),
                "unigram_loss": ev.get("unigram_loss"),
            }
        )
    return out
