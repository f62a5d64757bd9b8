"""The grid of `tinylm reproduce`: every run of E1–E4 as a job with a key, settings and dependencies.

Job kinds:

* `pretrain`: the deep model on every nested corpus size; the shallow committee members (independent
  seeds, cycling over the preset's architectures) on the main size; the deep model on the high- and
  low-overlap corpora of the controlled task;
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

from tinylm.config import CorpusConfig, ModelConfig, RunConfig, TaskConfig, TrainConfig, build_sections
from tinylm.errors import ConfigError
from tinylm.fileio import stable_hash
from tinylm.paper.presets import Preset
from tinylm.registry import PAPER_CORPUS_SEED
from tinylm.runs import NON_IDENTITY_KEYS

KINDS = ("pretrain", "finetune", "overlap", "committee", "latency")

#: The settings sections each training kind is built from (what `tinylm pretrain` / `finetune` take).
SECTIONS: dict[str, dict[str, type]] = {
    "pretrain": {"model": ModelConfig, "train": TrainConfig, "corpus": CorpusConfig, "run": RunConfig},
    "finetune": {"model": ModelConfig, "train": TrainConfig, "task": TaskConfig, "run": RunConfig},
}


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
) -> Job:
    """A job keyed by its kind, its identity-defining settings and its dependencies' ids. A fine-tuning
    job's `init` is its pre-training dependency (its id stands in the key for the path)."""
    deps = deps or []
    key = {k: v for k, v in settings.items() if k not in NON_IDENTITY_KEYS | {"init"}} | {"kind": kind}
    if kind == "finetune":
        if deps:
            key["init"] = deps[0].id
        elif "init" in settings:
            key["init"] = settings["init"]
    elif deps:
        key["deps"] = [d.id for d in deps]
    job = Job(kind, dict(settings), [d.id for d in deps], role, exclusive=exclusive)
    job.id = f"{kind}-{stable_hash(key, 12)}"
    return job


class GridBuilder:
    """Builds the jobs of a preset in dependency order."""

    def __init__(self, p: Preset):
        self.p = p
        self.jobs: list[Job] = []
        self.pre_common = p.pretrain | {
            "max_length": p.max_length,
            "eval_articles": p.eval_articles,
            "precision": p.precision,
        }
        self.ft_common = p.finetune | {"precision": p.precision}

    def add(self, job: Job) -> Job:
        self.jobs.append(job)
        return job

    def pretrain(self, model: dict[str, Any], n: int, seed: int, role: dict[str, Any], **extra: Any) -> Job:
        settings = self.pre_common | model | {"num_articles": n, "seed": seed} | extra
        return self.add(make_job("pretrain", settings, role))

    def finetune(self, init: Job | None, task: str, seed: int, role: dict[str, Any]) -> list[Job]:
        """One fine-tuning job, or one per learning rate of the preset's sweep (chosen on validation
        later)."""
        train, test = self.p.samples[task]
        settings = self.ft_common | {
            "task": task,
            "seed": seed,
            "samples_per_label_train": train,
            "samples_per_label_test": test,
        }
        settings |= ({"init": "scratch"} | self.p.deep) if init is None else {"init": init.id}
        role = role | {"task": task, "seed": seed}
        sweep = [(settings | {"lr": lr}, role | {"lr": lr}) for lr in self.p.finetune_lrs] or [
            (settings, role)
        ]
        return [self.add(make_job("finetune", s, r, [init] if init else [])) for s, r in sweep]


def build_grid(p: Preset, tasks: list[str], seeds: int) -> list[Job]:
    """Every job of E1–E4 for a preset, in dependency order."""
    g = GridBuilder(p)
    deep = {"deep": True}
    pre_by_size = {n: g.pretrain(p.deep, n, 0, deep | {"size": n}) for n in p.corpus_sizes}
    ctl = p.controlled
    ctl_pre = {
        d: g.pretrain(
            p.deep,
            ctl.num_articles,
            0,
            deep | {"selection": d, "size": ctl.num_articles},
            selection=d,
            selection_task=ctl.task,
            selection_pool=ctl.pool,
        )
        for d in ("high", "low")
    }
    members = [g.pretrain(p.member_model(i), p.main_corpus, i, {"member": i}) for i in range(p.members)]
    for task in tasks:
        for seed in range(seeds):
            g.finetune(None, task, seed, {"init": "scratch"})
            for n, j in pre_by_size.items():
                g.finetune(j, task, seed, {"init": "pretrained", "size": n})
            if task == ctl.task:
                for d, j in ctl_pre.items():
                    g.finetune(j, task, seed, {"init": "controlled", "selection": d})
        for i, j in enumerate(members):
            g.finetune(j, task, 0, {"init": "member", "member": i})
    ft = [j for j in g.jobs if j.kind == "finetune"]
    for task in tasks:
        groups = [by_role(ft, "finetune", task=task, init="member", member=i) for i in range(p.members)]
        groups.append(by_role(ft, "finetune", task=task, init="pretrained", size=p.main_corpus, seed=0))
        settings = {
            "task": task,
            "rule": "mean_prob",
            "orderings": 20,
            "seed": 0,
            "group_sizes": [len(grp) for grp in groups],
        }
        g.add(make_job("committee", settings, {"task": task}, [j for grp in groups for j in grp]))
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
    g.add(make_job("latency", latency, {}, exclusive=True))
    return g.jobs


def validate_jobs(jobs: list[Job]) -> None:
    """Build every training job's settings as its command would, so that a typo in a preset's pretrain or
    finetune section is reported (all of them at once) before the first job runs."""
    problems: list[str] = []
    for j in jobs:
        if j.kind not in SECTIONS:
            continue
        try:
            settings = j.settings | (
                {"init": "scratch"} if j.kind == "finetune" else {}
            )  # init: a job id here
            build_sections(SECTIONS[j.kind], settings, source=j.id)
        except ConfigError as e:
            problems += [f"{j.kind} job {j.role}: {p}" for p in e.problems]
    if problems:
        raise ConfigError(sorted(set(problems)), "the preset's grid")


def by_role(jobs: list[Job], kind: str, **role: Any) -> list[Job]:
    """The jobs of `kind` whose role has these values, ordered by seed (then member)."""
    found = [j for j in jobs if j.kind == kind and all(j.role.get(k) == v for k, v in role.items())]
    return sorted(found, key=lambda j: (j.role.get("seed", 0), j.role.get("member", 0)))
