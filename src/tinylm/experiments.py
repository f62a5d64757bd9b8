"""`tinylm reproduce`: the paper's experiments E1–E4 as a resumable grid of runs.

A preset (YAML, shipped in tinylm/configs/reproduce-*.yaml) fixes only sizes: models, corpus sizes,
epochs, seeds, samples per label. The grid is the same for every preset:

* pretraining runs: the deep model on every nested corpus size; the shallow committee members
  (independent seeds, cycling over the preset's architectures) on the main size; the deep model on the
  high- and low-overlap corpora of the controlled task;
* fine-tuning runs: every pre-trained deep model and the scratch control, per task and seed; the
  members per task (seed 0); the controlled corpora on their task, per seed.

A run's directory is named by a hash of its resolved settings (and of its dependencies), so finished
runs are reused and an interrupted grid resumes where it stopped. Independent runs go to `--jobs`
worker processes with the cores split between them.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from tinylm.config import PACKAGE_CONFIGS
from tinylm.errors import ConfigError, TinylmError
from tinylm.fileio import stable_hash, write_json

PRESETS = ("smoke", "quick", "cpu", "paper")
PRESET_KEYS = {
    "description", "tasks", "seeds", "deep", "shallow", "members", "corpus_sizes", "main_corpus", "eval_articles",
    "max_length", "pretrain", "finetune", "samples", "controlled", "latency", "precision",
}  # fmt: skip


def load_preset(name: str) -> dict[str, Any]:
    """A shipped preset by name, or a YAML file path; checks every key at once."""
    path = PACKAGE_CONFIGS / f"reproduce-{name}.yaml" if name in PRESETS else Path(name)
    if not path.is_file():
        raise ConfigError(
            [f"preset: no preset {name!r} (expected {', '.join(PRESETS)} or a YAML file)"], "reproduce"
        )
    preset = yaml.safe_load(path.read_text()) or {}
    problems = [f"{k}: unknown preset key" for k in preset if k not in PRESET_KEYS]
    problems += [
        f"{k}: missing" for k in sorted(PRESET_KEYS - {"description", "precision"}) if k not in preset
    ]
    if not problems:
        if preset["main_corpus"] not in preset["corpus_sizes"]:
            problems.append(
                f"main_corpus: {preset['main_corpus']} must be one of corpus_sizes {preset['corpus_sizes']}"
            )
        if preset["members"] < 2:
            problems.append("members: a committee needs at least 2 members")
        for t in preset["tasks"]:
            if t not in preset["samples"]:
                problems.append(f"samples: no per-label sample sizes for task {t}")
    if problems:
        raise ConfigError(problems, str(path))
    return preset | {"name": path.stem.removeprefix("reproduce-"), "path": str(path)}


@dataclass
class Job:
    kind: str  # "pretrain" | "finetune"
    settings: dict[str, Any]
    deps: list[str] = field(default_factory=list)
    role: dict[str, Any] = field(default_factory=dict)  # what the run is for (experiment bookkeeping)
    id: str = ""


IGNORED_IN_KEY = {"out", "name", "resume", "progress", "threads", "data_dir", "cache_dir", "init"}


def make_job(kind: str, settings: dict[str, Any], role: dict[str, Any], init_job: Job | None = None) -> Job:
    key = {k: v for k, v in settings.items() if k not in IGNORED_IN_KEY} | {"kind": kind}
    if init_job is not None:
        key["init"] = init_job.id
    elif "init" in settings:
        key["init"] = settings["init"]
    job = Job(kind, dict(settings), [init_job.id] if init_job else [], role)
    job.id = f"{kind}-{stable_hash(key, 12)}"
    return job


def build_grid(p: dict[str, Any], tasks: list[str], seeds: int) -> list[Job]:
    """Every run of E1–E4 for a preset (a list in dependency order)."""
    jobs: list[Job] = []
    prec = {"precision": p.get("precision", "fp32")}
    pre_common = p["pretrain"] | {"max_length": p["max_length"], "eval_articles": p["eval_articles"]} | prec
    ft_common = p["finetune"] | prec

    def pretrain(model: dict[str, Any], n: int, seed: int, role: dict[str, Any], **extra: Any) -> Job:
        j = make_job("pretrain", pre_common | model | {"num_articles": n, "seed": seed} | extra, role)
        jobs.append(j)
        return j

    def finetune(init: Job | None, model: dict[str, Any], task: str, seed: int, role: dict[str, Any]) -> Job:
        s = p["samples"][task]
        settings = ft_common | {
            "task": task,
            "seed": seed,
            "samples_per_label_train": s[0],
            "samples_per_label_test": s[1],
        }
        settings |= ({"init": "scratch"} | model) if init is None else {"init": init.id}
        j = make_job("finetune", settings, role | {"task": task, "seed": seed}, init)
        jobs.append(j)
        return j

    deep = {"deep": True}
    pre_by_size = {n: pretrain(p["deep"], n, 0, deep | {"size": n}) for n in p["corpus_sizes"]}
    ctl = p["controlled"]
    ctl_pre = {d: pretrain(p["deep"], ctl["num_articles"], 0, deep | {"selection": d, "size": ctl["num_articles"]},
                           selection=d, selection_task=ctl["task"], selection_pool=ctl["pool"]) for d in ("high", "low")}  # fmt: skip
    members = [
        pretrain(p["shallow"][i % len(p["shallow"])], p["main_corpus"], i, {"member": i})
        for i in range(p["members"])
    ]
    for task in tasks:
        for seed in range(seeds):
            finetune(None, p["deep"], task, seed, {"init": "scratch"})
            for n, j in pre_by_size.items():
                finetune(j, {}, task, seed, {"init": "pretrained", "size": n})
            if task == ctl["task"]:
                for d, j in ctl_pre.items():
                    finetune(j, {}, task, seed, {"init": "controlled", "selection": d})
        for i, j in enumerate(members):
            finetune(j, {}, task, 0, {"init": "member", "member": i})
    return jobs


# ---------------------------------------------------------------- running


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_job(
    job: Job, runs_dir: str, data_dir: str | None, cache_dir: str, progress: bool, dry_run: bool = False
) -> dict[str, Any]:
    """Run (or reuse, or resume) one job in this process; returns its results."""
    from tinylm.config import build_sections

    settings = job.settings | {"out": runs_dir, "name": job.id, "resume": True, "progress": progress,
                               "data_dir": data_dir, "cache_dir": cache_dir}  # fmt: skip
    if dry_run:
        from tinylm.train import bf16_supported, pick_device

        settings |= {"max_steps": 2}
        if settings.get("precision") == "bf16" and not bf16_supported(pick_device("auto")):
            settings["precision"] = "fp32"
    t0 = time.time()
    quiet = (lambda *_: None) if not progress else print
    if job.kind == "pretrain":
        from tinylm.pretrain import SECTIONS, pretrain

        run = pretrain(build_sections(SECTIONS, settings), log=quiet)
    else:
        from tinylm.finetune import SECTIONS, finetune

        if settings.get("init", "scratch") != "scratch":
            settings["init"] = str(Path(runs_dir) / settings["init"])
        if dry_run:
            settings |= {"samples_per_label_train": 2, "samples_per_label_test": 2}
        explicit = set(settings) if settings["init"] == "scratch" else set()
        run = finetune(build_sections(SECTIONS, settings), explicit, log=quiet)
    return {"id": job.id, "seconds": round(time.time() - t0, 1), "path": str(run.path)}


def run_grid(
    jobs: list[Job], out: Path, data_dir: str | None, n_jobs: int, log=print, dry_run: bool = False
) -> dict[str, float]:
    """Run all jobs respecting dependencies; returns seconds per job (0 for reused ones)."""
    runs_dir, cache_dir = str(out / "runs"), str(out / "cache")
    by_id = {j.id: j for j in jobs}
    todo = [j for j in jobs if not (Path(runs_dir) / j.id / "results.json").is_file()]
    seconds = {j.id: 0.0 for j in jobs}
    log(
        f"grid: {len(jobs)} runs, {len(jobs) - len(todo)} already finished (reused), {len(todo)} to run, {n_jobs} worker(s)"
    )
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="run", desc="runs", dynamic_ncols=True)
    done = {j.id for j in jobs} - {j.id for j in todo}
    if n_jobs <= 1:
        for j in todo:
            bar.set_postfix_str(j.id)
            res = run_job(j, runs_dir, data_dir, cache_dir, progress=True, dry_run=dry_run)
            seconds[j.id] = res["seconds"]
            bar.update(1)
        bar.close()
        return seconds
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    pending = list(todo)
    running: dict[cf.Future, Job] = {}
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(
        n_jobs, mp_context=ctx, initializer=_worker_init, initargs=(threads,)
    ) as pool:
        while pending or running:
            ready = [j for j in pending if all(d in done for d in j.deps)]
            for j in ready[: max(0, n_jobs - len(running))]:
                pending.remove(j)
                running[pool.submit(run_job, j, runs_dir, data_dir, cache_dir, False, dry_run)] = j
            if not running:
                missing = {d for j in pending for d in j.deps if d not in by_id}
                raise TinylmError(f"grid cannot proceed: unknown dependencies {sorted(missing)[:3]}")
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                j = running.pop(fut)
                res = fut.result()  # re-raises a worker's error
                seconds[j.id] = res["seconds"]
                done.add(j.id)
                bar.update(1)
                bar.set_postfix_str(f"{j.id} {res['seconds']:.0f}s")
    bar.close()
    return seconds


def prepare_corpora(p: dict[str, Any], data_dir: str | None, cache_dir: str, log=print) -> None:
    """Tokenize the largest nested subset and the selection pool once, before workers start."""
    from tinylm.data.corpus import load_wiki_corpus
    from tinylm.data.sources import resolve_source
    from tinylm.data.tokenize import load_tokenizer

    source = resolve_source(data_dir)
    tok = load_tokenizer(source)
    n = max(max(p["corpus_sizes"]), p["controlled"]["pool"])
    c = load_wiki_corpus(source, tok, n, 42, p["max_length"], p["eval_articles"], cache_dir)
    log(f"corpus cache: {n:,} articles ({'reused' if c.description['cache_hit'] else 'built'})")


def write_plan(out: Path, p: dict[str, Any], jobs: list[Job], args: dict[str, Any]) -> None:
    write_json(out / "plan.json", {"preset": p, "args": args,
                                   "jobs": [{"id": j.id, "kind": j.kind, "role": j.role, "deps": j.deps, "settings": j.settings} for j in jobs]})  # fmt: skip


def reproduce(preset: str, out: str, seeds: int | None, tasks: list[str] | None, n_jobs: int, data_dir: str | None,
              dry_run: bool = False, log=print) -> Path:  # fmt: skip
    """Run the grid of a preset and write OUT/report.md, OUT/figures/*.png, OUT/results.json."""
    p = load_preset(preset)
    tasks = tasks or p["tasks"]
    unknown = [t for t in tasks if t not in p["samples"]]
    if unknown:
        raise ConfigError(
            [f"tasks: {t} has no per-label sample sizes in the preset" for t in unknown], "reproduce"
        )
    seeds = seeds or p["seeds"]
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    jobs = build_grid(p, tasks, seeds)
    if dry_run:  # the paper preset on a CPU: one pre-training and one fine-tuning run, two steps each
        pre = next(j for j in jobs if j.kind == "pretrain")
        ft = next(j for j in jobs if j.kind == "finetune" and j.deps == [pre.id])
        jobs = [pre, ft]
    write_plan(outp, p, jobs, {"seeds": seeds, "tasks": tasks, "jobs": n_jobs, "dry_run": dry_run})
    t0 = time.time()
    prepare_corpora(p if not dry_run else p | {"corpus_sizes": [min(p["corpus_sizes"])], "controlled": p["controlled"] | {"pool": 0}},
                    data_dir, str(outp / "cache"), log)  # fmt: skip
    seconds = run_grid(jobs, outp, data_dir, n_jobs, log, dry_run)
    if dry_run:
        log(f"dry run finished: {len(jobs)} runs of 2 steps each in {time.time() - t0:.0f} s")
        return outp
    from tinylm.report import write_report

    write_report(
        outp, p, jobs, tasks, seeds, data_dir, wall_seconds=time.time() - t0, run_seconds=seconds, log=log
    )
    return outp


__all__ = ["build_grid", "load_preset", "reproduce"]
