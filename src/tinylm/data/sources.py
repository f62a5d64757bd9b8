"""Where data comes from: a local directory laid out like ../shared/data, else the Hugging Face hub.

Resolution order: the explicit `--data-dir`, then the `TINYLM_DATA_DIR` environment variable, then the
hub (through `datasets` / `tokenizers`) unless `HF_HUB_OFFLINE=1` or the packages are missing.
FewRel is always a local file, as in the paper's code.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinylm.errors import DataNotFoundError
from tinylm.registry import TASKS

#: Files of the datasets that are not tasks, inside a local data directory (see ../shared/data/MANIFEST.md);
#: a task's files are in its registry entry.
OTHER_LOCAL_FILES: dict[str, dict[str, str]] = {
    "wikipedia": {"shards": "wikipedia/*.jsonl.gz"},
    "tokenizer": {
        "tokenizer": "tokenizer/bert-base-uncased/tokenizer.json",
        "vocab": "tokenizer/bert-base-uncased/vocab.txt",
    },
}
OTHER_HUB_IDS: dict[str, tuple[str, str | None]] = {
    "wikipedia": ("wikimedia/wikipedia", "20231101.en"),
    "tokenizer": ("bert-base-uncased", None),
}


def local_layout(dataset: str) -> dict[str, str]:
    """Relative paths of a dataset's files in a local data directory."""
    return dict(TASKS[dataset].local_files) if dataset in TASKS else OTHER_LOCAL_FILES[dataset]


def hub_id(dataset: str) -> tuple[str, str | None] | None:
    """(Hugging Face dataset id, config) of a dataset, None when it has no hub copy."""
    if dataset in TASKS:
        spec = TASKS[dataset]
        return (spec.hub_id, None) if spec.hub_id else None
    return OTHER_HUB_IDS.get(dataset)


def hub_usable() -> bool:
    """True when the hub may be tried: not forced offline and `datasets` is installed."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return False
    return importlib.util.find_spec("datasets") is not None


@dataclass(frozen=True)
class DataSource:
    """A resolved place to read datasets from: `local_dir` if set, else the hub when `hub` is True."""

    local_dir: Path | None
    hub: bool

    def local_files(self, dataset: str) -> dict[str, Path] | None:
        """The local files of `dataset` if all are present, else None."""
        if self.local_dir is None:
            return None
        out: dict[str, Path] = {}
        for key, rel in local_layout(dataset).items():
            if not _present(self.local_dir, rel):
                return None
            out[key] = self.local_dir / rel
        return out

    def require_local(self, dataset: str, optional: tuple[str, ...] = ()) -> dict[str, Path]:
        """Local files of `dataset` or a DataNotFoundError saying what was looked for and how to fix it."""
        files = self.local_files(dataset)
        if files is not None:
            return files
        raise self.not_found(dataset, hub_possible=False, optional=optional)

    def not_found(
        self, dataset: str, hub_possible: bool = True, optional: tuple[str, ...] = ()
    ) -> DataNotFoundError:
        base = self.local_dir if self.local_dir is not None else Path("$TINYLM_DATA_DIR")
        wanted = [str(base / rel) for key, rel in local_layout(dataset).items() if key not in optional]
        if self.local_dir is None:
            where = "no local data directory was given (--data-dir) and TINYLM_DATA_DIR is not set"
        else:
            missing = [
                str(self.local_dir / rel)
                for key, rel in local_layout(dataset).items()
                if key not in optional and not _present(self.local_dir, rel)
            ]
            where = f"missing under {self.local_dir}: {', '.join(missing) or '(none)'}"
        hub_note, hub = "", hub_id(dataset)
        if hub_possible and hub is not None:
            name, cfg = hub
            state = (
                "unavailable (HF_HUB_OFFLINE is set or `datasets` is not installed)"
                if not hub_usable()
                else "failed"
            )
            hub_note = f"; the Hugging Face hub ({name}{'/' + cfg if cfg else ''}) is {state}"
        elif dataset == "fewrel":
            hub_note = (
                "; FewRel is only read from local files (train_wiki.json from github.com/thunlp/FewRel)"
            )
        return DataNotFoundError(
            f"dataset '{dataset}' not found: looked for {', '.join(wanted)}; {where}{hub_note}. "
            "Point --data-dir or TINYLM_DATA_DIR at a directory laid out like shared/data (see its "
            "MANIFEST.md)."
        )


def _present(root: Path, rel: str) -> bool:
    return any(root.glob(rel)) if "*" in rel else (root / rel).is_file()


def resolve_source(data_dir: str | os.PathLike | None = None) -> DataSource:
    """Pick the data source: explicit dir, then $TINYLM_DATA_DIR, then the hub."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get("TINYLM_DATA_DIR") or None
    if chosen is not None:
        path = Path(chosen).expanduser().resolve()
        if not path.is_dir():
            origin = "--data-dir" if data_dir else "TINYLM_DATA_DIR"
            raise DataNotFoundError(f"{origin} points at {path}, which is not a directory")
        return DataSource(local_dir=path, hub=hub_usable())
    return DataSource(local_dir=None, hub=hub_usable())


def load_hub_dataset(
    dataset: str, split: str, streaming: bool = False
) -> Any:  # pragma: no cover - needs network
    """Thin wrapper over `datasets.load_dataset` for the hub path (not exercised offline)."""
    import datasets

    hub = hub_id(dataset)
    if hub is None:
        raise DataNotFoundError(f"dataset '{dataset}' has no Hugging Face hub copy")
    try:
        return datasets.load_dataset(hub[0], hub[1], split=split, streaming=streaming)
    except Exception as e:
        raise hub_failed(f"dataset '{dataset}'", hub[0], e) from e


def hub_failed(what: str, hub_name: str, error: BaseException) -> DataNotFoundError:
    """The error for a hub download that failed (no network, unknown id, ...), with the offline fix."""
    return DataNotFoundError(
        f"{what}: no local copy was given and the Hugging Face hub ({hub_name}) failed: "
        f"{type(error).__name__}: {str(error)[:200]}. Offline, point --data-dir or TINYLM_DATA_DIR at a "
        "directory laid out like shared/data (see its MANIFEST.md); HF_HUB_OFFLINE=1 skips the hub."
    )
