"""Executors: run a grid's jobs in dependency order, skipping the finished ones.

`run_local` runs them in this process (`jobs=1`) or in N spawned worker processes with the cores
split between them; an `exclusive` job (latency timing) runs with nothing else running. `run_ray` runs
them as Ray tasks (a local Ray, or a cluster), dependencies as object refs. Any executor honours the same
contract: `run_job(job, ctx)` for every unfinished job after its dependencies.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from tinylm.errors import TinylmError
from tinylm.paper import steps
from tinylm.paper.context import Context
from tinylm.paper.jobs import Job
from tinylm.paper.status import GridStatus
from tinylm.process import die_with_parent


def _worker_init(threads: int, parent: int | None = None) -> None:
    """A worker's setup: its torch threads, and (Linux) a SIGTERM when the grid's process dies, so that a
    killed `reproduce` leaves no workers training on (Ctrl-C reaches them anyway; `kill PID` did not)."""
    import torch

    torch.set_num_threads(threads)
    if parent is not None:
        die_with_parent(parent)


def _ready(pending: list[Job], done: set[str], running: int) -> list[Job]:
    """Jobs whose dependencies are done; an exclusive job only when nothing runs, and then alone."""
    ready = [j for j in pending if all(d in done for d in j.deps)]
    if running:
        return [j for j in ready if not j.exclusive]
    exclusive = [j for j in ready if j.exclusive]
    return (
        exclusive[:1] if exclusive and len(ready) == len(exclusive) else [j for j in ready if not j.exclusive]
    )


def run_local(
    jobs: list[Job],
    ctx: Context,
    n_jobs: int,
    log: Callable[[str], None] = print,
    expected: dict[str, float] | None = None,
) -> dict[str, float]:
    """Run every unfinished job; returns wall seconds per job (0 for reused ones). `expected`: estimated
    seconds per job, for the grid's ETA."""
    todo = [j for j in jobs if not steps.finished(j, ctx)]
    seconds = {j.id: 0.0 for j in jobs}
    log(
        f"grid: {len(jobs)} jobs, {len(jobs) - len(todo)} already finished (reused), {len(todo)} to run, "
        f"{n_jobs} worker(s)"
    )
    status = GridStatus(len(jobs), len(jobs) - len(todo), ctx.runs_dir, expected, n_jobs, log)
    try:
        if n_jobs <= 1:
            for i, j in enumerate(todo):
                status.bar.set_postfix_str(j.id)
                seconds[j.id] = steps.run_job(j, ctx)["seconds"]
                status.finished(j.id, seconds[j.id], [], [t.id for t in todo[i + 1 :]])
        else:
            _run_pool(jobs, todo, ctx, n_jobs, seconds, status)
    finally:
        status.close()
    return seconds


#: Seconds between redraws of the running jobs' lines (a terminal only).
REFRESH_S = 5.0


def _run_pool(
    jobs: list[Job], todo: list[Job], ctx: Context, n_jobs: int, seconds: dict[str, float], status: GridStatus
) -> None:
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    done = {j.id for j in jobs} - {j.id for j in todo}
    pending = list(todo)
    running: dict[cf.Future[dict[str, Any]], Job] = {}
    quiet = Context(ctx.out, ctx.data_dir, progress=False, dry_run=ctx.dry_run)
    with cf.ProcessPoolExecutor(
        n_jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init, initargs=(threads, os.getpid())
    ) as pool:
        while pending or running:
            for j in _ready(pending, done, len(running))[: max(0, n_jobs - len(running))]:
                pending.remove(j)
                running[pool.submit(steps.run_job, j, quiet)] = j
                if j.exclusive:
                    break
            if not running:
                missing = sorted({d for j in pending for d in j.deps if d not in done})
                raise TinylmError(
                    f"grid cannot proceed: jobs wait for unknown or failed dependencies {missing[:3]}"
                )
            timeout = REFRESH_S if status.tty else None
            finished, _ = cf.wait(running, timeout=timeout, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                j = running.pop(fut)
                res = fut.result()  # re-raises a worker's error
                seconds[j.id] = res["seconds"]
                done.add(j.id)
                status.finished(
                    j.id, res["seconds"], [r.id for r in running.values()], [p.id for p in pending]
                )
            status.refresh([r.id for r in running.values()], [p.id for p in pending])


def _ray_task(job: Job, ctx: Context, threads: int, *deps: Any) -> dict[str, Any]:
    """One job on a Ray worker (the dependencies' results arrive as resolved object refs, unused)."""
    import torch

    torch.set_num_threads(threads)
    return steps.run_job(job, ctx)


def run_ray(
    jobs: list[Job],
    ctx: Context,
    address: str | None = None,
    log: Callable[[str], None] = print,
    cpus_per_job: int = 1,
    num_cpus: int | None = None,
) -> dict[str, float]:
    """Run every unfinished job as a Ray task: dependencies are the object refs of the jobs they wait for
    (no polling); a job asks for `cpus_per_job` CPUs (and a GPU when this machine has one); the exclusive
    latency job asks for every CPU of the cluster, so it runs alone. `address` joins an existing cluster
    (`ray start --head`); without it Ray starts locally. OUT must be on a filesystem every node sees.
    Keys, resume and results are the local executor's: a grid may be finished by either."""
    import ray
    import torch

    todo = [j for j in jobs if not steps.finished(j, ctx)]
    seconds = {j.id: 0.0 for j in jobs}
    n_done = len(jobs) - len(todo)
    log(f"grid on Ray: {len(jobs)} jobs, {n_done} already finished (reused), {len(todo)} to run")
    started = not ray.is_initialized()
    if started:
        ray.init(
            address=address,
            num_cpus=None if address else num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    try:
        total_cpus = int(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
        gpus = 1 if torch.cuda.is_available() else 0
        task = ray.remote(_ray_task)
        quiet = Context(ctx.out, ctx.data_dir, progress=False, dry_run=ctx.dry_run)
        refs: dict[str, Any] = {}
        for j in todo:  # dependency order: a job's dependencies were submitted before it
            cpus = total_cpus if j.exclusive else min(cpus_per_job, total_cpus)
            deps = [refs[d] for d in j.deps if d in refs]
            exclusive_after = list(refs.values()) if j.exclusive else []  # timings: after everything else
            opts = {"num_cpus": cpus, "num_gpus": gpus if j.kind in ("pretrain", "finetune") else 0}
            refs[j.id] = task.options(**opts).remote(j, quiet, cpus, *deps, *exclusive_after)
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="job", desc="jobs (ray)")
        waiting = list(refs.values())
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            res = ray.get(ready[0])  # re-raises a task's error
            seconds[res["id"]] = res["seconds"]
            bar.update(1)
        bar.close()
    finally:
        if started:
            ray.shutdown()
    return seconds
