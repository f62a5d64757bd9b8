"""Token overlap between a pre-training corpus and a task (claim C3), and overlap-controlled corpora.

All counts are over bert-base-uncased WordPiece ids of the truncated samples the models see, with
the special tokens [PAD] [UNK] [CLS] [SEP] [MASK] excluded. With corpus counts C and task counts T:

* type coverage        |{t: T_t > 0} ∩ {t: C_t > 0}| / |{t: T_t > 0}|
* occurrence coverage  Σ_{t: C_t > 0} T_t / Σ_t T_t          (share of task tokens the corpus contains)
* coverage@k           Σ_{t: C_t ≥ k} T_t / Σ_t T_t          (k = 1, 5, 20 by default; @1 = occurrence cov.)
* js_similarity        1 − JS(p ‖ q), JS the Jensen–Shannon divergence in bits (∈ [0, 1]) of the two
                       unigram distributions p = C / ΣC and q = T / ΣT
* weighted_overlap     Σ_t min(p_t, q_t)                       (histogram intersection, ∈ [0, 1])

Nested corpus sizes are counted in one pass: the counts of N₂ ⊃ N₁ are those of N₁ plus the
articles between them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinylm.data.corpus import WikiCorpus, load_wiki_corpus
from tinylm.data.sources import DataSource
from tinylm.data.tasks import load_task
from tinylm.data.tokenize import EncodedTexts, TokenizerInfo, encode_texts
from tinylm.errors import DataError
from tinylm.fileio import stable_hash
from tinylm.registry import SPECIAL_IDS, TASKS

SPECIAL_TOKEN_IDS = tuple(SPECIAL_IDS.values())


def token_counts(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Occurrences of every id in a (padded) id array, special tokens zeroed."""
    counts = np.bincount(ids.ravel(), minlength=vocab_size).astype(np.int64)
    counts[list(SPECIAL_TOKEN_IDS)] = 0
    return counts


def js_divergence(c: np.ndarray, t: np.ndarray) -> float:
    p, q = c / c.sum(), t / t.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def overlap_metrics(
    corpus: np.ndarray, task: np.ndarray, thresholds: tuple[int, ...] = (1, 5, 20)
) -> dict[str, float]:
    """The metrics of this module's docstring for corpus counts `corpus` and task counts `task`."""
    if task.sum() == 0 or corpus.sum() == 0:
        raise DataError("overlap needs non-empty corpus and task token counts")
    types = task > 0
    out = {
        "task_types": int(types.sum()),
        "task_tokens": int(task.sum()),
        "corpus_types": int((corpus > 0).sum()),
        "corpus_tokens": int(corpus.sum()),
        "type_coverage": float((types & (corpus > 0)).sum() / types.sum()),
        "occurrence_coverage": float(task[corpus > 0].sum() / task.sum()),
    }
    for k in thresholds:
        out[f"coverage@{k}"] = float(task[corpus >= k].sum() / task.sum())
    out["js_similarity"] = 1.0 - js_divergence(corpus, task)
    out["weighted_overlap"] = float(np.minimum(corpus / corpus.sum(), task / task.sum()).sum())
    return out


def task_token_counts(
    name: str,
    source: DataSource,
    tok: TokenizerInfo,
    max_length: int,
    seed: int = 42,
    per_label: tuple[int | None, int | None] = (-1, -1),
) -> dict[str, np.ndarray]:
    """Token counts of a task's train and test samples (default: the paper's sample sizes, what a classifier
    sees)."""
    task = load_task(
        name, source, seed=seed, samples_per_label_train=per_label[0], samples_per_label_test=per_label[1]
    )
    out = {}
    for split, records in (("train", task.train), ("test", task.test)):
        out[split] = token_counts(
            encode_texts(tok, [r.text for r in records], max_length).ids, tok.vocab_size
        )
    return out


def nested_overlap(
    corpus_ids: np.ndarray,
    sizes: list[int],
    tasks: dict[str, dict[str, np.ndarray]],
    vocab_size: int,
    thresholds: tuple[int, ...] = (1, 5, 20),
) -> list[dict[str, Any]]:
    """Overlap rows for each (size, task, split), counting the nested corpus once, cumulatively."""
    rows: list[dict[str, Any]] = []
    counts = np.zeros(vocab_size, dtype=np.int64)
    done = 0
    for n in sorted(sizes):
        counts += token_counts(corpus_ids[done:n], vocab_size)
        done = n
        for name, splits in tasks.items():
            for split, t in splits.items():
                rows.append(
                    {"corpus": f"wiki:{n}", "articles": n, "task": name, "split": split}
                    | overlap_metrics(counts, t, thresholds)
                )
    return rows


