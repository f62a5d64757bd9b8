"""The pre-training corpus (Wikipedia, or a `file:` corpus): seeded document order, nested subsets,
128-token samples.

The articles of all shards are numbered in shard order; one seeded permutation of those numbers
defines the corpus order. A subset of N articles is the first N of that order, so 20K ⊂ 40K ⊂ 90K.
The last `eval_articles` of the order are held out for MLM evaluation and never enter a subset.
A sample is [CLS] + the article's first WordPieces + [SEP], truncated to `max_length`.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tinylm.data.sources import DataSource
from tinylm.data.tokenize import (
    EncodedTexts,
    TokenizerInfo,
    cached_arrays,
    default_cache_dir,
    encode_texts,
    pack_texts,
)
from tinylm.errors import DataError
from tinylm.fileio import file_fingerprint, stable_hash, write_json


def wiki_shards(source: DataSource) -> list[Path]:
    files = source.require_local("wikipedia")
    return sorted(files["shards"].parent.glob(files["shards"].name))


def count_lines(path: Path) -> int:
    n = 0
    try:
        with gzip.open(path, "rb") as f:
            while block := f.read(1 << 24):
                n += block.count(b"\n")
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read gzip data ({e})") from e
    return n


def parse_article(path: Path, line_no: int, line: bytes) -> tuple[str, str]:
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}:{line_no}: not a JSON object ({e})") from e
    if (
        not isinstance(obj, dict)
        or not isinstance(obj.get("text"), str)
        or not isinstance(obj.get("title"), str)
    ):
        raise DataError(f"{path}:{line_no}: expected an object with string fields 'title' and 'text'")
    if not obj["text"].strip():
        raise DataError(f"{path}:{line_no}: empty 'text' (article {obj['title']!r})")
    return obj["title"], obj["text"]


def iter_articles(shards: list[Path], wanted: np.ndarray | None = None) -> Iterator[tuple[int, str, str]]:
    """Yield (global index, title, text) in shard order; only indices where `wanted` is True if given."""
    g = 0
    for path in shards:
        try:
            with gzip.open(path, "rb") as f:
                for line_no, line in enumerate(f, start=1):
                    if wanted is None or (g < len(wanted) and wanted[g]):
                        title, text = parse_article(path, line_no, line)
                        yield g, title, text
                    g += 1
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: cannot read gzip data ({e})") from e


class Documents(Protocol):
    """A numbered collection of documents a pre-training corpus is made from (Wikipedia's shards, or a
    `file:` corpus)."""

    @property
    def total(self) -> int: ...

    @property
    def name(self) -> str: ...

    def fingerprint(self) -> list[dict[str, Any]]: ...

    def read(self, selected: np.ndarray) -> list[str]: ...


@dataclass
class WikiIndex:
    shards: list[Path]
    counts: list[int]

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def name(self) -> str:
        return "wikipedia"

    def fingerprint(self) -> list[dict[str, Any]]:
        return [file_fingerprint(p) for p in self.shards]

    def read(self, selected: np.ndarray) -> list[str]:
        return read_selected(self, selected)


def wiki_index(source: DataSource, cache_dir: str | os.PathLike | None = None) -> WikiIndex:
    """Article counts per shard (cached, keyed by the shards' size and mtime)."""
    shards = wiki_shards(source)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = stable_hash([file_fingerprint(p) for p in shards])
    path = root / f"wiki-index-{key}.json"
    if path.is_file():
        counts = json.loads(path.read_text())["counts"]
    else:
        counts = [count_lines(p) for p in shards]
        write_json(path, {"shards": [str(p) for p in shards], "counts": counts})
    return WikiIndex(shards, counts)


def article_order(total: int, seed: int) -> np.ndarray:
    """The seeded corpus order: a permutation of all article numbers."""
    return np.random.default_rng(seed).permutation(total)


@dataclass
class WikiCorpus:
    """Tokenized pre-training samples of a nested subset plus held-out evaluation samples."""

    train: EncodedTexts
    eval: EncodedTexts
    description: dict[str, Any]


def read_selected(index: WikiIndex, selected: np.ndarray) -> list[str]:
    """Texts of the articles `selected` (global numbers), in the order given."""
    wanted = np.zeros(index.total, dtype=bool)
    wanted[selected] = True
    texts: dict[int, str] = {}
    for g, _title, text in iter_articles(index.shards, wanted):
        texts[g] = text
    return [texts[int(g)] for g in selected]


def load_wiki_corpus(
    source: DataSource,
    tok: TokenizerInfo,
    num_articles: int,
    seed: int = 42,
    max_length: int = 128,
    eval_articles: int = 1000,
    cache_dir: str | os.PathLike | None = None,
    packing: bool = False,
) -> WikiCorpus:
    """The first `num_articles` of the seeded order (tokenized, cached) and `eval_articles` held-out ones.
    With `packing`, the training samples are full windows over the articles' whole text (`pack_texts`)
    instead of each article's first tokens; held-out samples are first tokens either way."""
    if source.local_files("wikipedia") is None and source.hub:  # pragma: no cover - needs network
        return _hub_corpus(tok, num_articles, seed, max_length, eval_articles)
    index = wiki_index(source, cache_dir)
    corpus = load_documents_corpus(
        index, tok, num_articles, seed, max_length, eval_articles, cache_dir, packing
    )
    corpus.description |= {"shards": [str(p) for p in index.shards]}
    return corpus


def load_file_corpus(
    spec: str,
    tok: TokenizerInfo,
    num_articles: int,
    seed: int = 42,
    max_length: int = 128,
    eval_articles: int = 1000,
    cache_dir: str | os.PathLike | None = None,
    packing: bool = False,
) -> WikiCorpus:
    """A `file:PATH` corpus (`tinylm.data.documents`), ordered, split and cached as Wikipedia is."""
    from tinylm.data.documents import FileDocuments

    docs = FileDocuments.open(spec)
    corpus = load_documents_corpus(
        docs, tok, num_articles, seed, max_length, eval_articles, cache_dir, packing
    )
    corpus.description |= {"files": [str(p) for p in docs.files]}
    return corpus


def load_documents_corpus(
    docs: Documents,
    tok: TokenizerInfo,
    num_articles: int,
    seed: int,
    max_length: int,
    eval_articles: int,
    cache_dir: str | os.PathLike | None,
    packing: bool,
) -> WikiCorpus:
    """The first `num_articles` documents of the seeded order and the last `eval_articles` (held out)."""
    if num_articles < 1 or num_articles + eval_articles > docs.total:
        raise DataError(
            f"num_articles={num_articles} with eval_articles={eval_articles} does not fit the "
            f"{docs.total} documents of {docs.name}"
        )
    order = article_order(docs.total, seed)
    held_out = order[docs.total - eval_articles :]
    key = {
        "shards": docs.fingerprint(),
        "tokenizer": tok.fingerprint,
        "seed": seed,
        "max_length": max_length,
    }
    prefix = "wiki" if docs.name == "wikipedia" else "file"
    arrays, hit = document_arrays(
        docs, tok, order[:num_articles], max_length, cache_dir, key, packing, prefix
    )
    ev = _held_out(docs, tok, held_out, max_length, cache_dir, key | {"eval_articles": eval_articles}, prefix)
    n = len(arrays["lengths"]) if packing else num_articles
    train = EncodedTexts(arrays["ids"][:n], arrays["lengths"][:n])
    description = {
        "corpus": docs.name,
        "total_articles": docs.total,
        "num_articles": num_articles,
        "seed": seed,
        "max_length": max_length,
        "eval_articles": eval_articles,
        "subset_hash": stable_hash(order[:num_articles].tolist()),
        "tokens": int(train.lengths.sum()),
        "packing": packing,
        "samples": len(train),
        "cache_hit": hit,
    }
    return WikiCorpus(train, ev, description)


def document_arrays(
    docs: Documents,
    tok: TokenizerInfo,
    selected: np.ndarray,
    max_length: int,
    cache_dir: str | os.PathLike | None,
    key: dict[str, Any],
    packing: bool,
    prefix: str,
) -> tuple[dict[str, np.ndarray], bool]:
    """Token arrays of the selected documents (first tokens, or packed windows), cached; a nested subset is
    sliced from a cached larger one. Returns them and whether a cache was hit."""

    def build() -> dict[str, np.ndarray]:
        encode = pack_texts if packing else encode_texts
        enc = encode(tok, docs.read(selected), max_length)
        return {"ids": enc.ids, "lengths": enc.lengths}

    n = len(selected)
    arrays = None if packing else _reuse_larger(cache_dir, key, n, prefix)
    if arrays is not None:
        return arrays, True
    name, extra = (f"{prefix}-packed", {"packing": True}) if packing else (prefix, {})
    arrays, _, hit = cached_arrays(cache_dir, name, key | {"num_articles": n} | extra, build)
    return arrays, hit


def _held_out(
    docs: Documents,
    tok: TokenizerInfo,
    held_out: np.ndarray,
    max_length: int,
    cache_dir: str | os.PathLike | None,
    key: dict[str, Any],
    prefix: str,
) -> EncodedTexts:
    """The held-out documents' first tokens (cached): what every MLM evaluation reads."""

    def build() -> dict[str, np.ndarray]:
        enc = encode_texts(tok, docs.read(held_out), max_length)
        return {"ids": enc.ids, "lengths": enc.lengths}

    ev, _, _ = cached_arrays(cache_dir, f"{prefix}-eval", key, build)
    return EncodedTexts(ev["ids"], ev["lengths"])


def _reuse_larger(
    cache_dir: str | os.PathLike | None, key: dict[str, Any], n: int, prefix: str = "wiki"
) -> dict[str, np.ndarray] | None:
    """Nested subsets: a cached larger subset of the same order already holds the first n samples."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not root.is_dir():
        return None
    best = None
    for meta in root.glob(f"{prefix}-*/meta.json"):
        try:
            k = json.loads(meta.read_text())["key"]
        except (OSError, ValueError, KeyError):
            continue
        m = k.get("num_articles")
        same = {a: b for a, b in k.items() if a != "num_articles"} == json.loads(json.dumps(key, default=str))
        if same and isinstance(m, int) and m > n and (best is None or m < best[0]):
            best = (m, meta.parent)
    if best is None:
        return None
    return {"ids": np.load(best[1] / "ids.npy")[:n], "lengths": np.load(best[1] / "lengths.npy")[:n]}


def _hub_corpus(
    tok: TokenizerInfo, n: int, seed: int, max_length: int, n_eval: int
) -> WikiCorpus:  # pragma: no cover
    """Hub path: stream wikimedia/wikipedia 20231101.en, shuffle with a buffer, take n (+ n_eval held out)."""
    from tinylm.data.sources import load_hub_dataset

    stream = load_hub_dataset("wikipedia", "train", streaming=True).shuffle(seed=seed, buffer_size=10_000)
    texts = [row["text"] for _, row in zip(range(n + n_eval), stream, strict=False)]
    train, ev = encode_texts(tok, texts[:n], max_length), encode_texts(tok, texts[n:], max_length)
    desc = {
        "corpus": "hf://wikimedia/wikipedia/20231101.en (streamed, buffer shuffle)",
        "num_articles": n,
        "seed": seed,
        "max_length": max_length,
        "eval_articles": n_eval,
        "tokens": int(train.lengths.sum()),
    }
    return WikiCorpus(train, ev, desc)
