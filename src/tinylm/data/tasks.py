"""Classification tasks of the paper (AG News, DBpedia-14, FewRel) as one record shape.

Every task yields `Record(text, label, id)` with 0-based labels and a list of label names; the
balanced, seeded per-label sampler draws the paper's train/test subsets from the full pools.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.config import TaskConfig
from tinylm.data.sources import DataSource, load_hub_dataset, resolve_source
from tinylm.errors import DataError
from tinylm.fileio import file_fingerprint, read_json_object, stable_hash
from tinylm.registry import TASKS, TaskSpec, resolve_per_label

FEWREL_MARKINGS = ("punct", "none")
# A text field may be long (a whole article): Python's csv module refuses fields over 128 KiB by default.
csv.field_size_limit(2**31 - 1)


@dataclass(frozen=True)
class Record:
    """One classification example: text, 0-based label, and a stable id (e.g. 'test:17', 'P931:5')."""

    text: str
    label: int
    id: str


@dataclass
class TaskPool:
    """The full train and test pools of a task before sampling."""

    name: str
    label_names: list[str]
    train: list[Record]
    test: list[Record]
    files: list[str]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskData:
    """A sampled task: what a run trains and evaluates on, and how it was drawn."""

    name: str
    label_names: list[str]
    train: list[Record]
    test: list[Record]
    description: dict[str, Any]
    validation: list[Record] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def split_validation(task: TaskData, per_label: int, seed: int) -> TaskData:
    """Hold out `per_label` training examples of every label (seeded) as a validation split."""
    if per_label == 0:
        return task
    train: list[Record] = []
    validation: list[Record] = []
    for label in range(task.num_labels):
        rows = [r for r in task.train if r.label == label]
        if len(rows) <= per_label:
            raise DataError(
                f"validation_per_label={per_label}: label {label} ({task.label_names[label]}) has only "
                f"{len(rows)} "
                "training examples; lower validation_per_label or raise samples_per_label_train"
            )
        chosen = set(
            np.random.default_rng([seed, label, 2]).choice(len(rows), size=per_label, replace=False).tolist()
        )
        for i, r in enumerate(rows):
            (validation if i in chosen else train).append(r)
    description = task.description | {
        "validation_per_label": per_label,
        "num_train": len(train),
        "num_validation": len(validation),
        "train_ids_hash": stable_hash([r.id for r in train]),
        "validation_ids_hash": stable_hash([r.id for r in validation]),
    }
    return TaskData(task.name, task.label_names, train, task.test, description, validation)


# ---------------------------------------------------------------- file readers


_DECIMAL = re.compile(r"[0-9]+")  # ASCII digits only ("²".isdigit() is True but int("²") fails)


def open_text(path: Path) -> io.TextIOBase:
    """Open a (possibly gzipped) UTF-8 text file."""
    if str(path).endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_label_csv(
    path: Path, num_labels: int, fields: tuple[str, ...], split: str, make_text: Callable[[list[str]], str]
) -> list[Record]:
    """Read a header-less `label,field,...` CSV with labels 1..num_labels into 0-based Records."""
    records: list[Record] = []
    reader = csv.reader(io.StringIO(read_utf8(path), newline=""), strict=True)  # a stray quote is an error
    row_no = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from e
        line = reader.line_num
        if len(row) != len(fields):
            raise DataError(
                f"{path}:{line}: expected {len(fields)} fields ({', '.join(fields)}), got {len(row)}"
            )
        raw = row[0].strip()
        if not _DECIMAL.fullmatch(raw) or not 1 <= int(raw) <= num_labels:
            raise DataError(
                f"{path}:{line}: unknown label {raw!r} in field '{fields[0]}' (expected 1..{num_labels})"
            )
        text = make_text(row).strip()
        if not text:
            raise DataError(f"{path}:{line}: empty text (fields {', '.join(fields[1:])} are blank)")
        records.append(Record(text=text, label=int(raw) - 1, id=f"{split}:{row_no}"))
        row_no += 1
    if not records:
        raise DataError(f"{path}: no rows (expected {', '.join(fields)} rows)")
    return records


def read_class_names(path: Path, expected: int) -> list[str]:
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != expected:
        raise DataError(f"{path}: expected {expected} class names, one per line, found {len(names)}")
    return names


# ---------------------------------------------------------------- the registered tasks


def load_label_csv_task(spec: TaskSpec, source: DataSource) -> TaskPool:
    """A 'label_csv' task (AG News, DBpedia): header-less CSV rows, labels 1..K -> 0..K-1,
    text = the spec's text columns joined by a space."""
    files = source.local_files(spec.name)
    if files is not None:
        cols = [spec.columns.index(c) for c in spec.text_columns]

        def text(r: list[str]) -> str:
            return " ".join(r[i].strip() for i in cols)

        k = spec.num_labels
        return TaskPool(
            name=spec.name,
            label_names=read_class_names(files["classes"], k),
            train=read_label_csv(files["train"], k, spec.columns, "train", text),
            test=read_label_csv(files["test"], k, spec.columns, "test", text),
            files=[str(files[key]) for key in ("train", "test", "classes")],
        )
    if source.hub:  # pragma: no cover - needs network
        return _hub_pool(spec)
    raise source.not_found(spec.name)


