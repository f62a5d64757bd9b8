"""Documents of a `file:` pre-training corpus: a text file, a JSON-lines file, or a directory of them.

Formats (by suffix):

* `.txt` / `.txt.gz` — one document per line; or, when the file has a blank line anywhere, documents
  separated by one or more blank lines (the lines of a document joined with a newline).
* `.jsonl` / `.jsonl.gz` — one JSON object per line with a non-empty string field `text` (other fields,
  e.g. the `score` of `tinylm corpus select`, are ignored); blank lines are skipped.
* a directory — every file above in it (not in sub-directories), in name order; other files (e.g. a
  `manifest.json`) are ignored.

Documents are numbered in file order; the corpus order, nested subsets and held-out documents are then
made exactly as for Wikipedia (`tinylm.data.corpus`). Bad input is one `DataError` naming the file and
line: bytes that are not UTF-8, a line that is not a JSON object with a string `text`, an empty document.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.data.tokenize import EncodedTexts, TokenizerInfo, encode_texts
from tinylm.errors import DataError
from tinylm.fileio import file_fingerprint

SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz")
PREFIX = "file:"


def corpus_path(spec: str) -> Path:
    """The path of a `file:PATH` corpus spec (`~` expanded)."""
    if not spec.startswith(PREFIX) or not spec[len(PREFIX) :]:
        raise DataError(f"corpus: expected 'wikipedia' or file:PATH, got {spec!r}")
    return Path(spec[len(PREFIX) :]).expanduser()


def document_files(path: Path) -> list[Path]:
    """The corpus files of a file or directory, in name order."""
    if path.is_file():
        if not path.name.endswith(SUFFIXES):
            raise DataError(f"{path}: not a corpus file (expected a name ending in {', '.join(SUFFIXES)})")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
        if not files:
            raise DataError(f"{path}: no corpus files in this directory (expected {', '.join(SUFFIXES)})")
        return files
    raise DataError(f"{path}: no such file or directory (corpus file:{path})")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a file, gzip or not; a line that is not UTF-8 is an error naming it."""
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for no, raw in enumerate(f, start=1):
                try:
                    yield no, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{no}: not valid UTF-8 ({e.reason} at byte {e.start})") from e
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e


def _jsonl_documents(path: Path) -> Iterator[str]:
    for no, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{no}: not a JSON object ({e})") from e
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise DataError(f"{path}:{no}: expected a JSON object with a string field 'text'")
        if not obj["text"].strip():
            raise DataError(f"{path}:{no}: empty document (field 'text' is blank)")
        yield obj["text"]


def _text_documents(path: Path) -> Iterator[str]:
    lines = list(_lines(path))
    if not any(line.strip() for _, line in lines):
        raise DataError(f"{path}: no documents (the file is empty or blank)")
    if all(line.strip() for _, line in lines):  # one document per line
        yield from (line for _, line in lines)
        return
    block: list[str] = []
    for _, line in [*lines, (0, "")]:  # blank-line separated; a sentinel blank line ends the last one
        if line.strip():
            block.append(line)
        elif block:
            yield "\n".join(block)
            block = []


def read_documents(path: Path) -> list[str]:
    """Every document of a corpus file or directory, in order."""
    docs: list[str] = []
    for f in document_files(path):
        reader = _jsonl_documents if f.name.endswith((".jsonl", ".jsonl.gz")) else _text_documents
        docs.extend(reader(f))
    return docs


@dataclass
class FileDocuments:
    """A `file:` corpus read into memory: what `tinylm.data.corpus` numbers, orders and tokenizes."""

    path: Path
    files: list[Path]
    documents: list[str]

    @classmethod
    def open(cls, spec: str) -> FileDocuments:
        path = corpus_path(spec)
        return cls(path, document_files(path), read_documents(path))

    @property
    def total(self) -> int:
        return len(self.documents)

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.path}"

    def fingerprint(self) -> list[dict[str, Any]]:
        return [file_fingerprint(p) | {"path": str(p.resolve())} for p in self.files]

    def read(self, selected: np.ndarray) -> list[str]:
        return [self.documents[int(i)] for i in selected]


def encode_documents(spec: str, tok: TokenizerInfo, max_length: int) -> EncodedTexts:
    """Every document of a `file:` corpus, in file order, as its first `max_length` WordPieces ([CLS] …
    [SEP], as a task's texts): distillation's unlabelled text, a selected corpus's token counts."""
    docs = FileDocuments.open(spec)
    return encode_texts(tok, docs.read(np.arange(docs.total)), max_length)
