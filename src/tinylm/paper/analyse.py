"""E1–E4 from the jobs' results.json files alone: tables, tests and a rule-based verdict per claim.

Everything here depends only on the grid's seeds (identical when a grid is resumed or rerun); nothing
is trained, tokenized or timed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.finetune import validation_score
from tinylm.paper.jobs import Job, by_role
from tinylm.paper.presets import Preset
from tinylm.paper.reseed import attempts_set_aside, passes
from tinylm.paper.stats import (
    fixed_effects_test,
    mcnemar_exact,
    mean_std,
    paired_bootstrap_ci,
    paired_test,
    pearson,
)

ALPHA = 0.05
VERDICTS = ("holds", "does not hold", "inconclusive", "not tested")


class Results:
    """The results.json of every job of a grid, looked up by job or by role."""

    def __init__(self, out: Path, jobs: list[Job]):
        self.out = out
        self.jobs = jobs
        self.by_id: dict[str, dict[str, Any]] = {
            j.id: json.loads((out / "runs" / j.id / "results.json").read_text()) for j in jobs
        }

    def of(self, job: Job) -> dict[str, Any]:
        return self.by_id[job.id]

    def accuracy(self, job: Job, which: str = "final_epoch") -> float:
        """Test accuracy: of the epoch chosen on validation when the run has a validation split, else of the
        final (or best) epoch."""
        res = self.by_id[job.id]
        if which == "final_epoch" and "test" in res:
            return float(res["test"]["accuracy"])
        return float(res[which]["accuracy"])

    def finetunes(self, task: str, **role: Any) -> list[Job]:
        """Fine-tuning jobs with this role (E0's extra jobs excluded); of a learning-rate sweep, the rate
        chosen on validation."""
        jobs = by_role(self.jobs, "finetune", task=task, e0=None, **role)
        return choose_by_validation(jobs, self.by_id)

    def one(self, kind: str, **role: Any) -> Job:
        return by_role(self.jobs, kind, **role)[0]


def choose_by_validation(jobs: list[Job], results: dict[str, dict[str, Any]]) -> list[Job]:
    """One job per role without its learning rate: the rate with the best validation score (ties: the
    first)."""
    chosen: dict[str, Job] = {}
    for j in jobs:
        key = json.dumps({k: v for k, v in j.role.items() if k != "lr"}, sort_keys=True)
        if key not in chosen or validation_score(results[j.id]) > validation_score(results[chosen[key].id]):
            chosen[key] = j
    return list(chosen.values())


def verdict_from_test(test: dict[str, Any], task_means: list[float]) -> str:
    """A symmetric rule: holds if the mean is > 0 with one-sided p(> 0) < α and every task's mean is > 0;
    does not hold if the mean is < 0 with one-sided p(< 0) < α and every task's mean is < 0; otherwise
    inconclusive."""
    if test.get("p_greater") is None:
        return "inconclusive"
    if test["mean"] > 0 and test["p_greater"] < ALPHA and all(m > 0 for m in task_means):
        return "holds"
    if test["mean"] < 0 and test["p_less"] < ALPHA and all(m < 0 for m in task_means):
        return "does not hold"
    return "inconclusive"


def decision(test: dict[str, Any], task_means: list[float], name: str) -> dict[str, Any]:
    """The verdict with the test that decided it, its one-sided p (in the direction of the mean) and the
    effect in percentage points."""
    p = test.get("p_greater") if test["mean"] >= 0 else test.get("p_less")
    return {
        "verdict": verdict_from_test(test, task_means),
        "test": name,
        "p": p,
        "effect_pp": 100 * test["mean"],
    }


def gate_models(r: Results, gate_nats: float) -> list[dict[str, Any]]:
    """Every pre-trained model with its held-out MLM loss next to the unigram baseline of the same targets;
    passed = at least `gate_nats` below it."""
    out = []
    for j in r.jobs:
        if j.kind != "pretrain":
            continue
        res = r.of(j)
        ev = res.get("final_eval", {})
        loss, uni = ev.get("mlm_loss"), ev.get("unigram_loss")
        passed = passes(res, gate_nats)
        out.append(
            {
                "run": j.id,
                "role": j.role,
                "also": j.also,  # the other roles the same run serves
                "tokens": res.get("tokens"),
                "mlm_loss": loss,
                "unigram_loss": uni,
                "passed": passed,
                # earlier attempts below the gate, replaced by this run (`member_reseeds`)
                "set_aside": attempts_set_aside(r.out / "runs", j),
            }
        )
    return out


def claim_uses(claim: str, role: dict[str, Any], p: Preset) -> bool:
    """Whether a claim's verdict depends on the pre-trained model with this role."""
    deep_main = bool(role.get("deep")) and "selection" not in role and role.get("size") == p.main_corpus
    if claim.startswith("C1"):
        return deep_main
    if claim == "C2":
        return bool(role.get("deep")) and "selection" not in role
    if claim == "C2-epochs":
        # under equal epochs a smaller subset trains for fewer tokens: its model may stay on the plateau by
        # design (the report shows each size's nats below unigram), so the gate holds the main size's arm
        # and larger ones to adequacy
        main_arm = deep_main and p.c2_epochs_of_main and role.get("pseed", 0) < p.size_seeds
        return main_arm or (bool(role.get("deep_epochs")) and role.get("size", 0) >= p.main_corpus)
    if claim == "C3":
        return "selection" in role
    member: int = role.get("member", p.members)
    return (deep_main and role.get("pseed", 0) == 0) or member < p.members


def apply_gate(decisions: dict[str, dict[str, Any]], models: list[dict[str, Any]], p: Preset) -> None:
    """A claim whose pre-trained models do not all pass the gate gets 'not tested' (its test is kept)."""
    for claim in decisions:
        failed = [
            m["run"]
            for m in models
            if any(claim_uses(claim, role, p) for role in [m["role"], *m.get("also", [])]) and not m["passed"]
        ]
        if failed and decisions[claim]["verdict"] != "not tested":
            decisions[claim] |= {"verdict": "not tested", "gate_failed": failed}


def _e1_head(r: Results, p: Preset, tasks: list[str], pooling: str) -> dict[str, Any]:
    """C1 for one head. Replicate k = pre-training seed k with its own fine-tuning seeds (both arms); a
    replicate's gap is the mean over its fine-tuning seeds. With ≥ 2 replicates the test has tasks as
    fixed effects and replicates as the unit; with one, the (task, seed) gaps are pooled (pseudo-replicated:
    said so in the test's name)."""
    head: dict[str, Any] = {"pooling": pooling, "tasks": {}}
    units: dict[str, list[float]] = {}
    all_gaps: list[float] = []
    for task in tasks:
        pre = r.finetunes(task, init="pretrained", size=p.main_corpus, pooling=pooling)
        scr = {j.role["seed"]: j for j in r.finetunes(task, init="scratch", pooling=pooling)}
        pairs = [(a, scr[a.role["seed"]]) for a in pre]
        gaps = [r.accuracy(a) - r.accuracy(b) for a, b in pairs]
        all_gaps += gaps
        by_rep: dict[int, list[float]] = {}
        for (a, _), gap in zip(pairs, gaps, strict=True):
            by_rep.setdefault(a.role["pseed"], []).append(gap)
        units[task] = [float(np.mean(v)) for _, v in sorted(by_rep.items())]
        head["tasks"][task] = {
            "pretrained": [r.accuracy(a) for a, _ in pairs],
            "scratch": [r.accuracy(b) for _, b in pairs],
            "pretrained_best_epoch": [r.accuracy(a, "best_epoch") for a, _ in pairs],
            "scratch_best_epoch": [r.accuracy(b, "best_epoch") for _, b in pairs],
            "seeds": [a.role["seed"] for a, _ in pairs],
            "pretrain_seeds": [a.role["pseed"] for a, _ in pairs],
            "lrs": [[a.role.get("lr"), b.role.get("lr")] for a, b in pairs],
            "gaps": gaps,
            "replicate_gaps": units[task],
            "test": paired_test(gaps),
        }
    if p.pretrain_seeds >= 2:
        head["pooled_test"] = fixed_effects_test(units)
        name = (
            f"t-test over {p.pretrain_seeds} pre-training replicates × {len(tasks)} tasks (tasks as fixed "
            "effects), one-sided"
        )
    else:
        head["pooled_test"] = paired_test(all_gaps)
        name = "paired t-test over (task, fine-tuning seed) gaps of one pre-training run (pseudo-replicated)"
    head["decision"] = decision(head["pooled_test"], [float(np.mean(u)) for u in units.values()], name)
    head["verdict"] = head["decision"]["verdict"]
    return head


def analyse_e1(r: Results, p: Preset, tasks: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """C1: pre-trained (main corpus) vs scratch, per head (the first head decides C1; the others are
    reported as C1-<head>); also the first head's per-epoch curves for the figure."""
    heads = {pl: _e1_head(r, p, tasks, pl) for pl in p.poolings}
    e1: dict[str, Any] = {"corpus_size": p.main_corpus} | heads[p.poolings[0]]
    e1["heads"] = heads
    curves: dict[str, Any] = {}
    for task in tasks:
        pre = r.finetunes(task, init="pretrained", size=p.main_corpus, pooling=p.poolings[0], pseed=0)
        seeds = {j.role["seed"] for j in pre}
        scr = [j for j in r.finetunes(task, init="scratch", pooling=p.poolings[0]) if j.role["seed"] in seeds]
        curves[task] = {
            label: [[e["accuracy"] for e in r.of(j)["per_epoch"]] for j in js]
            for label, js in (("pre-trained", pre), ("scratch", scr))
        }
    return e1, curves


def _e0_job(r: Results, lr: float | None, seed: int, **role: Any) -> Job:
    """The fine-tuning with this role and seed at the E0 learning rate."""
    return next(j for j in by_role(r.jobs, "finetune", seed=seed, **role) if j.settings.get("lr") == lr)


def analyse_e0(r: Results, p: Preset, tasks: list[str]) -> list[dict[str, Any]]:
    """E0 rows: per task, head and snapshot, the tokens seen, held-out MLM loss (and the unigram baseline)
    and the gap to scratch (same seed, same lr, same head), as the mean over e0.seeds fine-tuning seeds
    (`gap_pp_per_seed` lists them)."""
    if p.e0 is None:
        return []
    pre = r.one("pretrain", deep=True, size=p.main_corpus, pseed=0)
    res = r.of(pre)
    snaps = {s["target_tokens"]: s for s in res.get("snapshots", [])}
    final = {"tokens": res["tokens"]} | res["final_eval"]
    final_role = {"init": "pretrained", "size": p.main_corpus, "pseed": 0}
    lr0, seeds = p.finetune.get("lr"), range(p.e0.seeds)
    rows = []
    for task in [t for t in p.e0.tasks if t in tasks]:
        for pl in p.e0.heads(p.poolings):
            scratch = [r.accuracy(_e0_job(r, lr0, s, task=task, pooling=pl, init="scratch")) for s in seeds]
            points = [(snaps[n], {"init": "snapshot", "tokens": n}) for n in sorted(snaps)]
            for snap, role in [*points, (final, final_role)]:
                acc = [r.accuracy(_e0_job(r, lr0, s, task=task, pooling=pl, **role)) for s in seeds]
                gaps = [100 * (a - b) for a, b in zip(acc, scratch, strict=True)]
                rows.append(
                    {
                        "tokens": snap["tokens"],
                        "mlm_loss": snap.get("mlm_loss"),
                        "unigram_loss": snap.get("unigram_loss"),
                        "task": task,
                        "pooling": pl,
                        "seeds": len(gaps),
                        "accuracy": float(np.mean(acc)),
                        "scratch_accuracy": float(np.mean(scratch)),
                        "gap_pp": float(np.mean(gaps)),
                        "gap_pp_per_seed": gaps,
                    }
                )
    return rows


#: C2's two designs: (fine-tuning init, pre-training role key, what the sizes differ in)
C2_DESIGNS = {
    "tokens": ("pretrained", "deep", "equal training tokens: the sizes differ in diversity only"),
    "epochs": ("pretrained-epochs", "deep_epochs", "equal epochs (the paper's): larger subsets, more tokens"),
}


def analyse_e2(r: Results, p: Preset, tasks: list[str], seeds: int, design: str = "tokens") -> dict[str, Any]:
    """C2: the per-(task, pre-training replicate, seed) slope of the gap against log10(articles) over the
    nested sizes (replicate r of every size: pre-training seed r, fine-tuned with the same seeds)."""
    sizes = sorted(p.corpus_sizes)
    init, role_key, what = C2_DESIGNS[design]

    def arm(n: int) -> tuple[str, str]:  # (fine-tuning init, pre-training role key) of size n's arm
        reused = design == "epochs" and p.c2_epochs_reuses_main(n)
        return C2_DESIGNS["tokens"][:2] if reused else (init, role_key)

    e2: dict[str, Any] = {"sizes": sizes, "tasks": {}, "design": design, "design_note": what}
    if len(sizes) < 2:
        e2["decision"] = _not_run("C2 needs two or more corpus sizes; this preset pre-trains one")
        e2["verdict"] = e2["decision"]["verdict"]
        return e2
    slopes_all: list[float] = []
    pl0 = p.poolings[0]
    for task in tasks:
        scr = {j.role["seed"]: r.accuracy(j) for j in r.finetunes(task, init="scratch", pooling=pl0)}
        per_size = {
            n: {
                (ps, j.role["seed"]): r.accuracy(j) - scr[j.role["seed"]]
                for ps in range(p.size_seeds)
                for j in r.finetunes(task, init=arm(n)[0], size=n, pooling=pl0, pseed=ps)
            }
            for n in sizes
        }
        units = sorted(per_size[sizes[0]])
        slopes = [
            float(np.polyfit(np.log10(sizes), np.array([per_size[n][u] for n in sizes]), 1)[0]) for u in units
        ]
        slopes_all += slopes
        stats = [mean_std(list(per_size[n].values())) for n in sizes]
        e2["tasks"][task] = {
            "gap_mean": [m for m, _ in stats],
            "gap_std": [sd for _, sd in stats],
            "gap_n": [len(per_size[n]) for n in sizes],
            "slope_per_decade": slopes,
            "test": paired_test(slopes),
        }
    e2["pooled_test"] = paired_test(slopes_all)
    means = [float(np.mean(t["slope_per_decade"])) for t in e2["tasks"].values()]
    e2["decision"] = decision(
        e2["pooled_test"],
        means,
        f"paired t-test over (task, pre-training replicate, seed) slopes of gap vs log10(articles); "
        f"{p.size_seeds} pre-training(s) per size",
    )
    e2["verdict"] = e2["decision"]["verdict"]
    e2["pretraining_mlm"] = _c2_pretrainings(r, p, sizes, arm)
    return e2


def _c2_pretrainings(
    r: Results, p: Preset, sizes: list[int], arm: Callable[[int], tuple[str, str]]
) -> dict[str, dict[str, Any]]:
    """Per size, C2's models (pre-training seeds 0 … size_seeds−1; the main corpus's other replicates serve
    C1): the replicates' mean held-out MLM and unigram loss and epochs over the subset."""
    evs: dict[str, list[dict[str, Any]]] = {}
    for j in r.jobs:
        pre = j.kind == "pretrain" and "selection" not in j.role and j.role.get("size") in sizes
        if pre and j.role.get(arm(j.role["size"])[1]) and j.role["pseed"] < p.size_seeds:
            res = r.of(j)
            ev = res.get("final_eval", {}) | {"epochs": _epochs(res)}
            evs.setdefault(str(j.role["size"]), []).append(ev)
    keys = ("mlm_loss", "mlm_accuracy", "unigram_loss", "epochs")
    return {
        size: {k: _mean_or_none([ev.get(k) for ev in runs]) for k in keys} | {"n": len(runs)}
        for size, runs in evs.items()
    }


def _epochs(result: dict[str, Any]) -> float | None:
    """Epochs a pre-training ran: its training tokens over its corpus's."""
    tokens, corpus = result.get("tokens"), result.get("data", {}).get("tokens")
    return tokens / corpus if tokens and corpus else None


def _mean_or_none(values: list[Any]) -> float | None:
    """The mean of numbers, None when one is missing."""
    return None if not values or any(v is None for v in values) else float(np.mean(values))


def _not_run(why: str) -> dict[str, Any]:
    """The decision of a claim the preset's budget does not serve."""
    return {"verdict": "not tested", "test": why, "p": None, "effect_pp": None, "not_run": why}


def _controlled(r: Results, p: Preset) -> dict[str, Any]:
    ctl = p.controlled
    assert ctl is not None
    acc = {
        d: {
            (j.role.get("pseed", 0), j.role["seed"]): r.accuracy(j)
            for j in r.finetunes(ctl.task, init="controlled", selection=d)
        }
        for d in ("high", "low")
    }
    hi, lo = acc["high"], acc["low"]
    diffs = [hi[k] - lo[k] for k in sorted(hi)]  # pairs: (pre-training seed, fine-tuning seed)
    selection = {}
    for d in ("high", "low"):
        sel = r.of(r.one("pretrain", selection=d))["data"]["selection"]
        selection[d] = {
            k: sel[k] for k in ("rule", "mean_score", "pool_mean_score", "achieved_overlap_train")
        }
    return {
        "task": ctl.task,
        "num_articles": ctl.num_articles,
        "pool": ctl.pool,
        "high": [hi[k] for k in sorted(hi)],
        "low": [lo[k] for k in sorted(lo)],
        "pretraining_seeds": ctl.seeds,
        "diffs": diffs,
        "test": paired_test(diffs),
        "selection": selection,
    }


def analyse_e3(r: Results, p: Preset, tasks: list[str], e2: dict[str, Any]) -> dict[str, Any]:
    """C3: overlap rows with the E2 gap of their (task, size), and the controlled high- vs low-overlap
    test."""
    sizes = sorted(p.corpus_sizes)
    rows = r.of(r.one("overlap"))["rows"]
    metric = "coverage@5"
    corr = None
    if len(sizes) >= 2:
        for row in rows:
            row["gap_mean"] = e2["tasks"][row["task"]]["gap_mean"][sizes.index(row["articles"])]
        corr = pearson([row[metric] for row in rows], [row["gap_mean"] for row in rows])
    e3: dict[str, Any] = {"metric_for_plot": metric, "rows": rows, "pearson_gap_vs_overlap": corr}
    points = [r_ for r_ in rows if "gap_mean" in r_ and r_.get("split", "train") == "train"]
    if p.controlled is not None and p.controlled.task in tasks:
        points += _controlled_points(r, p)
    e3["metric_correlations"] = metric_correlations(points)
    if p.controlled is None:
        e3["decision"] = _not_run("C3's controlled high/low-overlap corpora are not in this preset")
        e3["controlled"] = None
    elif p.controlled.task in tasks:
        e3["controlled"] = _controlled(r, p)
        test = e3["controlled"]["test"]
        e3["decision"] = decision(
            test,
            [test["mean"]],
            "paired t-test of acc(high) − acc(low) over pre-training replicates × fine-tuning seeds",
        )
    else:
        e3["decision"] = {
            "verdict": "inconclusive",
            "test": "controlled task not run",
            "p": None,
            "effect_pp": None,
        }
        e3["controlled"] = None
    e3["verdict"] = e3["decision"]["verdict"]
    return e3


#: The overlap metrics whose correlation with the gap E3 reports (definitions: `tinylm overlap --help`).
OVERLAP_METRICS = (
    "type_coverage",
    "occurrence_coverage",
    "coverage@5",
    "coverage@20",
    "js_similarity",
    "weighted_overlap",
)


def metric_correlations(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Pearson r (two-sided p, n) of each overlap metric with the gap over (task, corpus) points, and the
    metric with the largest r (the best predictor of a gap that grows with overlap); None where a metric or
    the gap does not vary or there are fewer than 3 points."""
    from scipy import stats

    gaps = [pt["gap_mean"] for pt in points]
    out: dict[str, Any] = {
        "n": len(points),
        "corpora": sorted({pt["corpus"] for pt in points}),
        "metrics": {},
    }
    for m in OVERLAP_METRICS:
        xs = [pt[m] for pt in points]
        varies = len(points) >= 3 and np.ptp(xs) > 0 and np.ptp(gaps) > 0
        res = stats.pearsonr(xs, gaps) if varies else None
        out["metrics"][m] = {"r": float(res.statistic), "p": float(res.pvalue)} if res is not None else None
    scored = {m: v["r"] for m, v in out["metrics"].items() if v is not None}
    out["best"] = max(scored, key=lambda m: scored[m]) if scored else None
    return out


def _controlled_points(r: Results, p: Preset) -> list[dict[str, Any]]:
    """The controlled corpora as E3 points: their achieved overlap with the task and their gap over scratch
    (the same fine-tuning seeds, the first head)."""
    ctl = p.controlled
    assert ctl is not None
    pl0 = p.poolings[0]
    scr = {j.role["seed"]: r.accuracy(j) for j in r.finetunes(ctl.task, init="scratch", pooling=pl0)}
    out = []
    for d in ("high", "low"):
        gaps = [
            r.accuracy(j) - scr[j.role["seed"]] for j in r.finetunes(ctl.task, init="controlled", selection=d)
        ]
        sel = r.of(r.one("pretrain", selection=d))["data"]["selection"]
        corpus = f"{d}:{ctl.task}:{ctl.num_articles}"
        out.append(
            {"corpus": corpus, "task": ctl.task, "gap_mean": float(np.mean(gaps))}
            | sel["achieved_overlap_train"]
        )
    return out


def paired_comparison(counts: dict[str, int]) -> dict[str, Any]:
    """Committee vs deep model on the same items: McNemar's exact p and a paired bootstrap 95% CI of the
    accuracy difference (items resampled; 2,000 resamples, seed 0)."""
    a, b = counts["only_committee"], counts["only_reference"]
    n = a + b + counts["both"] + counts["neither"]
    com = [True] * a + [False] * b + [True] * counts["both"] + [False] * counts["neither"]
    ref = [False] * a + [True] * b + [True] * counts["both"] + [False] * counts["neither"]
    lo, hi = paired_bootstrap_ci(com, ref)
    return {"n": n, "mcnemar_p": mcnemar_exact(a, b), "ci95_pp": [100 * lo, 100 * hi]}


def training_cost(r: Results, finetune_runs: list[str], seq: int) -> dict[str, float]:
    """Training FLOPs (pre-training + fine-tuning) and forward FLOPs per `seq`-token input of the models of
    these fine-tuning runs ("runs/<job id>"), summed: a committee costs all of its members."""
    from tinylm.config import ModelConfig, build_section
    from tinylm.model import train_flops_per_token

    jobs = {j.id: j for j in r.jobs}
    total = {"pretrain_flops": 0.0, "finetune_flops": 0.0, "inference_flops": 0.0, "pretrain_tokens": 0}
    for run in finetune_runs:
        ft = jobs[Path(run).name]
        pre = jobs[ft.deps[0]]
        cfg = build_section(ModelConfig, pre.settings, others="ignore")
        for job, key, mlm in ((pre, "pretrain", 0.15), (ft, "finetune", None)):
            res = r.by_id[job.id]
            res = res.get("training", res)  # fine-tuning results keep their counts under "training"
            mean_len = res["tokens"] / max(1, res["examples"])
            total[f"{key}_flops"] += train_flops_per_token(cfg, round(mean_len), mlm) * res["tokens"]
        total["pretrain_tokens"] += r.by_id[pre.id]["tokens"]
        total["inference_flops"] += train_flops_per_token(cfg, seq) / 3 * seq  # forward ≈ ⅓ of training
    return total


def analyse_e4(r: Results, p: Preset, tasks: list[str]) -> dict[str, Any]:
    """C4 as non-inferiority with a named margin M: holds if on every task the paired 95% CI of committee −
    deep lies above −M; does not hold if on some task it lies below −M; otherwise inconclusive."""
    e4: dict[str, Any] = {"members": p.members, "margin_pp": p.c4_margin_pp, "tasks": {}}
    for task in tasks:
        res = {k: v for k, v in r.of(r.one("committee", task=task)).items() if k != "latency"}  # timings.json
        n, c, ref = res["num_test"], res["committee_accuracy"], res["reference"]["accuracy"]
        se = math.sqrt(c * (1 - c) / n + ref * (1 - ref) / n)
        res |= {
            "difference": c - ref,
            "difference_se": se,
            "member_architectures": [p.member_model(i) for i in range(p.members)],
            "paired": paired_comparison(res["paired_counts"]),
            "cost": {
                "committee": training_cost(r, [m["run"] for m in res["members"]], p.max_length),
                "reference": training_cost(r, [res["reference"]["run"]], p.max_length),
            },
        }
        e4["tasks"][task] = res
    cis = [t["paired"]["ci95_pp"] for t in e4["tasks"].values()]
    m = p.c4_margin_pp
    verdict = (
        "holds"
        if all(lo > -m for lo, _ in cis)
        else ("does not hold" if any(hi < -m for _, hi in cis) else "inconclusive")
    )
    e4["decision"] = {
        "verdict": verdict,
        "test": f"paired bootstrap 95% CI of committee − deep accuracy per task vs margin −{m} pp "
        "(p: smallest McNemar exact p)",
        "p": min(t["paired"]["mcnemar_p"] for t in e4["tasks"].values()),
        "effect_pp": float(np.mean([100 * t["difference"] for t in e4["tasks"].values()])),
    }
    e4["verdict"] = verdict
    return e4


def analyse(
    out: Path, p: Preset, jobs: list[Job], tasks: list[str], seeds: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """results.json's content and the E1 per-epoch curves (for the figure)."""
    r = Results(out, jobs)
    e1, curves = analyse_e1(r, p, tasks)
    e2 = analyse_e2(r, p, tasks, seeds)
    e3 = analyse_e3(r, p, tasks, e2)
    e4 = analyse_e4(r, p, tasks)
    results: dict[str, Any] = {
        "accuracy_used": (
            "test accuracy of the epoch (and learning rate) chosen on the validation split"
            if p.finetune.get("validation_per_label")
            else "final epoch (best epoch reported alongside)"
        ),
        "E0": analyse_e0(r, p, tasks),
        "E1": e1,
        "E2": e2,
        "E3": e3,
        "E4": e4,
        "preset": p.name,
        "tasks": tasks,
        "seeds": seeds,
    }
    decisions = {c: dict(e["decision"]) for c, e in (("C1", e1), ("C2", e2), ("C3", e3), ("C4", e4))}
    if p.c2_by_epochs:
        e2_epochs = analyse_e2(r, p, tasks, seeds, "epochs")
        results["E2-epochs"] = e2_epochs
        decisions["C2-epochs"] = dict(e2_epochs["decision"])
    for pl in p.poolings[1:]:
        decisions[f"C1-{pl}"] = dict(e1["heads"][pl]["decision"])
    models = gate_models(r, p.gate_nats)
    apply_gate(decisions, models, p)
    results |= {
        "gate": {"threshold_nats": p.gate_nats, "models": models},
        "decisions": decisions,
        "verdicts": {c: d["verdict"] for c, d in decisions.items()},
    }
    return results, curves


def latency_rows(out: Path, jobs: list[Job]) -> dict[str, Any]:
    """The latency job's table (wall-clock: reported in timings.json, never in results.json)."""
    return Results(out, [j for j in jobs if j.kind == "latency"]).of(
        next(j for j in jobs if j.kind == "latency")
    )


def committee_latency(out: Path, jobs: list[Job]) -> dict[str, Any]:
    """Per task, the committee job's measured latency of its own models (wall-clock: timings.json only)."""
    committees = [j for j in jobs if j.kind == "committee"]
    r = Results(out, committees)
    return {j.role["task"]: r.of(j)["latency"] for j in committees if "latency" in r.of(j)}