def _hub_pool(spec: TaskSpec) -> TaskPool:  # pragma: no cover - needs network
    splits = {}
    for split in ("train", "test"):
        ds = load_hub_dataset(spec.name, split)
        splits[split] = [
            Record(text=str(r[spec.hub_text_field]).strip(), label=int(r["label"]), id=f"{split}:{i}")
            for i, r in enumerate(ds)
        ]
    return TaskPool(
        spec.name, list(spec.label_names), splits["train"], splits["test"], files=[f"hf://{spec.name}"]
    )


def mark_entities(tokens: list[str], head: list[list[int]], tail: list[list[int]], marking: str) -> str:
    """Join FewRel tokens; with marking 'punct' the head span is wrapped in '@ … @' and the tail in '# …
    #'."""
    if marking == "none":
        return " ".join(tokens)
    before: dict[int, list[str]] = {}
    after: dict[int, list[str]] = {}
    for spans, mark in ((head, "@"), (tail, "#")):
        for span in spans:
            before.setdefault(min(span), []).append(mark)
            after.setdefault(max(span), []).append(mark)
    out: list[str] = []
    for i, tok in enumerate(tokens):
        out.extend(before.get(i, []))
        out.append(tok)
        out.extend(after.get(i, []))
    return " ".join(out)


def _fewrel_entity(path: Path, where: str, ent: Any, n_tokens: int) -> list[list[int]]:
    if not (isinstance(ent, list) and len(ent) == 3 and isinstance(ent[2], list) and ent[2]):
        raise DataError(
            f"{path}: {where}: expected [name, wikidata_id, [[token positions], ...]], got {str(ent)[:80]}"
        )
    for span in ent[2]:
        if not (
            isinstance(span, list) and span and all(isinstance(i, int) and 0 <= i < n_tokens for i in span)
        ):
            raise DataError(
                f"{path}: {where}: token positions must be ints in 0..{n_tokens - 1}, got {span!r}"
            )
    return ent[2]


def _fewrel_names(path: Path) -> dict[str, list[str]]:
    """pid2name.json: {"P123": ["name", "description"], ...}; every problem names the entry."""
    names = read_json_object(path, "{relation_id: [name, description]}", DataError)
    for pid, entry in names.items():
        if not (isinstance(entry, list) and entry and isinstance(entry[0], str)):
            raise DataError(f"{path}: [{pid!r}]: expected [name, description], got {str(entry)[:60]}")
    return names


