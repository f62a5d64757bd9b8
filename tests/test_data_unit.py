"""Data layer on small fixture files in the real formats: parsers, labels, sampling, corpus, tokens, cache."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_csv, write_vocab
from tinylm.data import corpus as corpus_mod
from tinylm.data.corpus import load_wiki_corpus, wiki_index
from tinylm.data.sources import resolve_source
from tinylm.data.tasks import load_task, mark_entities
from tinylm.data.tokenize import encode_records_cached, encode_texts, load_tokenizer, tokenizer_from_file
from tinylm.errors import DataError, DataNotFoundError


def test_agnews_parsing_and_label_mapping(data_dir: Path) -> None:
    src = resolve_source(data_dir)
    task = load_task("agnews", src, samples_per_label_train=None, samples_per_label_test=None)
    assert task.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert len(task.train) == 40 and len(task.test) == 20
    first = next(r for r in task.train if r.id == "train:0")
    assert first.label == 0  # file label 1 -> 0
    assert first.text == "title 0 the the news report 0 on World"  # title + " " + description
    assert {r.label for r in task.train} == {0, 1, 2, 3}


def test_dbpedia_uses_content_only(data_dir: Path) -> None:
    task = load_task(
        "dbpedia", resolve_source(data_dir), samples_per_label_train=None, samples_per_label_test=None
    )
    rec = next(r for r in task.train if r.id == "train:13")
    assert rec.label == 13 and rec.text == "content of page 13 in the city"
    assert task.num_labels == 14


def test_fewrel_split_and_marking(data_dir: Path) -> None:
    src = resolve_source(data_dir)
    task = load_task(
        "fewrel", src, samples_per_label_train=None, samples_per_label_test=None, test_per_relation=3
    )
    assert task.num_labels == 3 and task.label_names[0] == "P10 (rel0)"
    assert len(task.train) == 3 * 77 and len(task.test) == 3 * 3
    assert not {r.id for r in task.train} & {r.id for r in task.test}
    assert (
        "@ city 0 @" in task.train[0].text.replace(task.train[0].text.split()[3], "0")
        or "@" in task.train[0].text
    )
    again = load_task(
        "fewrel", src, samples_per_label_train=None, samples_per_label_test=None, test_per_relation=3
    )
    assert [r.id for r in again.test] == [r.id for r in task.test]
    other = load_task(
        "fewrel",
        src,
        samples_per_label_train=None,
        samples_per_label_test=None,
        test_per_relation=3,
        split_seed=7,
    )
    assert [r.id for r in other.test] != [r.id for r in task.test]


def test_mark_entities_options() -> None:
    toks = "Paris is the capital of France".split()
    assert mark_entities(toks, [[0]], [[5]], "punct") == "@ Paris @ is the capital of # France #"
    assert mark_entities(toks, [[0]], [[4, 5]], "punct") == "@ Paris @ is the capital # of France #"
    assert mark_entities(toks, [[0]], [[5]], "none") == "Paris is the capital of France"


def test_sampling_balanced_deterministic_disjoint(data_dir: Path) -> None:
    src = resolve_source(data_dir)
    a = load_task("agnews", src, seed=1, samples_per_label_train=5, samples_per_label_test=3)
    b = load_task("agnews", src, seed=1, samples_per_label_train=5, samples_per_label_test=3)
    c = load_task("agnews", src, seed=2, samples_per_label_train=5, samples_per_label_test=3)
    assert [r.id for r in a.train] == [r.id for r in b.train]
    assert [r.id for r in a.train] != [r.id for r in c.train]
    assert np.bincount([r.label for r in a.train]).tolist() == [5, 5, 5, 5]
    assert np.bincount([r.label for r in a.test]).tolist() == [3, 3, 3, 3]
    assert not {r.id for r in a.train} & {r.id for r in a.test}
    assert a.description["train_ids_hash"] == b.description["train_ids_hash"]


def test_sampling_more_than_available_is_an_error(data_dir: Path) -> None:
    with pytest.raises(DataError, match=r"samples_per_label_train=50 but label 0 \(World\) has only 10"):
        load_task("agnews", resolve_source(data_dir), samples_per_label_train=50, samples_per_label_test=1)


def test_task_cache_answers_only_the_splits_it_holds(data_dir: Path, cache_dir: Path) -> None:
    """A committee caches a task's test split alone; a fine-tuning of the same task asking for train and
    test afterwards gets both (it once got the test-only entry back and failed with KeyError 'train_ids')."""
    src = resolve_source(data_dir)
    task = load_task("agnews", src, seed=1, samples_per_label_train=5, samples_per_label_test=3)
    tok = load_tokenizer(src)
    test_only, hit = encode_records_cached(tok, {"test": task.test}, task.description, 16, cache_dir)
    assert set(test_only) == {"test"} and not hit
    both, hit = encode_records_cached(
        tok, {"train": task.train, "test": task.test}, task.description, 16, cache_dir
    )
    assert set(both) == {"train", "test"} and len(both["train"]["labels"]) == 20
    assert both["test"]["ids"].tolist() == test_only["test"]["ids"].tolist()
    again, hit = encode_records_cached(tok, {"test": task.test}, task.description, 16, cache_dir)
    assert hit and again["test"]["ids"].tolist() == test_only["test"]["ids"].tolist()


def test_tokenizer_special_ids_and_encoding(data_dir: Path) -> None:
    tok = load_tokenizer(resolve_source(data_dir))
    ids = tok.tokenizer.encode("The City").ids
    assert ids[0] == 101 and ids[-1] == 102 and tok.tokenizer.token_to_id("the") in ids
    enc = encode_texts(tok, ["the city", "a " * 50], max_length=8)
    assert enc.ids.dtype == np.uint16 and enc.ids.shape == (2, 8)
    assert enc.lengths.tolist() == [4, 8]
    assert enc.ids[0, 4:].tolist() == [0, 0, 0, 0]
    assert enc.ids[1, -1] == 102  # truncated sample still ends with [SEP]


def test_vocab_without_special_tokens(tmp_path: Path) -> None:
    bad = tmp_path / "vocab.txt"
    bad.write_text("\n".join(["hello", "world"] * 60))
    with pytest.raises(DataError, match=r"vocab.txt: vocabulary lacks .*\[PAD\]"):
        tokenizer_from_file(bad)
    good = write_vocab(tmp_path / "good.txt")
    assert tokenizer_from_file(good).tokenizer.token_to_id("[MASK]") == 103


def test_nested_subsets_and_held_out(data_dir: Path, cache_dir: Path) -> None:
    src = resolve_source(data_dir)
    tok = load_tokenizer(src)
    idx = wiki_index(src, cache_dir)
    assert idx.total == 60
    small = load_wiki_corpus(src, tok, 10, seed=3, max_length=16, eval_articles=5, cache_dir=cache_dir)
    big = load_wiki_corpus(src, tok, 30, seed=3, max_length=16, eval_articles=5, cache_dir=cache_dir)
    assert np.array_equal(big.train.ids[:10], small.train.ids)  # 10 ⊂ 30, same order
    assert np.array_equal(big.eval.ids, small.eval.ids)
    order = corpus_mod.article_order(60, 3)
    assert not set(order[:30]) & set(order[-5:])  # held-out never in a subset
    other = load_wiki_corpus(src, tok, 10, seed=4, max_length=16, eval_articles=5, cache_dir=cache_dir)
    assert not np.array_equal(other.train.ids, small.train.ids)
    ids = small.train.ids
    assert (ids[:, 0] == 101).all()
    assert all(ids[i, small.train.lengths[i] - 1] == 102 for i in range(10))
    assert small.train.lengths.max() <= 16


def test_corpus_cache_is_reused(data_dir: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = resolve_source(data_dir)
    tok = load_tokenizer(src)
    first = load_wiki_corpus(src, tok, 20, max_length=16, eval_articles=5, cache_dir=cache_dir)
    assert first.description["cache_hit"] is False

    def boom(*a, **k):
        raise AssertionError("re-tokenized although cached")

    monkeypatch.setattr(corpus_mod, "encode_texts", boom)
    second = load_wiki_corpus(src, tok, 20, max_length=16, eval_articles=5, cache_dir=cache_dir)
    assert second.description["cache_hit"] is True
    assert np.array_equal(first.train.ids, second.train.ids)
    smaller = load_wiki_corpus(
        src, tok, 12, max_length=16, eval_articles=5, cache_dir=cache_dir
    )  # sliced from 20
    assert np.array_equal(smaller.train.ids, first.train.ids[:12])
    assert not list(cache_dir.glob(".*tmp"))


def test_failed_build_leaves_no_cache(data_dir: Path, cache_dir: Path) -> None:
    shard = sorted((data_dir / "wikipedia").glob("*.gz"))[1]
    with gzip.open(shard, "at", encoding="utf-8") as f:
        f.write('{"title": "broken", "text": 5}\n')
    src = resolve_source(data_dir)
    tok = load_tokenizer(src)
    with pytest.raises(DataError, match=r"enwiki_01.jsonl.gz:31: expected an object with string fields"):
        load_wiki_corpus(src, tok, 60, max_length=16, eval_articles=1, seed=0, cache_dir=cache_dir)
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(("wiki-", ".wiki")) and p.is_dir()]


# ---------------------------------------------------------------- bad input


def test_malformed_csv_row(data_dir: Path) -> None:
    p = data_dir / "agnews" / "test.csv"
    p.write_text('"1","ok title","ok text"\n"2","only two fields"\n')
    with pytest.raises(
        DataError, match=r"test.csv:2: expected 3 fields \(label, title, description\), got 2"
    ):
        load_task("agnews", resolve_source(data_dir))


def test_unknown_label(data_dir: Path) -> None:
    write_csv(data_dir / "agnews" / "test.csv", [["1", "a", "b"], ["7", "c", "d"]])
    with pytest.raises(DataError, match=r"test.csv:2: unknown label '7' in field 'label' \(expected 1..4\)"):
        load_task("agnews", resolve_source(data_dir))


def test_empty_text(data_dir: Path) -> None:
    write_csv(data_dir / "dbpedia" / "test_subset.csv.gz", [[3, "t", " x"], [4, "t", "   "]], quote_all=False)
    with pytest.raises(DataError, match=r"test_subset.csv.gz:2: empty text"):
        load_task("dbpedia", resolve_source(data_dir))


def test_fewrel_wrong_shape(data_dir: Path) -> None:
    p = data_dir / "fewrel" / "train_wiki.json"
    p.write_text(json.dumps([1, 2, 3]))
    with pytest.raises(DataError, match=r"train_wiki.json: expected a JSON object"):
        load_task("fewrel", resolve_source(data_dir))
    good = {"P1": [{"tokens": ["a", "b"], "h": ["a", "Q", [[0]]], "t": ["b", "Q", [[9]]]}] * 80}
    p.write_text(json.dumps(good))
    with pytest.raises(DataError, match=r"\['P1'\]\[0\]\['t'\]: token positions must be ints in 0..1"):
        load_task("fewrel", resolve_source(data_dir))
    p.write_text("{not json")
    with pytest.raises(DataError, match=r"train_wiki.json: not valid JSON"):
        load_task("fewrel", resolve_source(data_dir))


def test_missing_file_names_what_was_looked_for(data_dir: Path) -> None:
    (data_dir / "agnews" / "test.csv").unlink()
    with pytest.raises(DataNotFoundError) as e:
        load_task("agnews", resolve_source(data_dir))
    msg = str(e.value)
    assert "dataset 'agnews' not found" in msg and "agnews/test.csv" in msg and "TINYLM_DATA_DIR" in msg
    assert "hub" in msg


def test_no_source_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINYLM_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataNotFoundError, match="no local data directory was given"):
        load_task("dbpedia", resolve_source(None))
    with pytest.raises(DataNotFoundError, match="FewRel is only read from local files"):
        load_task("fewrel", resolve_source(None))


def test_unreachable_hub_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """No local data and the hub tried but unreachable: a DataNotFoundError saying how to work offline,
    not a network traceback."""
    from tokenizers import Tokenizer

    from tinylm.data.sources import DataSource

    def offline(*_a, **_k):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(Tokenizer, "from_pretrained", offline)
    with pytest.raises(DataNotFoundError, match=r"bert-base-uncased.*hub.*ConnectionError.*TINYLM_DATA_DIR"):
        load_tokenizer(DataSource(local_dir=None, hub=True))


def test_unknown_task(data_dir: Path) -> None:
    with pytest.raises(DataError, match="unknown task 'imdb'"):
        load_task("imdb", resolve_source(data_dir))


def test_cli_data_stats_on_fixture(data_dir: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    from tinylm.cli import main

    monkeypatch.setenv("TINYLM_CACHE_DIR", str(data_dir.parent / "c"))
    assert main(["data", "stats", "--data-dir", str(data_dir), "--json", "--wiki-sample", "10"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["agnews"]["test"]["rows"] == 20 and stats["wikipedia"]["articles"] == 60
    assert main(["data", "stats", "--data-dir", str(data_dir / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_packing_gives_full_windows_over_whole_articles(data_dir: Path, cache_dir: Path) -> None:
    src = resolve_source(data_dir)
    tok = load_tokenizer(src)
    plain = load_wiki_corpus(src, tok, 10, seed=3, max_length=16, eval_articles=5, cache_dir=cache_dir)
    packed = load_wiki_corpus(
        src, tok, 10, seed=3, max_length=16, eval_articles=5, cache_dir=cache_dir, packing=True
    )
    texts = corpus_mod.read_selected(wiki_index(src, cache_dir), corpus_mod.article_order(60, 3)[:10])
    words = [tok.tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    stream = [i for w in words for i in [*w, 102]]
    n = len(packed.train)
    assert n == -(-len(stream) // 14) and packed.description["packing"] and packed.description["samples"] == n
    assert (packed.train.lengths[:-1] == 16).all() and 3 <= packed.train.lengths[-1] <= 16  # full windows
    body = [packed.train.ids[w, 1 : packed.train.lengths[w] - 1].tolist() for w in range(n)]
    assert [i for b in body for i in b] == stream  # every token of every article, in order
    assert (packed.train.ids[:, 0] == 101).all()
    assert packed.train.lengths.sum() > plain.train.lengths.sum()
    assert np.array_equal(packed.eval.ids, plain.eval.ids)  # held-out samples are first tokens either way
