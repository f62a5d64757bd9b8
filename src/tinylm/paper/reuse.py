"""Finished pre-trainings of other grids, reused: `tinylm reproduce --reuse-from DIR ...`.

A job's id is a hash of its settings, so two presets that share a pre-training (the quick and cpu
grids' main deep model of seed 0, say) give it the same id. Before the grid runs, each pre-training job
without a finished run of its own is looked up in the source grids (DIR/runs/ID, or DIR/ID for a runs
directory; failing that, any finished run there, as a job's id also hashes settings that steer the grid
only, e.g. a member's `gate_reseeds`); a finished run whose config.yaml defines the same run as this
grid's settings (every setting but paths, threads and display: `runs.identity_differences`) is copied
in, without what only a resume needs, with `reused_from.json` naming its source. Its training time was
spent elsewhere: the report lists it apart and leaves it out of this grid's lane time.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tinylm.fileio import atomic_dir, write_json
from tinylm.paper.context import Context
from tinylm.paper.jobs import Job
from tinylm.runs import RESUME_ONLY, identity_differences

#: The file a copied run gets, naming where it came from.
REUSED_FROM = "reused_from.json"


def source_runs_dirs(sources: list[str]) -> tuple[list[Path], list[str]]:
    """Each `--reuse-from` directory as a runs directory (a grid's OUT or its OUT/runs), and a problem for
    each one that is not a directory."""
    dirs, problems = [], []
    for s in sources:
        d = Path(s)
        if (d / "runs").is_dir():
            dirs.append(d / "runs")
        elif d.is_dir():
            dirs.append(d)
        else:
            problems.append(f"reuse-from: {s}: no such directory (expected a reproduce --out directory)")
    return dirs, problems


def reusable(
    jobs: list[Job], ctx: Context, sources: list[Path], log: Callable[[str], None]
) -> dict[str, Path]:
    """{job id: source run directory} of every pre-training job without a run in OUT/runs whose finished
    run in `sources` (runs directories, the first that has one) has the same settings; each source run
    passed over for its settings is logged with the reason."""
    from tinylm.paper.steps import pretrain_settings

    found: dict[str, Path] = {}
    index: list[tuple[Path, dict[str, Any]]] | None = None  # every finished run of the sources, read once
    for job in jobs:
        if job.kind != "pretrain" or (ctx.runs_dir / job.id).exists():
            continue  # finished here already, or in progress here (resumed, not replaced)
        flat = pretrain_settings(job, ctx).flat()
        for src in (d / job.id for d in sources):
            if not (src / "results.json").is_file():
                continue
            old = _config(src)
            diff = None if old is None else identity_differences(old, flat)
            if diff == "":
                found[job.id] = src
                break
            reason = f"settings differ ({diff})" if diff else "no readable config.yaml"
            log(f"reuse-from: {src} not reused: {reason}")
        else:  # no run of this id: one of another id with the same settings (a grid-only key differs)
            index = _finished_runs(sources) if index is None else index
            same = next((src for src, old in index if identity_differences(old, flat) == ""), None)
            if same is not None:
                found[job.id] = same
    return found


def _finished_runs(sources: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every finished run directly in the source runs directories with its config.yaml, in source order."""
    out = []
    for d in sources:
        for run in sorted(p for p in d.iterdir() if (p / "results.json").is_file()):
            cfg = _config(run)
            if cfg is not None:
                out.append((run, cfg))
    return out


def reuse_runs(
    jobs: list[Job], ctx: Context, sources: list[Path], log: Callable[[str], None]
) -> dict[str, str]:
    """Copy into OUT/runs every pre-training job's finished run found in `sources` with the same settings
    (`reusable`); returns {job id: source run directory} of the runs copied now."""
    copied: dict[str, str] = {}
    for job_id, src in reusable(jobs, ctx, sources, log).items():
        _copy_run(src, ctx.runs_dir / job_id)
        copied[job_id] = str(src.resolve())
        log(f"reuse-from: {job_id} copied from {src} (finished, same settings)")
    return copied


def _config(run: Path) -> dict[str, Any] | None:
    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return cfg if isinstance(cfg, dict) else None


def _copy_run(src: Path, target: Path) -> None:
    with atomic_dir(target) as tmp:
        shutil.copytree(
            src, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*RESUME_ONLY, ".lock", "*.tmp")
        )
        write_json(tmp / REUSED_FROM, {"source": str(src.resolve()), "copied_at": time.strftime("%FT%T%z")})


def reused_runs(ctx: Context, jobs: list[Job]) -> dict[str, str]:
    """{job id: source} of the grid's runs that were copied from another grid (at any invocation)."""
    out = {}
    for job in jobs:
        f = ctx.runs_dir / job.id / REUSED_FROM
        if f.is_file():
            out[job.id] = json.loads(f.read_text(encoding="utf-8"))["source"]
    return out
