"""The building blocks of a `tinylm reproduce` grid: a job, its key, and the builder that adds each job once.

A job's id is its kind and a hash of its settings and of its dependencies' ids, so finished jobs are
reused and an interrupted grid resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tinylm.fileio import stable_hash
from tinylm.paper.presets import Preset
from tinylm.runs import NON_IDENTITY_KEYS

KINDS = (
    "pretrain",
    "finetune",
    "overlap",
    "committee",
    "latency",
    "select",
    "ensemble",
    "teacher",
    "distill",
)

#: Job settings that steer the grid, not the run (left out of what the job's command is given): a
#: member pre-training's re-seeds below the adequacy gate (`paper.reseed`).
GRID_ONLY = frozenset({"gate_reseeds", "gate_nats"})


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
    #: the other roles the same run serves (the same settings asked for twice: trained once)
    also: list[dict[str, Any]] = field(default_factory=list)

    def roles(self) -> list[dict[str, Any]]:
        return [self.role, *self.also]

    def run_settings(self) -> dict[str, Any]:
        """The settings the job's command runs with: its settings without the grid's own (GRID_ONLY)."""
        return {k: v for k, v in self.settings.items() if k not in GRID_ONLY}


def make_job(
    kind: str,
    settings: dict[str, Any],
    role: dict[str, Any],
    deps: list[Job] | None = None,
    exclusive: bool = False,
) -> Job:
    """A job keyed by its kind, its identity-defining settings and its dependencies' ids, not its role: the
    same run asked for in two roles is one job. A fine-tuning job's `init` is its pre-training dependency
    (its id stands in the key for the path)."""
    deps = deps or []
    key = {k: v for k, v in settings.items() if k not in NON_IDENTITY_KEYS | {"init"}} | {"kind": kind}
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
    """Builds the jobs of a preset in dependency order; a job built twice (same id) is kept once, with
    every role it was asked for (e.g. E5's generic corpus at seed 0 is committee member 0)."""

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
            kept = self.by_id[job.id]
            if job.role not in kept.roles():
                kept.also.append(job.role)
            return kept
        self.jobs.append(job)
        self.by_id[job.id] = job
        return job

    def pretrain(
        self,
        model: dict[str, Any],
        n: int,
        seed: int,
        role: dict[str, Any],
        deps: list[Job] | None = None,
        **extra: Any,
    ) -> Job:
        """One pre-training (`deps`: e.g. the job that writes its corpus). The same settings asked for in
        another role (a committee member that is also E5's generic model) are the same run, trained once."""
        settings = self.pre_common | model | {"num_articles": n, "seed": seed} | extra
        return self.add(make_job("pretrain", settings, role, deps))

    def finetune(
        self,
        init: Job | None,
        task: str,
        seed: int,
        role: dict[str, Any],
        pooling: str,
        snapshot: int | None = None,
        sweep: bool = True,
        scratch_model: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        deps: list[Job] | None = None,
    ) -> list[Job]:
        """One fine-tuning job, or one per learning rate of the preset's sweep (chosen on validation
        later); `snapshot` fine-tunes the pre-training run's model kept at that many tokens; `init` None:
        from scratch, with `scratch_model` (default: the deep model); `extra`: settings over the job's
        (a teacher, as a job path relative to OUT/runs, among `deps`)."""
        train, test = self.p.samples[task]
        settings = self.ft_common | {
            "task": task,
            "seed": seed,
            "samples_per_label_train": train,
            "samples_per_label_test": test,
            "pooling": pooling,
        }
        if init is None:
            settings |= {"init": "scratch"} | (scratch_model or self.p.deep)
        else:
            settings["init"] = init.id if snapshot is None else f"{init.id}/snapshots/tokens-{snapshot}"
        role = role | {"task": task, "seed": seed, "pooling": pooling}
        lrs = self.p.finetune_lrs if sweep else []
        runs = [(settings | {"lr": lr}, role | {"lr": lr}) for lr in lrs] or [
            (settings, role | {"lr": settings.get("lr")} | ({} if sweep else {"e0": True}))
        ]
        needs = ([init] if init else []) + (deps or [])
        return [self.add(make_job("finetune", s | (extra or {}), r, needs)) for s, r in runs]


def by_role(jobs: list[Job], kind: str, **role: Any) -> list[Job]:
    """The jobs of `kind` with a role that has these values, ordered by seed (then member); a job found by
    one of its other roles comes back as a copy whose `role` is that one (same id, same run)."""
    found = []
    for j in jobs:
        if j.kind != kind:
            continue
        roles = j.roles()
        match = next((r for r in roles if all(r.get(k) == v for k, v in role.items())), None)
        if match is not None:
            others = [r for r in roles if r is not match]
            found.append(j if match is j.role else dataclasses.replace(j, role=match, also=others))
    return sorted(found, key=lambda j: (j.role.get("seed", 0), j.role.get("member", 0)))
