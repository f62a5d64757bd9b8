"""Where a grid lives and how its jobs run: the context every job step gets, and helpers they share."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Context:
    """Where a grid lives and how its jobs run."""

    out: Path
    data_dir: str | None
    progress: bool = True
    dry_run: bool = False

    @property
    def runs_dir(self) -> Path:
        return self.out / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.out / "cache"

    def result_path(self, job_id: str) -> Path:
        return self.runs_dir / job_id / "results.json"


def log_of(ctx: Context) -> Callable[..., None]:
    return print if ctx.progress else (lambda *_: None)


def best_of(job_ids: list[str], ctx: Context) -> str:
    """Of a learning-rate sweep's runs, the one with the best validation score."""
    from tinylm.finetune import validation_score

    scores = [validation_score(json.loads(ctx.result_path(i).read_text())) for i in job_ids]
    return job_ids[scores.index(max(scores))]


def best_of_groups(deps: list[str], sizes: list[int], ctx: Context) -> list[str]:
    """The best run of each consecutive group of `deps` (an lr sweep each; `sizes`: the groups' lengths)."""
    out, start = [], 0
    for size in sizes:
        out.append(best_of(deps[start : start + size], ctx))
        start += size
    return out
