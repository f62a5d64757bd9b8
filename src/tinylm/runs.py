"""Run directories and checkpoints.

    RUN/config.yaml        resolved settings          RUN/data.json      what data the run saw
    RUN/metrics.jsonl      one JSON line per log/eval  RUN/results.json   final results (present = finished)
    RUN/model.safetensors  final weights (+ model.json)
    RUN/checkpoints/step-NNNNNNNN/{model.safetensors, state.pt, manifest.json}, RUN/checkpoints/latest

Checkpoints are written to a temporary directory (files fsynced), renamed into place, then `latest`
is replaced atomically; the manifest holds SHA-256 sums, so a truncated or corrupt checkpoint is
reported, never silently skipped.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tinylm.errors import CheckpointError, TinylmError
from tinylm.fileio import atomic_dir, sha256_file, space_errors, stable_hash, write_json, write_text

if TYPE_CHECKING:
    import torch

#: Settings that do not define a run: where it is written and read from, how it is shown, where it
#: runs, how its global batch is split (`grad_accum`: results depend on the global batch only). They may
#: differ between an interrupted run and its resumption, and are left out of run names.
NON_IDENTITY_KEYS = frozenset(
    {
        "resume",
        "progress",
        "threads",
        "out",
        "name",
        "data_dir",
        "cache_dir",
        "device",
        "prune",
        "grad_accum",
        "fused_loss",
    }
)
#: Settings added after runs were named, hashed only when they differ from these defaults: a run made
#: before a setting existed keeps its name (and is reused) as long as the setting stays at its default.
HASHED_WHEN_CHANGED = {
    "position_init": "normal",
    "attention_init": "normal",
    "mask_prob_start": None,
    "predict_prob": None,
    "attention_window_start": None,
    "attention_window_share": 0.25,
    "patience": None,
    "corpus": "wikipedia",
    "teacher": None,
    "distill_temperature": 2.0,
    "distill_alpha": 0.5,
}
#: What a finished run keeps when pruned: everything but these (a finished run is reused, never resumed).
RESUME_ONLY = ("checkpoints", "best.safetensors")


def run_name(prefix: str, flat: dict[str, Any]) -> str:
    """`PREFIX-ARCH-HASH`: the hash covers every setting that defines the run."""
    arch = flat.get("model") or f"{flat['layers']}x{flat['hidden_size']}"
    identity = {
        k: v
        for k, v in flat.items()
        if k not in NON_IDENTITY_KEYS and not (k in HASHED_WHEN_CHANGED and v == HASHED_WHEN_CHANGED[k])
    }
    return f"{prefix}-{arch}-{stable_hash(identity, 10)}"


#: Settings that may name a file or directory (`file:PATH` or a path): one place is one setting however
#: it is spelled, relative to the working directory or absolute (`reproduce --out ../x` then `/abs/x`).
PATH_KEYS = frozenset({"init", "teacher", "test_file", "task", "corpus", "distill_unlabelled"})


def _place(value: Any) -> Any:
    """A path-valued setting as the real path it names (a `file:` one always, a bare one when it exists:
    'scratch' or a hub id stays as written); any other value unchanged."""
    if not isinstance(value, str):
        return value
    prefix = "file:" if value.startswith("file:") else ""
    path = value[len(prefix) :]
    return prefix + os.path.realpath(path) if prefix or os.path.exists(path) else value


def identity_differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The settings that define a run and differ between a run's config.yaml (`old`) and `new` settings,
    as "key: old -> new, ..." (at most 6), or "" when they define the same run. A setting added after
    the old run was made is absent from its config.yaml: it counts at its default; a path is compared as
    the place it names (`PATH_KEYS`)."""
    old = {k: v for k, v in HASHED_WHEN_CHANGED.items() if k in new} | old

    def same(k: str) -> bool:
        a, b = old.get(k), new.get(k)
        return a == b or (k in PATH_KEYS and _place(a) == _place(b))

    diff = sorted(k for k in set(old) | set(new) if k not in NON_IDENTITY_KEYS and not same(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:6])


