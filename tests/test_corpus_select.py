"""`file:` pre-training corpora (every format, bad input) and `tinylm corpus select` (metrics, ranking)."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import WORDS
from test_train import tiny
from tinylm.corpus_select import document_scores, select_corpus
from tinylm.data.corpus import article_order, load_file_corpus, load_wiki_corpus
from tinylm.data.documents import read_documents
from tinylm.data.sources import resolve_source
from tinylm.data.tokenize import load_tokenizer
from tinylm.errors import ConfigError, DataError
from tinylm.pretrain import pretrain

TEXTS = [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(6 + i % 9)) for i in range(30)]


def write_corpus(path: Path, kind: str, texts: list[str] = TEXTS) -> Path:
    """The same documents as a .txt (one per line, or blank-line separated), .jsonl or .jsonl.gz."""
    if kind == "lines":
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    elif kind == "paragraphs":  # each document on two lines, documents separated by blank lines
        path.write_text("\n\n".join(t.replace(" ", "\n", 1) for t in texts) + "\n", encoding="utf-8")
    else:
        lines = "".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts))
        opener = gzip.open if kind == "jsonl.gz" else open
        with opener(path, "wt", encoding="utf-8") as f:
            f.write(lines)
    return path


def chosen_documents(out: Path) -> list[dict]:
    with gzip.open(out / "documents.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize(
    ("kind", "name"),
    [("lines", "c.txt"), ("paragraphs", "c.txt"), ("jsonl", "c.jsonl"), ("jsonl.gz", "c.jsonl.gz")],
)
def test_every_format_reads_the_same_documents(tmp_path: Path, kind: str, name: str) -> None:
    docs = read_documents(write_corpus(tmp_path / name, kind))
    expected = [t.replace(" ", "\n", 1) for t in TEXTS] if kind == "paragraphs" else TEXTS
    assert docs == expected


def test_a_directory_is_its_corpus_files_in_name_order(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    write_corpus(d / "b.jsonl.gz", "jsonl.gz", TEXTS[10:])
    write_corpus(d / "a.txt", "lines", TEXTS[:10])
    (d / "manifest.json").write_text("{}")  # not a corpus file: ignored
    assert read_documents(d) == TEXTS


def test_file_corpus_pretrains_with_nested_subsets_and_held_out_documents(
    data_dir: Path, tmp_path: Path
) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl", "jsonl")
    run = pretrain(
        tiny(data_dir, tmp_path, corpus=f"file:{corpus}", num_articles=20, eval_articles=6, epochs=2),
        log=lambda *_: None,
    )
    data = json.loads((run.path / "data.json").read_text())
    assert data["corpus"] == f"file:{corpus}" and data["total_articles"] == 30 and data["num_articles"] == 20
    evals = [m["eval"] for m in run.read_metrics() if "eval" in m]
    assert evals and evals[-1]["unigram_loss"] > 0 and evals[-1]["mlm_loss"] > 0
    # nested like Wikipedia: the first 10 of the seeded order are the first 10 samples of the 20
    source = resolve_source(data_dir)
    tok = load_tokenizer(source)
    big = load_file_corpus(f"file:{corpus}", tok, 20, 42, 24, 6, tmp_path / "cache")
    small = load_file_corpus(f"file:{corpus}", tok, 10, 42, 24, 6, tmp_path / "cache2")
    assert np.array_equal(big.train.ids[:10], small.train.ids) and np.array_equal(
        big.eval.ids, small.eval.ids
    )
    assert small.description["subset_hash"] != big.description["subset_hash"]


def test_bad_file_corpora_name_file_and_line(data_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"title": "no text"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: expected a JSON object with a string field 'text'"):
        read_documents(bad)
    bad.write_text('{"text": "fine"}\n\n{"text": "  "}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:3: empty document"):
        read_documents(bad)
    bad.write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not a JSON object"):
        read_documents(bad)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\u00e9\n".encode() + "na\u00efve".encode("latin-1") + b"\n")
    with pytest.raises(DataError, match=r"latin.txt:2: not valid UTF-8"):
        read_documents(latin)
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(DataError, match=r"blank.txt: no documents"):
        read_documents(tmp_path / "blank.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no corpus files"):
        read_documents(tmp_path / "empty")
    with pytest.raises(DataError, match=r"c.csv: not a corpus file"):
        read_documents(write_corpus(tmp_path / "c.csv", "lines"))
    with pytest.raises(ConfigError, match=r"corpus: expected 'wikipedia' or file:PATH, got 'wiki'"):
        tiny(data_dir, tmp_path, corpus="wiki")


def test_too_small_a_file_corpus_is_one_clear_error(data_dir: Path, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c.txt", "lines")
    tok = load_tokenizer(resolve_source(data_dir))
    with pytest.raises(
        DataError, match=r"num_articles=28 with eval_articles=6 does not fit the 30 documents of"
    ):
        load_file_corpus(f"file:{corpus}", tok, 28, 42, 24, 6, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # refused before anything was tokenized or written


def test_metrics_on_hand_computed_documents() -> None:
    # ids ≥ 200 are ordinary tokens; 0 is [PAD], 101 [CLS], 102 [SEP]
    vocab = 210
    task = np.zeros(vocab, dtype=np.int64)
    task[[200, 201, 202]] = [6, 3, 1]  # q = 0.6, 0.3, 0.1
    ids = np.array(
        [
            [101, 200, 200, 203, 102, 0],  # 200 ×2, 203 ×1 (not in the task): shares 2/3, 1/3
            [101, 201, 202, 204, 205, 102],  # 201, 202, 204, 205 once each: shares 1/4
            [101, 102, 0, 0, 0, 0],  # no ordinary token
        ]
    )
    cov = document_scores(ids, task, "coverage")
    assert cov[:2] == pytest.approx([2 / 3, 2 / 4]) and cov[2] == -np.inf
    weighted = document_scores(ids, task, "weighted")
    assert weighted[:2] == pytest.approx([min(2 / 3, 0.6), min(1 / 4, 0.3) + min(1 / 4, 0.1)])
    ced = document_scores(ids, task, "ced")
    pool = np.zeros(vocab)
    pool[[200, 203, 201, 202, 204, 205]] = [2, 1, 1, 1, 1, 1]
    lq = np.log((task + 1) / (task.sum() + vocab))
    lg = np.log((pool + 1) / (pool.sum() + vocab))
    assert ced[0] == pytest.approx((2 * (lq[200] - lg[200]) + lq[203] - lg[203]) / 3)
    with pytest.raises(DataError, match="metric: expected one of coverage, weighted, ced"):
        document_scores(ids, task, "jaccard")


def test_selection_ranks_task_documents_first_under_every_metric(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool of 12 documents made of the task's words hidden among 36 of other words: every metric puts
    the 12 first, and the written directory pre-trains as `file:`."""
    from tinylm import registry

    small = dataclasses.replace(registry.TASKS["agnews"], train_per_label=5, test_per_label=3)
    monkeypatch.setitem(registry.TASKS, "agnews", small)
    task_words = "the news report on world sports business title".split()
    other = [w for w in WORDS if w not in task_words and w not in ("a", "of", "in")]
    rng = np.random.default_rng(0)
    pool = [(" ".join(rng.choice(task_words, 12)), True) for _ in range(12)]
    pool += [(" ".join(rng.choice(other, 12)), False) for _ in range(36)]
    order = rng.permutation(len(pool))
    texts, is_task = [pool[i][0] for i in order], {pool[i][0] for i in order if pool[i][1]}
    corpus = write_corpus(tmp_path / "pool.txt", "lines", texts)
    source = resolve_source(data_dir)
    tok = load_tokenizer(source)
    for metric in ("coverage", "weighted", "ced"):
        out = tmp_path / f"sel-{metric}"
        cache = str(tmp_path / "cache")
        sel = select_corpus(
            "agnews", f"file:{corpus}", 8, metric, out, source, tok, eval_articles=4, cache_dir=cache
        )
        chosen = chosen_documents(out)
        assert len(chosen) == 12 and all(c["text"] in is_task for c in chosen), metric
        assert [c["rank"] for c in chosen] == list(range(12))
        assert [c["score"] for c in chosen] == sorted((c["score"] for c in chosen), reverse=True)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest == sel.manifest and manifest["metric"] == metric and manifest["pool_documents"] == 48
        assert manifest["scores"]["chosen_mean"] > manifest["scores"]["pool_mean"]
    with pytest.raises(DataError, match="already exists"):
        select_corpus("agnews", f"file:{corpus}", 8, "weighted", out, source, tok, eval_articles=4)
    run = pretrain(
        tiny(data_dir, tmp_path, corpus=f"file:{out}", num_articles=8, eval_articles=4, epochs=1),
        log=lambda *_: None,
    )
    assert json.loads((run.path / "data.json").read_text())["total_articles"] == 12


def test_selection_from_wikipedia_uses_the_pretraining_token_cache(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tinylm import registry

    small = dataclasses.replace(registry.TASKS["agnews"], train_per_label=5, test_per_label=3)
    monkeypatch.setitem(registry.TASKS, "agnews", small)
    source = resolve_source(data_dir)
    tok = load_tokenizer(source)
    cache = tmp_path / "cache"
    load_wiki_corpus(source, tok, 50, 42, 24, 10, cache)
    before = sorted(p.name for p in cache.iterdir())
    out = tmp_path / "w"
    sel = select_corpus("agnews", "wikipedia", 10, "weighted", out, source, tok, 50, 5, 42, 24, str(cache))
    assert sorted(p.name for p in cache.iterdir()) == before  # the pool's tokens came from the cache
    assert sel.manifest["pool_documents"] == 50 and sel.manifest["documents"] == 15
    # the fixture has 60 articles: a pool of 50 asked for, 55 usable, so the last 5 of the order
    # (Wikipedia's held-out articles at eval_articles 5) are never candidates
    chosen = {c["source_index"] for c in chosen_documents(out)}
    assert not chosen & set(article_order(60, 42)[55:].tolist()) and chosen <= set(article_order(60, 42)[:50])
