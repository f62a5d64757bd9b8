"""Atomic writes and content fingerprints: nothing half-written is ever left behind."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinylm.errors import TinylmError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode(path: Path, is_dir: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700; give the final file or directory what open()/mkdir() would."""
    with contextlib.suppress(OSError):
        os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success fsync it and `os.replace` it into place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        _default_mode(tmp_path, is_dir=False)
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def read_json_object(path: Path, expected: str, error: type[TinylmError] = TinylmError) -> dict[str, Any]:
    """A JSON file that must hold a non-empty object; `error` names the file and what was expected."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from e
    if not isinstance(obj, dict) or not obj:
        raise error(f"{path}: expected a JSON object {expected}, got {type(obj).__name__}")
    return obj


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; on success rename it to `target` (which must not exist yet)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        for p in tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
            _default_mode(p, is_dir=p.is_dir())  # writers that rename a mkstemp file (safetensors) leave 0600
        if not target.exists():  # else someone else finished first; theirs is equivalent
            _default_mode(tmp, is_dir=True)
            try:
                os.replace(tmp, target)
            except OSError:  # another process (a torchrun rank) renamed theirs in between
                if not target.exists():
                    raise
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Cheap identity of a file for cache keys: name, size and modification time."""
    st = os.stat(path)
    return {"name": Path(path).name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-serialisable object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


class DirLock:
    """An exclusive advisory lock on a directory (`DIR/.lock`, holding the owner's PID), released when the
    process ends however it ends. A second process gets a clear error instead of sharing the directory."""

    def __init__(self, directory: str | os.PathLike, what: str):
        self.dir, self.what = Path(directory), what
        self._fd: int | None = None

    def __enter__(self) -> DirLock:
        import fcntl

        self.created = [d for d in (self.dir, *self.dir.parents) if not d.exists()]  # deepest first
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / ".lock"
        self.new_file = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise TinylmError(
                f"{self.dir} is in use by PID {owner} (another tinylm {self.what}); wait for it to finish "
                "or choose another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._fd is None:
            return
        if self.new_file:  # leave the directory as it was found (still holding the lock while unlinking)
            (self.dir / ".lock").unlink(missing_ok=True)
        if exc_type is not None:  # a start that failed before writing anything leaves no directory behind
            with contextlib.suppress(OSError):
                for d in self.created:
                    d.rmdir()
        os.close(self._fd)  # closing releases the flock
        self._fd = None


def _no_space(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return True
    text = str(e)  # safetensors (Rust) and torch.save (C++) report ENOSPC in their own words
    return "os error 28" in text or "No space left" in text or "inline_container" in text


@contextlib.contextmanager
def space_errors(directory: str | os.PathLike) -> Iterator[None]:
    """A full disk during a write becomes one clear error; the write was atomic, so what was there before
    (the last good checkpoint) is intact."""
    try:
        yield
    except Exception as e:
        if _no_space(e):
            raise TinylmError(
                f"no space left on the disk of {directory}; free space and rerun with --resume (the last "
                "complete checkpoint is intact)"
            ) from e
        raise
