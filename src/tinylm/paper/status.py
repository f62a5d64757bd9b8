"""What a running grid shows: the jobs bar, one line per running training job under it (steps done of
total, tokens/s, its ETA, read from the job's own metrics log), and the grid's ETA (the estimate's
per-job times, corrected by how long the finished jobs took against their estimate). When the output is
not a terminal, no bars: one line per finished job instead."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


def last_train_record(metrics: Path) -> dict[str, Any] | None:
    """The last training record (step, total_steps, tokens_per_s) of a metrics log, read from its end."""
    try:
        with metrics.open("rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if '"total_steps"' in line:
            try:
                return dict(json.loads(line))
            except ValueError:
                continue
    return None


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, m = divmod(seconds // 60, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{seconds % 60:02d}s"


class GridStatus:
    """The display of a running grid. `expected`: estimated seconds per job id (from `--estimate`'s
    timings; empty: no grid ETA)."""

    def __init__(
        self,
        total: int,
        finished: int,
        runs_dir: Path,
        expected: dict[str, float] | None = None,
        workers: int = 1,
        log: Callable[[str], None] = print,
        tty: bool | None = None,
    ):
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.bar = tqdm(
            total=total, initial=finished, unit="job", desc="jobs", dynamic_ncols=True, disable=not self.tty
        )
        self.runs_dir, self.expected, self.workers, self.log = runs_dir, expected or {}, workers, log
        self.lines: dict[str, tqdm] = {}
        self.spent: list[tuple[float, float]] = []  # (measured, expected) seconds of finished jobs
        self.done, self.total = finished, total

    def progress_of(self, job_id: str) -> tuple[int, int, float] | None:
        """(step, total steps, tokens/s) of a running training job, None before its first log line."""
        rec = last_train_record(self.runs_dir / job_id / "metrics.jsonl")
        if rec is None:
            return None
        return int(rec["step"]), int(rec["total_steps"]), float(rec.get("tokens_per_s", 0.0))

    def refresh(self, running: list[str], pending: list[str]) -> None:
        """Redraw the running jobs' lines and the grid ETA (terminal only)."""
        if not self.tty:
            return
        for job_id in [j for j in self.lines if j not in running]:
            self.lines.pop(job_id).close()
        shares: dict[str, float] = {}
        for job_id in running:
            got = self.progress_of(job_id)
            if got is None:
                continue
            step, steps, tps = got
            shares[job_id] = step / max(1, steps)
            line = self.lines.get(job_id)
            if line is None:
                line = tqdm(
                    total=steps,
                    desc=f"  {job_id}",
                    unit="step",
                    leave=False,
                    dynamic_ncols=True,
                    position=len(self.lines) + 1,
                )
                self.lines[job_id] = line
            line.total = steps
            line.update(step - line.n)
            line.set_postfix_str(f"{tps:,.0f} tok/s", refresh=False)
            line.refresh()
        eta = self.eta(running, pending, shares)
        if eta is not None:
            self.bar.set_postfix_str(f"grid ETA {_duration(eta)}")

    def eta(self, running: list[str], pending: list[str], shares: dict[str, float]) -> float | None:
        """Seconds left: the expected seconds of what remains (running jobs by their share done), scaled
        by measured ÷ expected of the finished jobs, divided over the workers."""
        if not self.expected:
            return None
        left = sum(self.expected.get(j, 0.0) for j in pending)
        left += sum(self.expected.get(j, 0.0) * (1 - shares.get(j, 0.0)) for j in running)
        measured, expected = (sum(x) for x in zip(*self.spent, strict=True)) if self.spent else (1.0, 1.0)
        return left * (measured / expected if expected > 0 else 1.0) / max(1, self.workers)

    def finished(self, job_id: str, seconds: float, running: list[str], pending: list[str]) -> None:
        self.done += 1
        if self.expected.get(job_id) and seconds > 0:
            self.spent.append((seconds, self.expected[job_id]))
        self.bar.update(1)
        self.bar.set_postfix_str(f"{job_id} {seconds:.0f}s")
        if not self.tty:
            eta = self.eta(running, pending, {})
            when = f"; grid ETA {_duration(eta)}" if eta is not None else ""
            self.log(f"[{self.done}/{self.total}] {job_id} finished in {seconds:.0f}s{when}")
        else:
            self.refresh(running, pending)

    def close(self) -> None:
        for line in self.lines.values():
            line.close()
        self.bar.close()


__all__ = ["GridStatus", "last_train_record"]