def load_fewrel(
    source: DataSource, marking: str = "punct", split_seed: int = 42, test_per_relation: int = 70
) -> TaskPool:
    """FewRel 1.0 train_wiki: 64 relations as labels; each relation's instances split (seeded) into
    train/test."""
    if marking not in FEWREL_MARKINGS:
        raise DataError(f"fewrel_marking: expected one of {FEWREL_MARKINGS}, got {marking!r}")
    files = source.require_local("fewrel", optional=("names",))
    path = files["train"]
    data = read_json_object(path, "{relation_id: [instances]}", DataError)
    names = _fewrel_names(files["names"]) if "names" in files else {}
    label_names: list[str] = []
    train: list[Record] = []
    test: list[Record] = []
    for label, (pid, items) in enumerate(data.items()):
        if not isinstance(items, list) or len(items) <= test_per_relation:
            n = len(items) if isinstance(items, list) else type(items).__name__
            raise DataError(
                f"{path}: [{pid!r}]: expected a list of more than {test_per_relation} instances, got {n}"
            )
        label_names.append(f"{pid} ({names[pid][0]})" if pid in names else pid)
        texts = []
        for i, inst in enumerate(items):
            where = f"[{pid!r}][{i}]"
            if not isinstance(inst, dict) or not isinstance(inst.get("tokens"), list) or not inst["tokens"]:
                raise DataError(f"{path}: {where}: expected an object with a non-empty 'tokens' list")
            toks = inst["tokens"]
            bad = next((j for j, t in enumerate(toks) if not isinstance(t, str) or not t), None)
            if bad is not None:
                raise DataError(
                    f"{path}: {where}['tokens'][{bad}]: expected a non-empty string, got {toks[bad]!r}"
                )
            head = _fewrel_entity(path, where + "['h']", inst.get("h"), len(toks))
            tail = _fewrel_entity(path, where + "['t']", inst.get("t"), len(toks))
            texts.append(mark_entities([str(t) for t in toks], head, tail, marking))
        order = np.random.default_rng([split_seed, label]).permutation(len(items))
        n_train = len(items) - test_per_relation
        for rank, i in enumerate(order):
            rec = Record(text=texts[i], label=label, id=f"{pid}:{i}")
            (train if rank < n_train else test).append(rec)
    return TaskPool(
        name="fewrel",
        label_names=label_names,
        train=train,
        test=test,
        files=[str(path)] + ([str(files["names"])] if "names" in files else []),
        options={
            "fewrel_marking": marking,
            "fewrel_split_seed": split_seed,
            "fewrel_test_per_relation": test_per_relation,
        },
    )


# ---------------------------------------------------------------- sampling


def sample_per_label(
    records: list[Record],
    num_labels: int,
    per_label: int | None,
    seed: int,
    split: str,
    label_names: list[str],
) -> list[Record]:
    """Draw `per_label` records of every label (all if None), seeded; the result is sorted by label then
    id."""
    by_label: list[list[Record]] = [[] for _ in range(num_labels)]
    for r in records:
        by_label[r.label].append(r)
    out: list[Record] = []
    for label, pool in enumerate(by_label):
        if not pool:
            raise DataError(f"{split} split has no examples of label {label} ({label_names[label]})")
        if per_label is None or per_label >= len(pool):
            if per_label is not None and per_label > len(pool):
                raise DataError(
                    f"samples_per_label_{split}={per_label} but label {label} ({label_names[label]}) "
                    f"has only {len(pool)} {split} examples"
                )
            out.extend(pool)
            continue
        rng = np.random.default_rng([seed, label, 0 if split == "train" else 1])
        chosen = np.sort(rng.choice(len(pool), size=per_label, replace=False))
        out.extend(pool[i] for i in chosen)
    return out


@dataclass(frozen=True)
class Reader:
    """How a registered task's files become pools (`TaskSpec.reader` names one), and the reader's own
    options: fine-tuning setting -> keyword of `load`."""

    load: Callable[..., TaskPool]
    options: dict[str, str] = field(default_factory=dict)


READERS: dict[str, Reader] = {
    "label_csv": Reader(lambda source, spec: load_label_csv_task(spec, source)),
    "fewrel": Reader(
        lambda source, spec, **options: load_fewrel(source, **options),
        {
            "fewrel_marking": "marking",
            "fewrel_split_seed": "split_seed",
            "fewrel_test_per_relation": "test_per_relation",
        },
    ),
}


def load_pool(name: str, source: DataSource, **options: Any) -> TaskPool:
    """The full pools of a registered task (options: its reader's, e.g. FewRel's marking, split seed, test
    size)."""
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}: expected one of {', '.join(TASKS)}")
    spec = TASKS[name]
    return READERS[spec.reader].load(source, spec, **options)


