"""WordPiece tokenization (the `tokenizers` library, bert-base-uncased vocab) and on-disk token caches.

Token arrays are stored as uint16 `ids.npy` (N × max_length, padded with [PAD]=0) plus int32
`lengths.npy`, in a directory named by a hash of everything that determines them; directories are
written to a temporary name and renamed, so a cache is either complete or absent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from tinylm.data.sources import DataSource, hub_failed
from tinylm.errors import DataError
from tinylm.fileio import atomic_dir, sha256_file, stable_hash
from tinylm.registry import SPECIAL_IDS


@dataclass
class TokenizerInfo:
    tokenizer: Tokenizer
    path: str
    fingerprint: str

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()


def check_special_tokens(tok: Tokenizer, path: str) -> None:
    problems = []
    for token, expected in SPECIAL_IDS.items():
        got = tok.token_to_id(token)
        if got != expected:
            problems.append(
                f"{token} has id {got} (expected {expected})" if got is not None else f"{token} is missing"
            )
    if problems:
        raise DataError(
            f"{path}: vocabulary lacks the bert-base-uncased special tokens: {'; '.join(problems)}"
        )


def tokenizer_from_file(path: str | os.PathLike) -> TokenizerInfo:
    """Load a WordPiece tokenizer from tokenizer.json or a BERT vocab.txt, checking the special ids."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tokenizer file not found: {path}")
    if path.suffix == ".txt":
        from tokenizers.implementations import BertWordPieceTokenizer

        # Validate the vocab before building: BertWordPieceTokenizer fails cryptically without [UNK] etc.
        vocab = {line.rstrip("\n"): i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines())}
        missing = [
            f"{t} (expected id {i}, found {vocab.get(t)})"
            for t, i in SPECIAL_IDS.items()
            if vocab.get(t) != i
        ]
        if missing:
            raise DataError(
                f"{path}: vocabulary lacks the bert-base-uncased special tokens: {'; '.join(missing)}"
            )
        tok = BertWordPieceTokenizer(str(path), lowercase=True)._tokenizer
    else:
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust error names the JSON problem
            raise DataError(f"{path}: not a valid tokenizers JSON file ({e})") from e
    check_special_tokens(tok, str(path))
    tok.no_padding()
    tok.no_truncation()
    return TokenizerInfo(tok, str(path), sha256_file(path)[:16])


def load_tokenizer(source: DataSource) -> TokenizerInfo:
    """The bert-base-uncased WordPiece tokenizer from the local data dir, else the hub."""
    files = source.local_files("tokenizer")
    if files is not None:
        return tokenizer_from_file(files["tokenizer"])
    if source.hub:
        try:
            tok = Tokenizer.from_pretrained("bert-base-uncased")
        except Exception as e:  # offline, or the hub refused: say how to work without it
            raise hub_failed("the bert-base-uncased tokenizer", "bert-base-uncased", e) from e
        check_special_tokens(tok, "hf://bert-base-uncased")
        return TokenizerInfo(tok, "hf://bert-base-uncased", stable_hash(tok.to_str()))
    raise source.not_found("tokenizer")


@dataclass
class EncodedTexts:
    """Padded token ids (uint16, N × max_length) and true lengths (int32, N) including [CLS]/[SEP]."""

    ids: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)


def encode_texts(
    tok: TokenizerInfo, texts: Sequence[str], max_length: int, batch: int = 4096
) -> EncodedTexts:
    """[CLS] + first WordPieces + [SEP], truncated to `max_length`, padded with [PAD]."""
    if max_length < 3:
        raise DataError(f"max_length must be at least 3 ([CLS] token [SEP]), got {max_length}")
    if tok.vocab_size > np.iinfo(np.uint16).max + 1:
        raise DataError(f"{tok.path}: vocabulary of {tok.vocab_size} does not fit uint16 token arrays")
    t = tok.tokenizer
    t.enable_truncation(max_length)
    ids = np.zeros((len(texts), max_length), dtype=np.uint16)
    lengths = np.zeros(len(texts), dtype=np.int32)
    try:
        for start in range(0, len(texts), batch):
            for j, enc in enumerate(
                t.encode_batch(list(texts[start : start + batch]), add_special_tokens=True)
            ):
                row = enc.ids
                ids[start + j, : len(row)] = row
                lengths[start + j] = len(row)
    finally:
        t.no_truncation()
    return EncodedTexts(ids, lengths)


