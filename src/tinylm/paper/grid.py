"""The grid of `tinylm reproduce`: every run of E1–E4 as a job with a key, settings and dependencies.

Job kinds:

* `pretrain`: the deep model on every nested corpus size; the shallow committee members (independent
  seeds, cycling over the preset's architectures) on the main size; the deep model on the high- and
  low-overlap corpora of the controlled task (`controlled.seeds` pre-training replicates of each);
* `finetune`: every pre-trained deep model and the scratch control, per task and seed; the members per
  task (seed 0); the controlled corpora on their task, per seed;
* `overlap`: token overlap of every nested corpus size with every task's training samples (E3);
* `committee`: the members' soft committee per task, next to the deep model (E4);
* `latency`: inference latency of the deep model, one member and committees (E4; runs alone).

A job's id is its kind and a hash of its settings and of its dependencies' ids, so finished jobs are
reused and an interrupted grid resumes where it stopped. Every job is validated before the first runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tinylm.errors import ConfigError
from tinylm.fileio import stable_hash
from tinylm.paper.presets import Preset
from tinylm.registry import PAPER_CORPUS_SEED
from tinylm.runs import NON_IDENTITY_KEYS
from tinylm.settings import RECIPES

KINDS = ("pretrain", "finetune", "overlap", "committee", "latency")


@dataclass
class Job:
    kind: str
    settings: dict[str, Any]
    deps: list[str] = field(default_factory=list)
    role: dict[str, Any] = field(
        default_factory=dict
    )  #: what the job is for (the analysis finds jobs by role)
    id: str = ""
    exclusive: bool = False  #: run with nothing else running (timings)


def make_job(
    kind: str,
    settings: dict[str, Any],
    role: dict[str, Any],
    deps: list[Job] | None = None,
    exclusive: bool = False,
    keyed_by_role: bool = False,
) -> Job:
    """A job keyed by its kind, its identity-defining settings and its dependencies' ids (and its role,
    with `keyed_by_role`). A fine-tuning job's `init` is its pre-training dependency (its id stands in
    the key for the path)."""
    deps = deps or []
    key = {k: v for k, v in settings.items() if k not in NON_IDENTITY_KEYS | {"init"}} | {"kind": kind}
    if keyed_by_role:
        key["role"] = role
    if kind == "finetune":
        if "init" in settings:  # a job id (or its snapshot) relative to OUT/runs, or "scratch"
            key["init"] = settings["init"]
    elif deps:
        key["deps"] = [d.id for d in deps]
    job = Job(kind, dict(settings), [d.id for d in deps], role, exclusive=exclusive)
    job.id = f"{kind}-{stable_hash(key, 12)}"
    return job


#: BERT's (and the paper's) fine-tuning dropout, unless a preset's `finetune` sets it.
FINETUNE_DROPOUT = {"dropout": 0.1, "attention_dropout": 0.1}


class GridBuilder:
    """Builds the jobs of a preset in dependency order; a job built twice (same id) is kept once."""

    def __init__(self, p: Preset):
        self.p = p
        self.jobs: list[Job] = []
        self.by_id: dict[str, Job] = {}
        self.pre_common = p.pretrain | {
            "max_length": p.max_length,
            "eval_articles": p.eval_articles,
            "precision": p.precision,
        }
        # fine-tuning dropout is explicit in every job: a model pre-trained without dropout must not carry
        # that into its arm while the scratch arm gets BERT's 0.1
        self.ft_common = FINETUNE_DROPOUT | p.finetune | {"precision": p.precision}

    def add(self, job: Job) -> Job:
        if job.id in self.by_id:
            return self.by_id[job.id]
        self.jobs.append(job)
        self.by_id[job.id] = job
        return job

    def pretrain(self, model: dict[str, Any], n: int, seed: int, role: dict[str, Any], **extra: Any) -> Job:
        """One pre-training. The same settings asked for in another role (a committee member with the
        deep model's architecture and seed) get a run of their own, keyed by the role: the analysis finds
        jobs by role, so a shared run would leave one role without its job."""
        settings = self.pre_common | model | {"num_articles": n, "seed": seed} | extra
        job = make_job("pretrain", settings, role)
        if job.id in self.by_id and self.by_id[job.id].role != role:
            job = make_job("pretrain", settings, role, keyed_by_role=True)
        return self.add(job)

    def finetune(
        self,
        init: Job | None,
        task: str,
        seed: int,
        role: dict[str, Any],
        pooling: str,
        snapshot: int | None = None,
        sweep: bool = True,
    ) -> list[Job]:
        """One fine-tuning job, or one per learning rate of the preset's sweep (chosen on validation
        later); `snapshot` fine-tunes the pre-training run's model kept at that many tokens."""
        train, test = self.p.samples[task]
        settings = self.ft_common | {
            "task": task,
            "seed": seed,
            "samples_per_label_train": train,
            "samples_per_label_test": test,
            "pooling": pooling,
        }
        if init is None:
            settings |= {"init": "scratch"} | self.p.deep
        else:
            settings["init"] = init.id if snapshot is None else f"{init.id}/snapshots/tokens-{snapshot}"
        role = role | {"task": task, "seed": seed, "pooling": pooling}
        lrs = self.p.finetune_lrs if sweep else []
        runs = [(settings | {"lr": lr}, role | {"lr": lr}) for lr in lrs] or [
            (settings, role | {"lr": settings.get("lr")} | ({} if sweep else {"e0": True}))
        ]
        return [self.add(make_job("finetune", s, r, [init] if init else [])) for s, r in runs]