def load_task(
    name: str,
    source: DataSource,
    seed: int = 42,
    samples_per_label_train: int | None = -1,
    samples_per_label_test: int | None = -1,
    **options: Any,
) -> TaskData:
    """Load a task and draw its balanced, seeded train/test samples (-1 = the paper's default count, None =
    all)."""
    pool = load_pool(name, source, **options)
    n_train = resolve_per_label(name, samples_per_label_train, "train")
    n_test = resolve_per_label(name, samples_per_label_test, "test")
    return sample_task(pool, seed, n_train, n_test)


def sample_task(pool: TaskPool, seed: int, n_train: int | None, n_test: int | None) -> TaskData:
    k = len(pool.label_names)
    train = sample_per_label(pool.train, k, n_train, seed, "train", pool.label_names)
    test = sample_per_label(pool.test, k, n_test, seed, "test", pool.label_names)
    shared = {r.id for r in train} & {r.id for r in test}
    if shared:  # pragma: no cover - guarded by construction
        raise DataError(f"{pool.name}: train and test share examples {sorted(shared)[:5]}")
    description = {
        "task": pool.name,
        "files": [
            file_fingerprint(f) | {"path": f} if not f.startswith("hf://") else {"path": f}
            for f in pool.files
        ],
        "seed": seed,
        "samples_per_label_train": n_train,
        "samples_per_label_test": n_test,
        "num_train": len(train),
        "num_test": len(test),
        "train_ids_hash": stable_hash([r.id for r in train]),
        "test_ids_hash": stable_hash([r.id for r in test]),
        **pool.options,
    }
    return TaskData(pool.name, pool.label_names, train, test, description)


# ---------------------------------------------------------------- a user's own file as a task


def read_utf8(path: Path) -> str:
    """A (possibly gzipped) text file; a byte that is not UTF-8 is reported with its line."""
    try:
        if str(path).endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")  # the byte-order mark spreadsheets write
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8"
        ) from e


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs of a CSV (with a header) or JSONL file."""
    if not path.is_file():
        raise DataError(f"task file not found: {path}")
    rows: list[tuple[int, dict[str, Any]]] = []
    text = read_utf8(path)
    if ".jsonl" in path.name or ".json" in path.name:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not a JSON object ({e})") from e
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: expected a JSON object per line, got {type(obj).__name__}")
            rows.append((n, obj))
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        try:
            for row in reader:
                if None in row:
                    raise DataError(
                        f"{path}:{reader.line_num}: more fields than the header's "
                        f"{len(reader.fieldnames or [])}"
                    )
                rows.append((reader.line_num, row))
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from e
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _checked_label(src: Path, n: int, row: dict[str, Any], text_column: str, label_column: str) -> str:
    """A row's label as text, after checking both columns (the error names file, line and column)."""
    for col in (text_column, label_column):
        if col not in row:
            raise DataError(f"{src}:{n}: no column {col!r} (columns: {', '.join(map(repr, row))})")
    if not isinstance(row[text_column], str) or not row[text_column].strip():
        raise DataError(f"{src}:{n}: empty or non-text value in column {text_column!r}")
    label = row[label_column]
    if label is None or isinstance(label, bool | list | dict) or not str(label).strip():
        raise DataError(
            f"{src}:{n}: missing label in column {label_column!r} (expected a name or an integer)"
        )
    return str(label).strip()


_NUMBER = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")


def label_order(labels: dict[str, str] | set[str]) -> list[str]:
    """The class order of a file task's labels (class i is the i-th): when every label is a number, by
    value (2 before 10, 2.0 before 10.0), else lexically by code point ('B' before 'a'). Two spellings of
    one number ('1' and '1.0' or '01') are one value written two ways: an error naming both (with where
    each first occurs when `labels` maps them to places)."""
    if not all(_NUMBER.fullmatch(lbl) for lbl in labels):
        return sorted(labels)
    values: dict[Decimal, str] = {}
    for lbl in sorted(labels):
        v = Decimal(lbl)
        if v in values:
            a, b = values[v], lbl
            where = (lambda x: f" ({labels[x]})") if isinstance(labels, dict) else (lambda x: "")
            raise DataError(
                f"labels {a!r}{where(a)} and {b!r}{where(b)} are the same number spelled two ways; a class "
                "must have one spelling (write every label of the file, and of its test file, alike)"
            )
        values[v] = lbl
    return [values[v] for v in sorted(values)]


