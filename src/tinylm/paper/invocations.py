"""OUT/invocations.json: the wall time of every `reproduce` invocation of a grid, killed ones included.

An invocation's entry is written when it starts and rewritten every `every` seconds by a daemon thread,
so a grid stopped by SIGKILL (a session's end, a lost machine) still counts all but the last minute of
its time; a clean end marks it "finished", an exception or Ctrl-C "interrupted" (while the jobs ran) or
"interrupted while writing the report" (after they all finished)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from tinylm.fileio import write_json


class InvocationClock:
    """This invocation's line in OUT/invocations.json, kept current while the grid runs."""

    def __init__(self, out: Path, n_jobs: int, every: float = 60.0):
        self.path, self.n_jobs, self.every = out / "invocations.json", n_jobs, every
        self.earlier: list[dict[str, Any]] = json.loads(self.path.read_text()) if self.path.is_file() else []
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.t0 = time.time()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="invocation-clock", daemon=True)

    def start(self) -> InvocationClock:
        self._write(None)
        self._thread.start()
        return self

    def stop(self, ended: str) -> float:
        """Stop the clock, mark how the invocation ended; returns the grid's seconds over every invocation."""
        self._stopped.set()
        self._thread.join()
        return self._write(ended)

    def mark(self, ended: str) -> None:
        """Rewrite how the stopped invocation ended (its seconds unchanged), e.g. after the report."""
        entries = json.loads(self.path.read_text())
        write_json(self.path, [*entries[:-1], entries[-1] | {"ended": ended}])

    def _beat(self) -> None:
        while not self._stopped.wait(self.every):
            self._write(None)

    def _write(self, ended: str | None) -> float:
        entry = {"started": self.started, "seconds": round(time.time() - self.t0, 1), "jobs": self.n_jobs}
        entry["ended"] = ended if ended else "running (or killed) at " + time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(self.path, [*self.earlier, entry])  # never concurrent: stop() joins the thread first
        return float(sum(d["seconds"] for d in self.earlier) + entry["seconds"])
