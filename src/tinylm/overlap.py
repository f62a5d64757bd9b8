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
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinylm.data.corpus import load_wiki_corpus
from tinylm.data.selection import load_selected_corpus
from tinylm.data.sources import DataSource
from tinylm.data.token_stats import overlap_metrics, token_counts
from tinylm.data.tokenize import TokenizerInfo
from tinylm.errors import TinylmError

SPEC_FORMS = "wiki:N[,N...], high:TASK:N or low:TASK:N"


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


# ---------------------------------------------------------------- corpora named on the command line


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus of `tinylm overlap --corpus`: nested Wikipedia sizes, or an overlap-controlled selection."""

    kind: str  #: wiki, high or low
    sizes: tuple[int, ...]
    task: str | None = None


def parse_corpus_specs(specs: list[str]) -> list[CorpusSpec]:
    """`wiki:N[,N...]`, `high:TASK:N`, `low:TASK:N`; the first malformed one is a clear error."""
    bad = [s for s in specs if not re.fullmatch(r"wiki:[0-9]+(,[0-9]+)*|(high|low):[a-z0-9_]+:[0-9]+", s)]
    if bad:
        raise TinylmError(f"--corpus {bad[0]!r}: expected {SPEC_FORMS} (N: articles)")
    out = []
    for spec in specs:
        kind, _, rest = spec.partition(":")
        if kind == "wiki":
            out.append(CorpusSpec(kind, tuple(int(x) for x in rest.split(","))))
        else:
            task, n = rest.split(":")
            out.append(CorpusSpec(kind, (int(n),), task))
    return out


def overlap_rows(
    specs: list[CorpusSpec],
    tasks: dict[str, dict[str, np.ndarray]],
    source: DataSource,
    tok: TokenizerInfo,
    seed: int,
    max_length: int,
    eval_articles: int,
    cache_dir: str | os.PathLike[str] | None,
    pool: int = 100000,
    per_label: tuple[int | None, int | None] = (-1, -1),
    thresholds: tuple[int, ...] = (1, 5, 20),
) -> list[dict[str, Any]]:
    """Overlap rows of every corpus with every task split: the nested Wikipedia sizes first (counted in
    one pass), then each selection."""
    rows: list[dict[str, Any]] = []
    for spec in (s for s in specs if s.kind != "wiki"):
        assert spec.task is not None
        n = spec.sizes[0]
        c = load_selected_corpus(
            source, tok, spec.task, spec.kind, n, pool, seed, max_length, eval_articles, cache_dir, per_label
        )
        rows += [
            r | {"corpus": f"{spec.kind}:{spec.task}:{n}", "selection": c.description["selection"]["rule"]}
            for r in nested_overlap(c.train.ids, [n], tasks, tok.vocab_size, thresholds)
        ]
    sizes = [n for s in specs if s.kind == "wiki" for n in s.sizes]
    if sizes:
        corpus = load_wiki_corpus(source, tok, max(sizes), seed, max_length, eval_articles, cache_dir)
        rows = nested_overlap(corpus.train.ids, sizes, tasks, tok.vocab_size, thresholds) + rows
    return rows