class RunDir:
    """A run's directory. In a data-parallel job only rank 0 is its `writer`: the other ranks read it (to
    resume) and every write is a no-op for them."""

    def __init__(self, path: str | Path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    def is_finished(self) -> bool:
        return (self.path / "results.json").is_file()

    def prepare(self, config: dict[str, Any], resume: bool) -> None:
        """Create the run dir, or check that resuming continues the same configuration."""
        if not self.writer:
            return
        cfg_path = self.path / "config.yaml"
        if cfg_path.is_file() and not resume and not self.has_progress():
            cfg_path.unlink()  # a start that failed before its first step: nothing to continue or protect
        if cfg_path.is_file():
            if not resume:
                raise TinylmError(
                    f"run directory {self.path} already exists; pass --resume to continue it or choose "
                    f"another --name"
                )
            try:
                old = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
            except (yaml.YAMLError, UnicodeDecodeError) as e:
                raise TinylmError(
                    f"{cfg_path}: not a readable run configuration ({str(e).splitlines()[0]}); the run "
                    "directory is damaged: delete it to start over"
                ) from e
            if not isinstance(old, dict):
                raise TinylmError(f"{cfg_path}: expected a mapping of settings; the run directory is damaged")
            diff = identity_differences(old, config)
            if diff:
                raise TinylmError(
                    f"cannot resume {self.path}: settings differ from the original run ({diff})"
                )
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(cfg_path, yaml.safe_dump(config, sort_keys=False))

    def has_progress(self) -> bool:
        """Whether anything was trained here: a checkpoint or a metrics record."""
        return bool(self.checkpoint_candidates()) or bool(self.read_metrics())

    def log(self, record: dict[str, Any]) -> None:
        if not self.writer:
            return
        with open(self.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """On resume: keep the records of steps up to the checkpoint's (the rest will be written again), and
        drop a line torn by a kill mid-write. Step 0 (no checkpoint): an empty log."""
        if not self.writer:
            return
        keep = [json.dumps(r) for r in self.read_metrics() if step and r.get("step", 0) <= step]
        if self.metrics.is_file():
            write_text(self.metrics, "".join(line + "\n" for line in keep))

    def read_metrics(self) -> list[dict[str, Any]]:
        """The metric records; a line cut short by a kill (not valid JSON) is skipped."""
        if not self.metrics.is_file():
            return []
        out = []
        for line in self.metrics.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def remove_partial_files(self) -> None:
        """Temporary files and directories left by a kill during an atomic write."""
        if not self.writer:
            return
        for p in [*self.path.glob(".*.tmp"), *self.checkpoints.glob(".*.tmp")]:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self, step: int, model: torch.nn.Module, state: dict[str, Any], keep: int) -> Path:
        import torch

        from tinylm.weights import state_for_saving

        if not self.writer:
            return self.checkpoints / f"step-{step:08d}"
        name = f"step-{step:08d}"
        target = self.checkpoints / name
        if not target.exists():
            with space_errors(self.path), atomic_dir(target) as tmp:
                from safetensors.torch import save_file

                save_file(state_for_saving(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
                torch.save(state, tmp / "state.pt")
                files = {f: sha256_file(tmp / f) for f in ("model.safetensors", "state.pt")}
                (tmp / "manifest.json").write_text(json.dumps({"step": step, "sha256": files}))
        write_text(self.checkpoints / "latest", name + "\n")
        for old in sorted(p for p in self.checkpoints.glob("step-*") if p.is_dir())[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def checkpoint_candidates(self) -> list[Path]:
        """Complete checkpoint directories, newest first (a checkpoint is complete once renamed into place;
        the `latest` pointer is only a hint)."""
        return sorted((p for p in self.checkpoints.glob("step-*") if p.is_dir()), reverse=True)

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoint_candidates()
        return found[0] if found else None

    def load_checkpoint(self, target: Path, model: torch.nn.Module) -> dict[str, Any]:
        """Verify and load a checkpoint into `model`; return the training state."""
        import torch

        from tinylm.weights import load_state, read_weights

        manifest = target / "manifest.json"
        try:
            sums = json.loads(manifest.read_text())["sha256"]
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{manifest}: missing or unreadable checkpoint manifest ({e})") from e
        for f, want in sums.items():
            path = target / f
            if not path.is_file():
                raise CheckpointError(f"{path}: checkpoint file missing")
            if sha256_file(path) != want:
                raise CheckpointError(f"{path}: checkpoint file is truncated or corrupt (SHA-256 mismatch)")
        load_state(model, read_weights(target / "model.safetensors"), str(target))
        try:
            return torch.load(target / "state.pt", map_location="cpu", weights_only=False)
        except Exception as e:  # pickle errors come in many types
            raise CheckpointError(f"{target / 'state.pt'}: unreadable training state ({e})") from e

    def prune(self) -> None:
        """Delete what only a resume needs (`RESUME_ONLY`) from a finished run: its model, metrics, results,
        predictions and snapshots stay."""
        if not self.writer or not self.is_finished():
            return
        for name in RESUME_ONLY:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)

    def finish(self, results: dict[str, Any]) -> None:
        if not self.writer:
            return
        write_json(self.path / "results.json", results)
