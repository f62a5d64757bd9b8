"""`tinylm corpus select`: a task-specific pre-training corpus, ranked out of a pool of documents.

Every document of the pool (Wikipedia, or a `file:` corpus) is scored on the first `max_length`
WordPieces a model would see, against the task's training samples; the best `articles + eval_articles`
are written as a corpus directory that `tinylm pretrain --corpus file:DIR` reads. Counts exclude the
special tokens [PAD] [UNK] [CLS] [SEP] [MASK]. For a document d with token counts c_d (n_d tokens) and
the task's training counts T (q = T / ΣT over a vocabulary of V ids), the metrics are:

* coverage   Σ_{t: T_t > 0} c_d(t) / n_d
             share of the document's tokens whose type occurs in the task (the `--selection high` rule)
* weighted   Σ_t min(c_d(t) / n_d, q_t)
             frequency-weighted overlap: the histogram intersection of the document's and the task's
             unigram distributions (∈ [0, 1]; `weighted_overlap` of `tinylm overlap` for one document)
* ced        (1 / n_d) Σ_{tokens t of d} [log q̃_t − log g̃_t],  q̃ = (T + 1) / (ΣT + V),
             g̃ = (P + 1) / (ΣP + V) with P the pool's counts: the cross-entropy difference of Moore & Lewis
             (2010) — how much likelier the document is under the task's unigram model than the pool's

Ties keep pool order. The pool is the first `--pool` documents of the seeded order (for Wikipedia,
never its held-out articles), so its token cache is the one `pretrain` builds.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.data.corpus import Documents, article_order, document_arrays, wiki_index
from tinylm.data.sources import DataSource
from tinylm.data.token_stats import SPECIAL_TOKEN_IDS, overlap_metrics, task_token_counts, token_counts
from tinylm.data.tokenize import TokenizerInfo
from tinylm.errors import DataError
from tinylm.fileio import atomic_dir

METRICS = ("coverage", "weighted", "ced")


def document_scores(ids: np.ndarray, task_counts: np.ndarray, metric: str) -> np.ndarray:
    """One score per row of a padded id matrix (see the module docstring); −inf for a row without
    ordinary tokens."""
    if metric not in METRICS:
        raise DataError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    ids = ids.astype(np.int64)
    valid = ~np.isin(ids, SPECIAL_TOKEN_IDS)
    n = valid.sum(1)
    vocab = len(task_counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "coverage":
            score = ((task_counts[ids] > 0) & valid).sum(1) / n
        elif metric == "ced":
            pool = token_counts(ids, vocab)
            log_ratio = np.log((task_counts + 1) / (task_counts.sum() + vocab)) - np.log(
                (pool + 1) / (pool.sum() + vocab)
            )
            score = np.where(valid, log_ratio[ids], 0.0).sum(1) / n
        else:
            score = _weighted_overlap(ids, valid, n, task_counts / task_counts.sum())
    return np.where(n > 0, score, -np.inf)


def _weighted_overlap(ids: np.ndarray, valid: np.ndarray, n: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Σ_t min(c_d(t) / n_d, q_t) per row, from the (row, id) pairs counted once."""
    rows = np.broadcast_to(np.arange(len(ids))[:, None], ids.shape)[valid]
    pairs, counts = np.unique(rows * len(q) + ids[valid], return_counts=True)
    row, tok = pairs // len(q), pairs % len(q)
    share = np.minimum(counts / np.maximum(n[row], 1), q[tok])
    return np.bincount(row, weights=share, minlength=len(ids))


@dataclass
class Selection:
    """What `select_corpus` chose and wrote."""

    out: Path
    manifest: dict[str, Any]


def _pool(
    spec: str, source: DataSource, seed: int, pool: int, eval_articles: int, cache_dir: str | None
) -> tuple[Documents, np.ndarray]:
    """The pool's documents and the numbers of the first `pool` of the seeded order (Wikipedia: without
    its held-out articles, the last `eval_articles` of the order)."""
    if spec == "wikipedia":
        docs: Documents = wiki_index(source, cache_dir)
        usable = docs.total - eval_articles
    else:
        from tinylm.data.documents import FileDocuments

        docs = FileDocuments.open(spec)
        usable = docs.total
    if pool < 1:
        raise DataError(f"pool: must be positive, got {pool}")
    return docs, article_order(docs.total, seed)[: min(pool, usable)]


