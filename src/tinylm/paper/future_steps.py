"""The job steps of the paper's future work: `select` (E5's corpora), `ensemble` (E6), `teacher` and
`distill`. Each leaves OUT/runs/ID/results.json; timings go under its `latency` key, which the analysis
moves to timings.json (results.json holds only what the grid's seeds determine)."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.committee import paired_counts
from tinylm.fileio import write_json
from tinylm.paper.context import Context, best_of, best_of_groups
from tinylm.paper.jobs import Job


def run_select(job: Job, ctx: Context) -> None:
    """`tinylm corpus select` for an E5 task into OUT/runs/ID/corpus (replacing one a killed job left)."""
    from tinylm.corpus_select import select_corpus
    from tinylm.data.sources import resolve_source
    from tinylm.data.tokenize import load_tokenizer

    s = job.settings
    source = resolve_source(ctx.data_dir)
    target = ctx.runs_dir / job.id / "corpus"
    if target.exists():
        shutil.rmtree(target)
    sel = select_corpus(
        s["task"],
        "wikipedia",
        s["articles"],
        s["metric"],
        target,
        source,
        load_tokenizer(source),
        pool=s["pool"],
        eval_articles=s["eval_articles"],
        seed=s["seed"],
        max_length=s["max_length"],
        cache_dir=str(ctx.cache_dir),
        per_label=(s["samples"][0], s["samples"][1]),
    )
    manifest = _relative_to_out({k: v for k, v in sel.manifest.items() if k != "seconds"}, ctx)
    overlap = corpus_overlap(target, s.get("overlap_with", {}), source, s["max_length"])
    write_json(
        ctx.result_path(job.id), {"kind": "select", "settings": s, "manifest": manifest, "overlap": overlap}
    )


def corpus_overlap(
    corpus: Path, samples: dict[str, list[int]], source: Any, max_length: int
) -> dict[str, dict[str, float]]:
    """Overlap metrics (`tinylm overlap`'s) of a `file:` corpus's documents (first `max_length` WordPieces)
    with each task's training samples (`samples`: task → [train, test] per label)."""
    from tinylm.data.documents import encode_documents
    from tinylm.data.token_stats import overlap_metrics, task_token_counts, token_counts
    from tinylm.data.tokenize import load_tokenizer

    tok = load_tokenizer(source)
    counts = token_counts(encode_documents(f"file:{corpus}", tok, max_length).ids, tok.vocab_size)
    return {
        task: overlap_metrics(
            counts, task_token_counts(task, source, tok, max_length, per_label=(tr, te))["train"]
        )
        for task, (tr, te) in samples.items()
    }


def _groups(job: Job, ctx: Context) -> list[str]:
    """The best run of each group of dependencies (an lr sweep each, sizes in `group_sizes`)."""
    return best_of_groups(job.deps, job.settings["group_sizes"], ctx)


def run_teacher(job: Job, ctx: Context) -> None:
    """The committee of the member pool's fine-tunings on a task, saved as a committee directory."""
    from tinylm.committee import Committee

    members = _groups(job, ctx)
    target = ctx.runs_dir / job.id / "committee"
    if target.exists():
        shutil.rmtree(target)
    Committee.from_runs([ctx.runs_dir / m for m in members]).save(target, {"task": job.settings["task"]})
    write_json(ctx.result_path(job.id), {"kind": "teacher", "members": [f"runs/{m}" for m in members]})


def _logits(runs: list[Path], task: str, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Every run's logits on their shared test split (members, N, labels) and its labels."""
    from tinylm.committee import Committee, committee_logits, shared_test_split

    test, _ = shared_test_split([str(r) for r in runs], None, task, max_length)
    assert test.labels is not None
    return committee_logits(Committee.from_runs(runs), test), test.labels


def _right(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per item, whether the mean of these members' softmaxes picks the label."""
    from tinylm.committee import combine

    right: np.ndarray = combine(logits, "mean_prob") == labels
    return right


def ensemble_points(
    logits: np.ndarray, labels: np.ndarray, architectures: int, orderings: int, seed: int
) -> list[dict[str, Any]]:
    """E6's committees: per architecture a, its members (pool index ≡ a mod architectures) first k; the mix
    (all members in pool order, so the architectures alternate) first k. Each point: its members, accuracy,
    mean ± std over random orderings, and per-item paired counts against the last row (the deep model)."""
    from tinylm.committee import accuracy_vs_size

    pool, ref = logits[:-1], _right(logits[-1:], labels)
    curves = {f"arch{a}": list(range(a, len(pool), architectures)) for a in range(architectures)}
    curves["mixed"] = list(range(len(pool)))
    points = []
    for name, idx in curves.items():
        curve = accuracy_vs_size(pool[idx], labels, "mean_prob", orderings, seed)
        for k in range(1, len(idx) + 1):
            right = _right(pool[idx[:k]], labels)
            points.append(
                {
                    "committee": name,
                    "k": k,
                    "members": idx[:k],
                    "accuracy": float(right.mean()),
                    "random_order_mean": curve["mean"][k - 1],
                    "random_order_std": curve["std"][k - 1],
                    "paired_counts": paired_counts(right, ref),
                }
            )
    return points


def _latency(models: dict[str, Any], batch: list[int], seq: int, reps: int, vocab: int) -> dict[str, Any]:
    """ms per input of each model (a Committee: its members stacked as `member_logits` runs them) at each
    batch size, fp32, median of `reps` calls, in this process."""
    import torch

    from tinylm.perf import median_seconds

    out: dict[str, Any] = {"seq": seq, "threads": torch.get_num_threads(), "reps": reps, "ms": {}}
    for b in batch:
        ids = torch.randint(0, vocab, (b, seq), generator=torch.Generator().manual_seed(0))
        att = torch.ones(b, seq, dtype=torch.bool)
        for name, m in models.items():
            with torch.no_grad():
                seconds = median_seconds(partial(_forward, m, ids, att), reps)
            out["ms"].setdefault(name, {})[str(b)] = round(1000 * seconds / b, 4)
    return out


def _forward(model: Any, ids: Any, attention: Any) -> Any:
    """One forward pass: a committee's members as `member_logits` runs them, or one model."""
    from tinylm.committee import Committee

    return model.member_logits(ids, attention) if isinstance(model, Committee) else model(ids, attention)


def run_ensemble(job: Job, ctx: Context) -> None:
    """E6 on one task: accuracy of every committee point, and (timings) its latency per input."""
    from tinylm.committee import Committee, load_member

    s = job.settings
    runs = _groups(job, ctx)
    paths = [ctx.runs_dir / r for r in runs]
    logits, labels = _logits(paths, s["task"], s["max_length"])
    points = ensemble_points(logits, labels, s["architectures"], s["orderings"], s["seed"])
    models: dict[str, Any] = {"deep": load_member(paths[-1], "reference")[0]}
    for pt in points:
        models[f"{pt['committee']}:{pt['k']}"] = Committee.from_runs([paths[i] for i in pt["members"]])
        pt["runs"] = [f"runs/{runs[i]}" for i in pt["members"]]
    result = {
        "kind": "ensemble",
        "task": s["task"],
        "num_test": len(labels),
        "reference": {"run": f"runs/{runs[-1]}", "accuracy": float(_right(logits[-1:], labels).mean())},
        "points": points,
        "latency": _latency(models, s["batch"], s["max_length"], s["reps"], models["deep"].cfg.vocab_size),
    }
    write_json(ctx.result_path(job.id), result)


def run_distill(job: Job, ctx: Context) -> None:
    """The students against their teacher committee, the best member (by validation), member 0 (the
    students' own pre-trained weights, fine-tuned on labels only) and the deep model, on the same items."""
    import json

    from tinylm.committee import Committee, load_member

    s = job.settings
    names = s.get("students", ["student"])
    runs = _groups(job, ctx)
    students, members, deep = runs[: len(names)], runs[len(names) : -1], runs[-1]
    paths = [ctx.runs_dir / r for r in runs]
    logits, labels = _logits(paths, s["task"], s["max_length"])
    n, best = len(names), members.index(best_of(members, ctx))
    committee_pred = _committee_pred(logits[n:-1])
    others = {
        "committee": committee_pred == labels,
        "best_member": _right(logits[n + best : n + best + 1], labels),
        "member0": _right(logits[n : n + 1], labels),
        "deep": _right(logits[-1:], labels),
    }
    right = {name: _right(logits[i : i + 1], labels) for i, name in enumerate(names)}
    committee = Committee.from_runs(paths[n:-1])
    timed = {"student": load_member(paths[0])[0], "committee": committee, "deep": load_member(paths[-1])[0]}
    result = {
        "kind": "distill",
        "task": s["task"],
        "num_test": len(labels),
        "students": names,
        "runs": {
            "students": dict(zip(names, [f"runs/{r}" for r in students], strict=True)),
            "members": [f"runs/{m}" for m in members],
            "deep": f"runs/{deep}",
        },
        "best_member": f"runs/{members[best]}",
        "accuracy": {k: float(v.mean()) for k, v in (right | others).items()},
        "paired_counts": {a: {k: paired_counts(right[a], v) for k, v in others.items()} for a in names},
        "agreement_with_committee": {
            name: float((logits[i].argmax(-1) == committee_pred).mean()) for i, name in enumerate(names)
        },
        "distill": {
            name: _relative_to_out(json.loads(ctx.result_path(r).read_text()).get("distill"), ctx)
            for name, r in zip(names, students, strict=True)
        },
        "latency": _latency(timed, [1], s["max_length"], 20, committee.members[0].cfg.vocab_size),
    }
    write_json(ctx.result_path(job.id), result)


def _relative_to_out(record: dict[str, Any] | None, ctx: Context) -> dict[str, Any] | None:
    """A record with the paths under OUT/runs (teacher, unlabelled text) written as runs/…, so that
    results.json does not depend on where OUT is."""
    if record is None:
        return None
    prefix = str(ctx.runs_dir)
    return {k: v.replace(prefix, "runs") if isinstance(v, str) else v for k, v in record.items()}


def _committee_pred(logits: np.ndarray) -> np.ndarray:
    from tinylm.committee import combine

    pred: np.ndarray = combine(logits, "mean_prob")
    return pred


STEPS = {"select": run_select, "ensemble": run_ensemble, "teacher": run_teacher, "distill": run_distill}
