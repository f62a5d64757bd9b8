"""Corpus selection: pre-training corpora chosen from a pool by their token overlap with a task.

`select_by_overlap` ranks full-length articles by the share of their tokens whose type occurs in the
task's training samples; `load_selected_corpus` builds the high- or low-overlap corpus `pretrain
--selection high|low` trains on (same articles and tokens in both directions).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tinylm.data.corpus import WikiCorpus, load_wiki_corpus
from tinylm.data.sources import DataSource
from tinylm.data.token_stats import SPECIAL_TOKEN_IDS, overlap_metrics, task_token_counts, token_counts
from tinylm.data.tokenize import EncodedTexts, TokenizerInfo
from tinylm.errors import DataError
from tinylm.fileio import stable_hash
from tinylm.registry import TASKS


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