def select_corpus(
    task: str,
    spec: str,
    articles: int,
    metric: str,
    out: str | os.PathLike,
    source: DataSource,
    tok: TokenizerInfo,
    pool: int = 100_000,
    eval_articles: int = 500,
    seed: int = 42,
    max_length: int = 128,
    cache_dir: str | None = None,
    per_label: tuple[int | None, int | None] = (-1, -1),
) -> Selection:
    """Rank the pool by `metric` against `task`'s training samples and write the best `articles +
    eval_articles` documents (with their scores) and a manifest to `out` (atomically; it must not exist)."""
    out = Path(out)
    if out.exists():
        raise DataError(f"{out}: already exists (corpus select writes a new directory)")
    start = time.perf_counter()
    docs, numbers = _pool(spec, source, seed, pool, eval_articles, cache_dir)
    want = articles + eval_articles
    if articles < 1 or want > len(numbers):
        raise DataError(
            f"articles={articles} + eval_articles={eval_articles} does not fit the pool of {len(numbers)} "
            f"documents of {docs.name}"
        )
    key = {"shards": docs.fingerprint(), "tokenizer": tok.fingerprint, "seed": seed, "max_length": max_length}
    prefix = "wiki" if docs.name == "wikipedia" else "file"
    arrays, _ = document_arrays(docs, tok, numbers, max_length, cache_dir, key, False, prefix)
    counts = task_token_counts(task, source, tok, max_length, per_label=per_label)
    scores = document_scores(arrays["ids"], counts["train"], metric)
    rank = np.argsort(-scores, kind="stable")[:want]
    corpus_counts = token_counts(arrays["ids"][rank], tok.vocab_size)
    manifest = {
        "pool": docs.name,
        "pool_documents": int(len(numbers)),
        "pool_fingerprint": docs.fingerprint(),
        "task": task,
        "metric": metric,
        "metric_definition": METRIC_DEFINITIONS[metric],
        "articles": articles,
        "eval_articles": eval_articles,
        "documents": want,
        "seed": seed,
        "max_length": max_length,
        "tokenizer": tok.path,
        "scores": _score_summary(scores, rank),
        "overlap_train": overlap_metrics(corpus_counts, counts["train"]),
        "overlap_test": overlap_metrics(corpus_counts, counts["test"]),
        "pretrain": f"tinylm pretrain --corpus file:{out} --num_articles {articles} "
        f"--eval_articles {eval_articles}",
    }
    _write(out, docs.read(numbers[rank]), scores[rank], numbers[rank], manifest, start)
    return Selection(out, manifest)


def _score_summary(scores: np.ndarray, rank: np.ndarray) -> dict[str, float]:
    return {
        "chosen_mean": float(scores[rank].mean()),
        "chosen_min": float(scores[rank].min()),
        "pool_mean": float(scores[np.isfinite(scores)].mean()),
    }


def _write(
    out: Path,
    texts: list[str],
    scores: np.ndarray,
    numbers: np.ndarray,
    manifest: dict[str, Any],
    start: float,
) -> None:
    """The corpus directory, whole or not at all: documents.jsonl.gz in rank order, manifest.json."""
    with atomic_dir(out) as tmp:
        with gzip.open(tmp / "documents.jsonl.gz", "wt", encoding="utf-8") as f:
            for r, (text, score, number) in enumerate(zip(texts, scores, numbers, strict=True)):
                rec = {"text": text, "score": float(score), "rank": r, "source_index": int(number)}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        manifest["seconds"] = round(time.perf_counter() - start, 2)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


METRIC_DEFINITIONS = {
    "coverage": "share of the document's tokens whose type occurs in the task's training samples",
    "weighted": "sum over ids of min(document share, task share): the histogram intersection of the two "
    "unigram distributions",
    "ced": "mean over the document's tokens of log q(t) - log g(t), add-one smoothed unigram models of the "
    "task (q) and the pool (g): Moore & Lewis cross-entropy difference",
}