def pack_texts(tok: TokenizerInfo, texts: Sequence[str], max_length: int, batch: int = 4096) -> EncodedTexts:
    """Full windows instead of first tokens: every text's WordPieces in order, texts separated by [SEP],
    cut into windows of max_length − 2 tokens, each wrapped as [CLS] … [SEP] (the last may be shorter)."""
    if max_length < 3:
        raise DataError(f"max_length must be at least 3 ([CLS] token [SEP]), got {max_length}")
    sep, cls = SPECIAL_IDS["[SEP]"], SPECIAL_IDS["[CLS]"]
    stream: list[int] = []
    for start in range(0, len(texts), batch):
        for enc in tok.tokenizer.encode_batch(list(texts[start : start + batch]), add_special_tokens=False):
            stream.extend(enc.ids)
            stream.append(sep)
    body = max_length - 2
    n = (len(stream) + body - 1) // body
    ids = np.zeros((n, max_length), dtype=np.uint16)
    lengths = np.zeros(n, dtype=np.int32)
    for w in range(n):
        chunk = stream[w * body : (w + 1) * body]
        ids[w, : len(chunk) + 2] = [cls, *chunk, sep]
        lengths[w] = len(chunk) + 2
    return EncodedTexts(ids, lengths)


def default_cache_dir() -> Path:
    env = os.environ.get("TINYLM_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "tinylm"


def cached_arrays(
    cache_dir: str | os.PathLike | None,
    kind: str,
    key: dict[str, Any],
    build: Callable[[], dict[str, np.ndarray]],
) -> tuple[dict[str, np.ndarray], Path, bool]:
    """Return arrays stored under `cache_dir/kind-<hash(key)>`, building and atomically saving them if absent.

    Returns (arrays, directory, hit) where hit tells whether the cache was reused.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"{kind}-{stable_hash(key)}"
    meta = target / "meta.json"
    if meta.is_file():
        try:
            names = json.loads(meta.read_text())["arrays"]
            return {n: np.load(target / f"{n}.npy", mmap_mode=None) for n in names}, target, True
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"cache {target} is unreadable ({e}); delete that directory to rebuild it") from e
    arrays = build()
    with atomic_dir(target) as tmp:
        for n, a in arrays.items():
            np.save(tmp / f"{n}.npy", a)
        (tmp / "meta.json").write_text(
            json.dumps({"key": key, "arrays": list(arrays)}, indent=2, default=str)
        )
    return arrays, target, False


def encode_records_cached(
    tok: TokenizerInfo,
    splits: dict[str, list],
    description: dict[str, Any],
    max_length: int,
    cache_dir: str | os.PathLike | None,
) -> tuple[dict[str, dict[str, np.ndarray]], bool]:
    """Token ids, lengths and labels of each split of Records, cached under a hash of the task description
    and the splits asked for (a committee's test-only entry must not answer a fine-tuning's request)."""
    key = {
        "task": description,
        "tokenizer": tok.fingerprint,
        "max_length": max_length,
        "splits": sorted(splits),
    }

    def build() -> dict[str, np.ndarray]:
        out = {}
        for split, records in splits.items():
            enc = encode_texts(tok, [r.text for r in records], max_length)
            out[f"{split}_ids"], out[f"{split}_lengths"] = enc.ids, enc.lengths
            out[f"{split}_labels"] = np.array([r.label for r in records], dtype=np.int64)
        return out

    arrays, _, hit = cached_arrays(cache_dir, "task", key, build)
    return {s: {k: arrays[f"{s}_{k}"] for k in ("ids", "lengths", "labels")} for s in splits}, hit
