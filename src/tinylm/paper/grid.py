"""The grid of `tinylm reproduce`: every run of E0–E4 as a job with settings, a role and dependencies (the
future work's jobs come from `future_grid`; keys and the builder from `jobs`).

Job kinds:

* `pretrain`: the deep model on every nested corpus size; the shallow committee members (independent
  seeds, cycling over the preset's architectures; E6's pool extends E4's) on the main size; the deep
  model on the high- and low-overlap corpora of the controlled task (`controlled.seeds` replicates each);
* `finetune`: every pre-trained deep model and the scratch control, per task and seed; the members per
  task (seed 0); the controlled corpora on their task, per seed;
* `overlap`: token overlap of every nested corpus size with every task's training samples (E3);
* `committee`: the members' soft committee per task, next to the deep model (E4);
* `latency`: inference latency of the deep model, one member and committees (E4; runs alone);
* `select`, `ensemble`, `teacher`, `distill`: E5, E6 and the distillation (`future_grid`).

Every job is validated before the first runs.
"""

from __future__ import annotations

from typing import Any

from tinylm.errors import ConfigError
from tinylm.paper.future_grid import add_distill, add_e5, add_e6
from tinylm.paper.jobs import GridBuilder, Job, by_role, make_job
from tinylm.paper.presets import Preset
from tinylm.registry import PAPER_CORPUS_SEED
from tinylm.settings import RECIPES


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
    snap_setting: dict[str, Any] = {"snapshot_tokens": ",".join(map(str, snaps))} if snaps else {}
    main = [
        g.pretrain(
            p.deep,
            p.main_corpus,
            r,
            {"deep": True, "size": p.main_corpus, "pseed": r},
            **(snap_setting if r == 0 else {}),
        )
        for r in range(p.pretrain_seeds)
    ]
    sizes = {
        (n, r): g.pretrain(p.deep, n, r, {"deep": True, "size": n, "pseed": r})
        for r in range(p.size_seeds)
        for n in p.corpus_sizes
        if n != p.main_corpus
    }
    by_epochs = _c2_epoch_pretrains(g)
    ctl_pre = _controlled_pretrains(g)
    reseeds: dict[str, Any] = (
        {"gate_reseeds": p.member_reseeds, "gate_nats": p.gate_nats} if p.member_reseeds else {}
    )
    members = [
        g.pretrain(p.member_model(i), p.main_corpus, i, {"member": i}, **p.member_pretrain, **reseeds)
        for i in range(p.member_pool)
    ]
    for task in tasks:
        _task_finetunes(g, task, seeds, main, sizes, ctl_pre, members, snaps)
        for (n, r), j in by_epochs.items():
            for seed in range(r * seeds, (r + 1) * seeds):
                g.finetune(j, task, seed, {"init": "pretrained-epochs", "size": n, "pseed": r}, p.poolings[0])
    add_e5(g, tasks, seeds)
    _committees(g, tasks)
    add_e6(g, tasks)
    add_distill(g, tasks, members)
    _measurements(g, tasks)
    return g.jobs


def _c2_epoch_pretrains(g: GridBuilder) -> dict[tuple[int, int], Job]:
    """C2 the paper's way: the same number of epochs over every nested subset (role deep_epochs, its own
    init name), `c2_epochs` of them, or the main run's (`c2_epochs_of_main`: tokens ∝ articles, the main
    size's arm being the main run, whose fine-tunings C2-epochs then reads under their own role)."""
    p = g.p
    if not p.c2_by_epochs:
        return {}
    out = {}
    for r in range(p.size_seeds):
        for n in p.corpus_sizes:
            if p.c2_epochs_reuses_main(n):
                continue
            budget: dict[str, Any] = (
                {"max_tokens": int(p.pretrain["max_tokens"]) * n // p.main_corpus}
                if p.c2_epochs_of_main
                else {"epochs": p.c2_epochs, "max_tokens": None}
            )
            out[n, r] = g.pretrain(p.deep, n, r, {"deep_epochs": True, "size": n, "pseed": r}, **budget)
    return out


def _controlled_pretrains(g: GridBuilder) -> dict[tuple[str, int], Job]:
    """E3's controlled corpora: the deep model on the high- and low-overlap selections, per replicate."""
    p, ctl = g.p, g.p.controlled
    if ctl is None:
        return {}
    return {
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
    for i, j in enumerate(members):  # E4's members and E6's pool
        g.finetune(j, task, 0, {"init": "member", "member": i}, pl0)
    if p.e0 is not None and task in p.e0.tasks:
        _e0_finetunes(g, task, main[0], snaps)


def _e0_finetunes(g: GridBuilder, task: str, pre: Job, snaps: list[int]) -> None:
    """E0: scratch, the finished run and every snapshot, per fine-tuning seed and E0 head, at one lr."""
    assert g.p.e0 is not None
    for seed in range(g.p.e0.seeds):
        for pl in g.p.e0.heads(g.p.poolings):
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
            settings = j.run_settings() | (
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