def _label_names(
    splits: dict[str, list[tuple[int, dict[str, Any]]]],
    path: Path,
    test_file: str | Path | None,
    text_column: str,
    label_column: str,
) -> list[str]:
    """The classes of a file task in `label_order`, after checking every row's label, that there are two
    or more, and that the test file uses the training file's labels only."""
    seen: dict[str, str] = {}  # label spelling -> where it first occurs (file:line)
    for split, rows in splits.items():
        src = path if split == "train" else Path(str(test_file))
        for n, row in rows:
            seen.setdefault(_checked_label(src, n, row, text_column, label_column), f"{src}:{n}")
    if len(seen) < 2:
        raise DataError(
            f"{path}: only one label ({', '.join(map(repr, seen))}) in column {label_column!r}: "
            "a classifier needs at least two"
        )
    if test_file:
        train_labels = {_checked_label(path, n, row, text_column, label_column) for n, row in splits["train"]}
        unseen = [lbl for lbl in seen if lbl not in train_labels]
        if unseen:
            raise DataError(
                f"{seen[unseen[0]]}: label {unseen[0]!r} does not occur in the training file {path} "
                f"(its labels: {', '.join(map(repr, label_order(train_labels)))}); spell every label as the "
                "training file does"
            )
    return label_order(seen)


def load_file_pool(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    test_file: str | Path | None = None,
    test_share: float = 0.1,
    split_seed: int = 42,
) -> TaskPool:
    """A CSV (header row) or JSONL file as a task. Labels may be names or numbers, in the order of
    `label_order` (numbers by value, names lexically: the same file gives the same class indices in every
    run); a test file may only use the training file's labels, spelled alike. Without a test file each
    label's rows are split by a seeded shuffle, `test_share` of them into the test split."""
    path = Path(path)
    splits = {"train": _read_rows(path)}
    if test_file:
        splits["test"] = _read_rows(Path(test_file))
    names = _label_names(splits, path, test_file, text_column, label_column)
    index = {n: i for i, n in enumerate(names)}
    records = {
        split: [
            Record(str(row[text_column]).strip(), index[str(row[label_column]).strip()], f"{split}:{i}")
            for i, (_, row) in enumerate(rows)
        ]
        for split, rows in splits.items()
    }
    if "test" not in records:
        if not 0 < test_share < 1:
            raise DataError(f"test_share must be in (0, 1) when no test file is given, got {test_share}")
        train: list[Record] = []
        test: list[Record] = []
        for label in range(len(names)):
            pool = [r for r in records["train"] if r.label == label]
            order = np.random.default_rng([split_seed, label]).permutation(len(pool))
            n_test = max(1, round(len(pool) * test_share)) if len(pool) > 1 else 0
            for rank, i in enumerate(order):
                (test if rank < n_test else train).append(pool[i])
        records = {
            "train": sorted(train, key=lambda r: int(r.id.split(":")[1])),
            "test": sorted(test, key=lambda r: int(r.id.split(":")[1])),
        }
    files = [str(path)] + ([str(test_file)] if test_file else [])
    options = {
        "text_column": text_column,
        "label_column": label_column,
        "test_file": str(test_file) if test_file else None,
        "test_share": None if test_file else test_share,
        "split_seed": split_seed,
    }
    return TaskPool(f"file:{path}", names, records["train"], records["test"], files, options)


def load_task_data(tc: TaskConfig) -> TaskData:
    """The sampled task a fine-tuning config describes (a registered task or file:PATH)."""
    if tc.task.startswith("file:"):
        pool = load_file_pool(
            tc.task[5:], tc.text_column, tc.label_column, tc.test_file, tc.test_share, tc.sample_seed
        )
    else:
        reader = READERS[TASKS[tc.task].reader]
        options = {keyword: getattr(tc, setting) for setting, keyword in reader.options.items()}
        pool = load_pool(tc.task, resolve_source(tc.data_dir), **options)
    n_train = resolve_per_label(tc.task, tc.samples_per_label_train, "train")
    n_test = resolve_per_label(tc.task, tc.samples_per_label_test, "test")
    return split_validation(
        sample_task(pool, tc.sample_seed, n_train, n_test), tc.validation_per_label, tc.sample_seed
    )