def e0_snapshots(p: Preset) -> list[int]:
    """E0's token counts: 0 (the initial model) and budget / 2^k for k = points … 1 (the budget itself is
    the finished run)."""
    if p.e0 is None:
        return []
    budget = int(p.pretrain["max_tokens"])
    return [0] + [budget // 2**k for k in range(p.e0.points, 0, -1)]


def build_grid(p: Preset, tasks: list[str], seeds: int) -> list[Job]:
    """Every job of E0–E4 for a preset, in dependency order."""
    g = GridBuilder(p)
    snaps = e0_snapshots(p)
    main = [
        g.pretrain(
            p.deep,
            p.main_corpus,
            r,
            {"deep": True, "size": p.main_corpus, "pseed": r},
            **({"snapshot_tokens": ",".join(map(str, snaps))} if r == 0 and snaps else {}),
        )
        for r in range(p.pretrain_seeds)
    ]
    sizes = {
        (n, r): g.pretrain(p.deep, n, r, {"deep": True, "size": n, "pseed": r})
        for r in range(p.size_seeds)
        for n in p.corpus_sizes
        if n != p.main_corpus
    }
    # C2 the paper's way: the same number of epochs over every subset (role deep_epochs, its own init name)
    by_epochs = {
        (n, r): g.pretrain(
            p.deep, n, r, {"deep_epochs": True, "size": n, "pseed": r}, epochs=p.c2_epochs, max_tokens=None
        )
        for r in range(p.size_seeds if p.c2_epochs else 0)
        for n in p.corpus_sizes
    }
    ctl = p.controlled
    ctl_pre = {}
    if ctl is not None:
        ctl_pre = {
            (d, r): g.pretrain(
                p.deep,
                ctl.num_articles,
                r,
                {"deep": True, "selection": d, "size": ctl.num_articles, "pseed": r},
                selection=d,
                selection_task=ctl.task,
                selection_pool=ctl.pool,
                **p.controlled_pretrain,
            )
            for r in range(ctl.seeds)
            for d in ("high", "low")
        }
    members = [
        g.pretrain(p.member_model(i), p.main_corpus, i, {"member": i}, **p.member_pretrain)
        for i in range(p.members)
    ]
    for task in tasks:
        _task_finetunes(g, task, seeds, main, sizes, ctl_pre, members, snaps)
        for (n, r), j in by_epochs.items():
            for seed in range(r * seeds, (r + 1) * seeds):
                g.finetune(j, task, seed, {"init": "pretrained-epochs", "size": n, "pseed": r}, p.poolings[0])
    _committees(g, tasks)
    _measurements(g, tasks)
    return g.jobs


def _task_finetunes(
    g: GridBuilder,
    task: str,
    seeds: int,
    main: list[Job],
    sizes: dict[tuple[int, int], Job],
    ctl_pre: dict[tuple[str, int], Job],
    members: list[Job],
    snaps: list[int],
) -> None:
    """A task's fine-tunings. Replicate r (pre-training seed r of the main corpus) fine-tunes both arms
    with seeds r·F … r·F+F−1 (F = `seeds`), every head; replicate r of another size uses the same seeds
    and the first head; the controlled corpora and the members use replicate 0's seeds and the first head;
    E0 fine-tunes seeds 0 … e0.seeds−1 at the finetune section's lr."""
    p, pl0 = g.p, g.p.poolings[0]
    for r, pre in enumerate(main):
        for seed in range(r * seeds, (r + 1) * seeds):
            for pl in p.poolings:
                g.finetune(None, task, seed, {"init": "scratch"}, pl)
                g.finetune(pre, task, seed, {"init": "pretrained", "size": p.main_corpus, "pseed": r}, pl)
    for (n, r), j in sizes.items():
        for seed in range(r * seeds, (r + 1) * seeds):
            g.finetune(j, task, seed, {"init": "pretrained", "size": n, "pseed": r}, pl0)
    for seed in range(seeds):
        if p.controlled is not None and task == p.controlled.task:
            for (d, r), j in ctl_pre.items():
                g.finetune(j, task, seed, {"init": "controlled", "selection": d, "pseed": r}, pl0)
    for i, j in enumerate(members):
        g.finetune(j, task, 0, {"init": "member", "member": i}, pl0)
    if p.e0 is not None and task in p.e0.tasks:
        _e0_finetunes(g, task, main[0], snaps)


def _e0_finetunes(g: GridBuilder, task: str, pre: Job, snaps: list[int]) -> None:
    """E0: scratch, the finished run and every snapshot, per fine-tuning seed and head, at one lr."""
    assert g.p.e0 is not None
    for seed in range(g.p.e0.seeds):
        for pl in g.p.poolings:
            g.finetune(None, task, seed, {"init": "scratch"}, pl, sweep=False)
            final = {"init": "pretrained", "size": g.p.main_corpus, "pseed": 0}
            g.finetune(pre, task, seed, final, pl, sweep=False)
            for n in snaps:
                g.finetune(pre, task, seed, {"init": "snapshot", "tokens": n}, pl, snapshot=n, sweep=False)


def _committees(g: GridBuilder, tasks: list[str]) -> None:
    """Per task: the members' soft committee next to the deep model (replicate 0, first head)."""
    p, pl0 = g.p, g.p.poolings[0]
    ft = [j for j in g.jobs if j.kind == "finetune"]
    for task in tasks:
        groups = [
            by_role(ft, "finetune", task=task, init="member", member=i, pooling=pl0, e0=None)
            for i in range(p.members)
        ]
        groups.append(
            by_role(
                ft,
                "finetune",
                task=task,
                init="pretrained",
                size=p.main_corpus,
                pseed=0,
                seed=0,
                pooling=pl0,
                e0=None,
            )
        )
        empty = [i for i, grp in enumerate(groups) if not grp]
        if empty:  # a guard: every member and the reference have their own jobs by construction
            raise ConfigError([f"committee on {task}: no fine-tuning job for part(s) {empty}"], "the grid")
        settings = {
            "task": task,
            "rule": "mean_prob",
            "orderings": 20,
            "seed": 0,
            "group_sizes": [len(grp) for grp in groups],
        }
        g.add(make_job("committee", settings, {"task": task}, [j for grp in groups for j in grp]))


def _measurements(g: GridBuilder, tasks: list[str]) -> None:
    """The overlap job (E3) and the latency job (E4, run alone)."""
    p = g.p
    overlap = {
        "sizes": sorted(p.corpus_sizes),
        "tasks": tasks,
        "samples": {t: p.samples[t] for t in tasks},
        "max_length": p.max_length,
        "eval_articles": p.eval_articles,
        "corpus_seed": PAPER_CORPUS_SEED,
    }
    g.add(make_job("overlap", overlap, {}))
    latency = {
        "k": p.latency.k,
        "batch": p.latency.batch,
        "precision": p.latency.precision,
        "reps": p.latency.reps,
        "max_length": p.max_length,
    }
    if not p.latency.onnx:
        latency["onnx"] = False
    g.add(make_job("latency", latency, {}, exclusive=True))


def validate_jobs(jobs: list[Job]) -> None:
    """Build every training job's settings as its command would, so that a typo in a preset's pretrain or
    finetune section is reported (all of them at once) before the first job runs."""
    found: dict[tuple[str, str], int] = {}
    for j in jobs:
        if j.kind not in RECIPES:
            continue
        try:
            settings = j.settings | (
                {"init": "scratch"} if j.kind == "finetune" else {}
            )  # init: a job id here
            RECIPES[j.kind].build(settings, source=j.id)
        except ConfigError as e:
            for p in e.problems:
                found[(j.kind, p)] = found.get((j.kind, p), 0) + 1
    if found:  # one line per problem, with how many jobs share it (a preset section typo hits them all)
        raise ConfigError(
            [f"{k} section ({n} job(s)): {p}" for (k, p), n in sorted(found.items())], "the preset"
        )


def by_role(jobs: list[Job], kind: str, **role: Any) -> list[Job]:
    """The jobs of `kind` whose role has these values, ordered by seed (then member)."""
    found = [j for j in jobs if j.kind == kind and all(j.role.get(k) == v for k, v in role.items())]
    return sorted(found, key=lambda j: (j.role.get("seed", 0), j.role.get("member", 0)))
