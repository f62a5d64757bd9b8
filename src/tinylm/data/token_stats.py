"""Token statistics of corpora and tasks: id counts and the overlap metrics between two count vectors.

Counts are over WordPiece ids with the special tokens [PAD] [UNK] [CLS] [SEP] [MASK] excluded; the
metrics are defined in `tinylm overlap --help` (the docstring of `tinylm.overlap`). Corpus selection
(`tinylm.data.selection`) and the overlap analysis (`tinylm.overlap`) both count with these.
"""

from __future__ import annotations

import numpy as np

from tinylm.data.sources import DataSource
from tinylm.data.tasks import load_task
from tinylm.data.tokenize import TokenizerInfo, encode_texts
from tinylm.errors import DataError
from tinylm.registry import SPECIAL_IDS

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
    """The metrics of `tinylm.overlap`'s docstring for corpus counts `corpus` and task counts `task`."""
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
