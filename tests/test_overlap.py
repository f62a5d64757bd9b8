"""Token-overlap metrics, nested one-pass counting, and overlap-controlled corpus selection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinylm.data.corpus import load_wiki_corpus
from tinylm.data.selection import select_by_overlap
from tinylm.data.sources import resolve_source
from tinylm.data.token_stats import js_divergence, overlap_metrics, token_counts
from tinylm.data.tokenize import EncodedTexts, load_tokenizer
from tinylm.overlap import nested_overlap


def test_token_counts_exclude_specials() -> None:
    ids = np.array([[101, 7, 7, 100, 102, 0], [101, 8, 103, 102, 0, 0]], dtype=np.uint16)
    c = token_counts(ids, 200)
    assert c[7] == 2 and c[8] == 1 and c.sum() == 3


def test_metrics_by_hand() -> None:
    corpus = np.zeros(10, dtype=np.int64)
    corpus[[1, 2, 3]] = [10, 4, 1]
    task = np.zeros(10, dtype=np.int64)
    task[[1, 2, 5]] = [2, 1, 1]  # types 1, 2, 5; type 5 unseen in the corpus
    m = overlap_metrics(corpus, task, (1, 5, 20))
    assert m["type_coverage"] == pytest.approx(2 / 3)
    assert m["occurrence_coverage"] == pytest.approx(3 / 4) == m["coverage@1"]
    assert m["coverage@5"] == pytest.approx(2 / 4)  # only type 1 has >= 5 corpus occurrences
    assert m["coverage@20"] == 0.0
    p, q = corpus / 15, task / 4
    assert m["weighted_overlap"] == pytest.approx(np.minimum(p, q).sum())
    assert 0 < m["js_similarity"] < 1
    assert js_divergence(corpus, corpus) == pytest.approx(0.0)
    disjoint = np.zeros(10, dtype=np.int64)
    disjoint[9] = 3
    assert js_divergence(corpus, disjoint) == pytest.approx(1.0)


def test_nested_one_pass_equals_direct() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(104, 300, size=(50, 16)).astype(np.uint16)
    task = {"t": {"train": token_counts(rng.integers(104, 400, size=(5, 16)), 400)}}
    rows = nested_overlap(ids, [10, 30, 50], task, 400)
    for n, row in zip([10, 30, 50], rows, strict=True):
        direct = overlap_metrics(token_counts(ids[:n], 400), task["t"]["train"])
        assert row["articles"] == n and row["type_coverage"] == pytest.approx(direct["type_coverage"])
        assert row["js_similarity"] == pytest.approx(direct["js_similarity"])
    assert (
        rows[0]["type_coverage"] <= rows[1]["type_coverage"] <= rows[2]["type_coverage"]
    )  # nested: monotone


def test_selection_high_beats_low(data_dir: Path, cache_dir: Path) -> None:
    src = resolve_source(data_dir)
    tok = load_tokenizer(src)
    pool = load_wiki_corpus(src, tok, 50, max_length=12, eval_articles=5, cache_dir=cache_dir)
    vocab = tok.vocab_size
    task = np.zeros(vocab, dtype=np.int64)
    task[tok.tokenizer.token_to_id("city")] = 5
    task[tok.tokenizer.token_to_id("river")] = 5
    hi, dh = select_by_overlap(pool.train, task, 10, "high", 12)
    lo, dl = select_by_overlap(pool.train, task, 10, "low", 12)
    assert (
        len(hi) == len(lo) == 10
        and (pool.train.lengths[hi] == 12).all()
        and (pool.train.lengths[lo] == 12).all()
    )
    assert dh["mean_score"] > dl["mean_score"]
    hi_cov = overlap_metrics(token_counts(pool.train.ids[hi], vocab), task)["occurrence_coverage"]
    lo_cov = overlap_metrics(token_counts(pool.train.ids[lo], vocab), task)["occurrence_coverage"]
    assert hi_cov >= lo_cov
    with pytest.raises(Exception, match="full-length articles"):
        select_by_overlap(EncodedTexts(pool.train.ids, pool.train.lengths * 0 + 3), task, 10, "high", 12)


def test_overlap_cli_on_fixture(data_dir: Path, tmp_path: Path, capsys) -> None:
    from tinylm.cli import main

    out = tmp_path / "o.json"
    code = main(
        [
            "overlap",
            "--corpus",
            "wiki:10,30",
            "high:dbpedia:5",
            "low:dbpedia:5",
            "--tasks",
            "dbpedia",
            "--data-dir",
            str(data_dir),
            "--cache-dir",
            str(tmp_path / "c"),
            "--max-length",
            "10",
            "--pool",
            "40",
            "--eval-articles",
            "5",
            "--samples-per-label-train",
            "4",
            "--samples-per-label-test",
            "2",
            "--json",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0 and "wiki:30" in text and "high:dbpedia:5" in text
    rows = json.loads(out.read_text())["rows"]
    assert {r["corpus"] for r in rows} == {"wiki:10", "wiki:30", "high:dbpedia:5", "low:dbpedia:5"}
    assert all(0 <= r["type_coverage"] <= 1 for r in rows)