# ---------------------------------------------------------------- overlap-controlled corpora


@dataclass
class Selection:
    """Articles chosen from a candidate pool by their overlap with a task's training vocabulary."""

    order_positions: np.ndarray  # positions in the seeded corpus order
    description: dict[str, Any]


def select_by_overlap(
    pool: EncodedTexts, task_train_counts: np.ndarray, n: int, direction: str, max_length: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Pick `n` full-length articles of `pool` with the highest (or lowest) share of tokens whose type
    occurs in the task's training samples. Only full-length samples (max_length tokens) are candidates,
    so high and low corpora have the same number of articles *and* tokens."""
    if direction not in ("high", "low"):
        raise DataError(f"selection direction must be 'high' or 'low', got {direction!r}")
    task_types = task_train_counts > 0
    full = np.flatnonzero(pool.lengths == max_length)
    if len(full) < n:
        raise DataError(
            f"only {len(full)} full-length articles in the pool of {len(pool)}; raise selection_pool or "
            f"lower num_articles"
        )
    ids = pool.ids[full].astype(np.int64)
    valid = ~np.isin(ids, SPECIAL_TOKEN_IDS)
    score = (task_types[ids] & valid).sum(1) / valid.sum(1)
    rank = np.argsort(-score if direction == "high" else score, kind="stable")[:n]
    chosen = np.sort(full[rank])
    return chosen, {
        "rule": f"the {n} full-length ({max_length}-token) articles among the first {len(pool)} of the "
        f"seeded order "
        f"with the {'highest' if direction == 'high' else 'lowest'} share of tokens whose type occurs in the "
        "task's training samples",
        "direction": direction,
        "pool_articles": len(pool),
        "pool_full_length": int(len(full)),
        "mean_score": float(score[rank].mean()),
        "pool_mean_score": float(score.mean()),
    }


def load_selected_corpus(
    source: DataSource,
    tok: TokenizerInfo,
    task: str,
    direction: str,
    n: int,
    pool_articles: int,
    seed: int = 42,
    max_length: int = 128,
    eval_articles: int = 1000,
    cache_dir: str | os.PathLike | None = None,
    per_label: tuple[int | None, int | None] = (-1, -1),
) -> WikiCorpus:
    """An overlap-controlled pre-training corpus: n articles chosen from the first `pool_articles` of the
    order."""
    if task not in TASKS:
        raise DataError(f"selection_task: unknown task {task!r} (expected one of {', '.join(TASKS)})")
    pool = load_wiki_corpus(source, tok, pool_articles, seed, max_length, eval_articles, cache_dir)
    counts = task_token_counts(task, source, tok, max_length, per_label=per_label)
    chosen, desc = select_by_overlap(pool.train, counts["train"], n, direction, max_length)
    train = EncodedTexts(pool.train.ids[chosen], pool.train.lengths[chosen])
    corpus_counts = token_counts(train.ids, tok.vocab_size)
    description = pool.description | {
        "num_articles": n,
        "selection": desc
        | {
            "task": task,
            "achieved_overlap_train": overlap_metrics(corpus_counts, counts["train"]),
            "achieved_overlap_test": overlap_metrics(corpus_counts, counts["test"]),
        },
        "subset_hash": stable_hash(chosen.tolist()),
        "tokens": int(train.lengths.sum()),
    }
    return WikiCorpus(train, pool.eval, description)


def format_rows(rows: list[dict[str, Any]], thresholds: tuple[int, ...] = (1, 5, 20)) -> str:
    cols = (
        ["type_coverage", "occurrence_coverage"]
        + [f"coverage@{k}" for k in thresholds if k != 1]
        + ["js_similarity", "weighted_overlap"]
    )
    head = f"{'corpus':<18} {'task':<8} {'split':<5} {'types':>6} " + " ".join(
        f"{c.replace('_coverage', '_cov'):>12}" for c in cols
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['corpus']:<18} {r['task']:<8} {r['split']:<5} {r['task_types']:>6} "
            + " ".join(f"{r[c]:>12.4f}" for c in cols)
        )
    return "\n".join(lines)
