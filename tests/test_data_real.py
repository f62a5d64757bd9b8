"""Facts about the real files under $TINYLM_DATA_DIR (a missing directory fails, never skips)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from tinylm.data.corpus import load_wiki_corpus, wiki_index
from tinylm.data.sources import resolve_source
from tinylm.data.tasks import load_pool, load_task
from tinylm.data.tokenize import load_tokenizer


def test_agnews_test_set(real_data_dir: Path) -> None:
    pool = load_pool("agnews", resolve_source(real_data_dir))
    assert len(pool.test) == 7600
    assert np.bincount([r.label for r in pool.test]).tolist() == [1900] * 4
    assert len(pool.train) == 20000


def test_dbpedia_classes(real_data_dir: Path) -> None:
    pool = load_pool("dbpedia", resolve_source(real_data_dir))
    assert (
        len(pool.label_names) == 14
        and pool.label_names[0] == "Company"
        and pool.label_names[-1] == "WrittenWork"
    )
    assert sorted({r.label for r in pool.train}) == list(range(14))
    assert len(pool.test) == 11891
    task = load_task("dbpedia", resolve_source(real_data_dir))
    assert len(task.train) == 1400 and len(task.test) == 1400


def test_fewrel_relations_and_split(real_data_dir: Path) -> None:
    task = load_task("fewrel", resolve_source(real_data_dir))
    assert task.num_labels == 64
    assert len(task.train) == 64 * 630 and len(task.test) == 64 * 70
    assert np.bincount([r.label for r in task.train]).tolist() == [630] * 64
    assert not {r.id for r in task.train} & {r.id for r in task.test}
    assert task.description["fewrel_marking"] == "punct"


def test_wikipedia_distinct_articles(real_data_dir: Path, real_cache_dir: Path) -> None:
    src = resolve_source(real_data_dir)
    idx = wiki_index(src, real_cache_dir)
    assert idx.total == 324645
    titles = set()
    for shard in idx.shards:
        with gzip.open(shard, "rb") as f:
            for line in f:
                titles.add(json.loads(line)["title"])
    assert len(titles) == 324645


def test_bert_tokenizer_ids(real_data_dir: Path) -> None:
    tok = load_tokenizer(resolve_source(real_data_dir))
    assert tok.tokenizer.encode("Hello world").ids == [101, 7592, 2088, 102]
    text = "Hello, World! Tiny language models are pre-trained on Wikipedia."
    assert tok.tokenizer.encode(text).ids == [
        101,
        7592,
        1010,
        2088,
        999,
        4714,
        2653,
        4275,
        2024,
        3653,
        1011,
        4738,
        2006,
        16948,
        1012,
        102,
    ]


def test_real_nested_subset(real_data_dir: Path, real_cache_dir: Path) -> None:
    src = resolve_source(real_data_dir)
    tok = load_tokenizer(src)
    c = load_wiki_corpus(src, tok, 2000, max_length=128, eval_articles=200, cache_dir=real_cache_dir)
    small = load_wiki_corpus(src, tok, 500, max_length=128, eval_articles=200, cache_dir=real_cache_dir)
    assert c.train.ids.shape == (2000, 128) and (c.train.ids[:, 0] == 101).all()
    assert np.array_equal(small.train.ids, c.train.ids[:500])
    assert c.train.lengths.max() == 128 and c.train.lengths.min() >= 3
