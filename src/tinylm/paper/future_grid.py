"""The jobs of the paper's future work in a `tinylm reproduce` grid (E5, E6, distillation).

* E5 — a `select` job per task writes its task-specific corpus (`tinylm corpus select`); the E5 model is
  pre-trained on each selected corpus and on the generic nested corpus at each budget fraction, and every
  one is fine-tuned on every E5 task next to a scratch E5 model (`init: scratch-e5`).
* E6 — an `ensemble` job per task (run alone: it times) evaluates committees of k members of each
  architecture and of mixes of all, from the member pool's fine-tunings, with the deep model beside them.
* Distillation — a `teacher` job saves the pool's committee per task; a student (member 0's pre-trained
  weights) is fine-tuned on its soft probabilities (`init: distill`; with `distill.unlabelled`, a second
  one also on E5's selected corpus as unlabelled text); a `distill` job (run alone) compares students,
  committee, members and the deep model on the same test items.
"""

from __future__ import annotations

from tinylm.paper.jobs import GridBuilder, Job, by_role, make_job
from tinylm.registry import PAPER_CORPUS_SEED


def add_e5(g: GridBuilder, tasks: list[str], seeds: int) -> None:
    """E5's selections, pre-trainings and fine-tunings (replicate r fine-tuned with seeds r·F … r·F+F−1)."""
    p, e5 = g.p, g.p.e5
    if e5 is None:
        return
    e5_tasks = [t for t in e5.tasks if t in tasks]
    select = {
        t: g.add(
            make_job(
                "select",
                {
                    "task": t,
                    "pool": e5.pool,
                    "articles": e5.articles,
                    "eval_articles": p.eval_articles,
                    "metric": e5.metric,
                    "seed": PAPER_CORPUS_SEED,
                    "max_length": p.max_length,
                    "samples": p.samples[t],
                    # the chosen corpus's overlap with every E5 task (E5's metric correlations)
                    "overlap_with": {u: p.samples[u] for u in e5_tasks},
                },
                {"e5_select": t},
            )
        )
        for t in e5_tasks
    }
    corpora: dict[str, Job | None] = {"generic": None} | select
    for name, sel in corpora.items():
        for f in e5.fractions:
            for r in range(e5.seeds):
                extra = e5.pretrain | {"max_tokens": int(e5.tokens * f)}
                if sel is not None:
                    extra["corpus"] = f"file:{sel.id}/corpus"
                n = p.main_corpus if sel is None else e5.articles
                role = {"e5": name, "fraction": f, "pseed": r}
                pre = g.pretrain(e5.model, n, r, role, [sel] if sel else None, **extra)
                for t in e5_tasks:
                    for seed in range(r * seeds, (r + 1) * seeds):
                        g.finetune(
                            pre,
                            t,
                            seed,
                            {"init": "e5", "corpus": name, "fraction": f, "pseed": r},
                            p.poolings[0],
                        )
    for t in e5_tasks:
        for seed in range(e5.seeds * seeds):
            g.finetune(None, t, seed, {"init": "scratch-e5"}, p.poolings[0], scratch_model=e5.model)


def member_groups(g: GridBuilder, task: str) -> list[list[Job]]:
    """Per member of the pool, its fine-tuning runs on `task` (an lr sweep), then the deep model's
    (replicate 0, seed 0, first head)."""
    p, pl0 = g.p, g.p.poolings[0]
    groups = [
        by_role(g.jobs, "finetune", task=task, init="member", member=i, pooling=pl0, e0=None)
        for i in range(p.member_pool)
    ]
    deep = {"init": "pretrained", "size": p.main_corpus, "pseed": 0, "seed": 0}
    groups.append(by_role(g.jobs, "finetune", task=task, pooling=pl0, e0=None, **deep))
    assert all(groups), f"{task}: a member or the deep model has no fine-tuning job"
    return groups


def add_e6(g: GridBuilder, tasks: list[str]) -> None:
    """Per E6 task, one ensemble job over the whole member pool and the deep model."""
    p, e6 = g.p, g.p.e6
    if e6 is None:
        return
    for t in [t for t in e6.tasks if t in tasks]:
        groups = member_groups(g, t)
        settings = {
            "task": t,
            "architectures": len(p.shallow),
            "per_arch": e6.per_arch,
            "batch": e6.batch,
            "reps": e6.reps,
            "max_length": p.max_length,
            "orderings": 20,
            "seed": 0,
            "group_sizes": [len(grp) for grp in groups],
        }
        deps = [j for grp in groups for j in grp]
        g.add(make_job("ensemble", settings, {"task": t, "e6": True}, deps, exclusive=True))


def add_distill(g: GridBuilder, tasks: list[str], members: list[Job]) -> None:
    """Per distillation task: the teacher committee, the student's fine-tunings, the comparison."""
    p, d = g.p, g.p.distill
    if d is None:
        return
    for t in [t for t in d.tasks if t in tasks]:
        groups = member_groups(g, t)
        pool = [j for grp in groups[:-1] for j in grp]
        sizes = [len(grp) for grp in groups[:-1]]
        teacher = g.add(
            make_job("teacher", {"task": t, "group_sizes": sizes}, {"task": t, "teacher": True}, pool)
        )
        extra = {
            "teacher": f"{teacher.id}/committee",
            "distill_temperature": d.temperature,
            "distill_alpha": d.alpha,
        }
        students = {
            "student": g.finetune(
                members[0], t, 0, {"init": "distill"}, p.poolings[0], extra=extra, deps=[teacher]
            )
        }
        select = by_role(g.jobs, "select", e5_select=t)
        if d.unlabelled and select:
            text = extra | {"distill_unlabelled": f"file:{select[0].id}/corpus"}
            role = {"init": "distill", "unlabelled": True}
            students["student+text"] = g.finetune(
                members[0], t, 0, role, p.poolings[0], extra=text, deps=[teacher, select[0]]
            )
        settings = {
            "task": t,
            "students": list(students),
            "group_sizes": [*(len(j) for j in students.values()), *sizes, len(groups[-1])],
            "max_length": p.max_length,
        }
        deps = [j for js in students.values() for j in js] + pool + groups[-1]
        g.add(make_job("distill", settings, {"task": t, "distill": True}, deps, exclusive=True))
