"""Shared fixtures: a small data directory written by the tests, and the real data (never skipped)."""

from __future__ import annotations

import csv
import gzip
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = (
    "the a of and in to is was on for with by as at from he she it that this first new world city game team "
    "company music film river album school village sport play won year market stock oil price born "
    "tiny language model data news report science space computer station airport town capital"
).split()


def write_vocab(path: Path, words: list[str] = WORDS) -> Path:
    """A BERT-style vocab: the special tokens at the bert-base-uncased ids, then letters and words."""
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list("abcdefghijklmnopqrstuvwxyz0123456789.,'-!?@#")
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab += [w for w in words if w not in vocab]
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[list[str]], quote_all: bool = True) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_NONNUMERIC, lineterminator="\n")
        w.writerows(rows)
    return path


def make_data_dir(root: Path, n_wiki: int = 60) -> Path:
    """A miniature copy of the shared/data layout, in the real file formats."""
    from tokenizers.implementations import BertWordPieceTokenizer

    (root / "agnews").mkdir(parents=True)
    (root / "dbpedia").mkdir()
    (root / "fewrel").mkdir()
    (root / "wikipedia").mkdir()
    tokdir = root / "tokenizer" / "bert-base-uncased"
    tokdir.mkdir(parents=True)
    vocab = write_vocab(tokdir / "vocab.txt")
    BertWordPieceTokenizer(str(vocab), lowercase=True).save(str(tokdir / "tokenizer.json"))

    names = ["World", "Sports", "Business", "Sci/Tech"]
    (root / "agnews" / "classes.txt").write_text("\n".join(names) + "\n")
    train = [
        [str(1 + i % 4), f"title {i} {WORDS[i % len(WORDS)]}", f"the news report {i} on {names[i % 4]}"]
        for i in range(40)
    ]
    test = [[str(1 + i % 4), f"test title {i}", f"a report {i} about {names[i % 4]}"] for i in range(20)]
    write_csv(root / "agnews" / "train_subset_20k.csv.gz", train)
    write_csv(root / "agnews" / "test.csv", test)

    db_names = [f"Class{i}" for i in range(1, 15)]
    (root / "dbpedia" / "classes.txt").write_text("\n".join(db_names) + "\n")
    dtrain = [[1 + i % 14, f"Title {i}", f" content of page {i} in the city"] for i in range(56)]
    dtest = [[1 + i % 14, f"Test {i}", f" a village page {i}"] for i in range(28)]
    write_csv(root / "dbpedia" / "train_subset30k.csv.gz", dtrain, quote_all=False)
    write_csv(root / "dbpedia" / "test_subset.csv.gz", dtest, quote_all=False)

    rel = {}
    for r in range(3):
        rel[f"P{r + 10}"] = [
            {
                "tokens": f"the city {i} is on the river near town".split(),
                "h": ["city", "Q1", [[1, 2]]],
                "t": ["river", "Q2", [[6]]],
            }
            for i in range(80)
        ]
    (root / "fewrel" / "train_wiki.json").write_text(json.dumps(rel))
    (root / "fewrel" / "pid2name.json").write_text(
        json.dumps({f"P{r + 10}": [f"rel{r}", "desc"] for r in range(3)})
    )

    for s, (lo, hi) in enumerate([(0, n_wiki // 2), (n_wiki // 2, n_wiki)]):
        with gzip.open(root / "wikipedia" / f"enwiki_{s:02d}.jsonl.gz", "wt", encoding="utf-8") as f:
            for i in range(lo, hi):
                text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(5 + i % 40))
                f.write(
                    json.dumps({"source": "t", "page_id": i, "title": f"Article {i}", "text": text}) + "\n"
                )
    return root


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return make_data_dir(tmp_path / "data")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real data under $TINYLM_DATA_DIR; its absence is a failure, not a skip."""
    env = os.environ.get("TINYLM_DATA_DIR")
    if not env or not (Path(env) / "MANIFEST.md").is_file():
        pytest.fail(
            f"TINYLM_DATA_DIR must point at the real data (shared/data with MANIFEST.md); got {env!r}"
        )
    return Path(env)


@pytest.fixture(scope="session")
def real_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-cache")
