"""Saving and loading model weights (safetensors) with their architecture, for run dirs and exports."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tinylm.config import ModelConfig
from tinylm.errors import CheckpointError
from tinylm.fileio import atomic_path, write_json
from tinylm.model import TIED_KEYS, TinyBert, TinyBertForMaskedLM, TinyBertForSequenceClassification


def state_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without tied aliases (safetensors refuses shared storage), contiguous, on CPU."""
    sd = model.state_dict()
    return {k: v.detach().cpu().contiguous() for k, v in sd.items() if k not in TIED_KEYS}


def save_weights(model: nn.Module, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file(state_for_saving(model), str(tmp), metadata={"format": "pt"})


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({e})") from e


def model_meta(model: TinyBert, **extra: Any) -> dict[str, Any]:
    kind = "classifier" if isinstance(model, TinyBertForSequenceClassification) else "mlm"
    meta: dict[str, Any] = {"kind": kind, "model": dataclasses.asdict(model.cfg)}
    if isinstance(model, TinyBertForSequenceClassification):
        meta["num_labels"] = model.num_labels
    return meta | extra


def save_model(model: TinyBert, directory: Path, **extra: Any) -> None:
    """`model.safetensors` + `model.json` (architecture, kind, label names, ...) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(model, directory / "model.safetensors")
    write_json(directory / "model.json", model_meta(model, **extra))


def read_model_meta(directory: Path) -> dict[str, Any]:
    path = directory / "model.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: no model.json (not a tinylm model directory)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def build_model(meta: dict[str, Any]) -> TinyBert:
    cfg = ModelConfig(**meta["model"])
    if meta["kind"] == "classifier":
        return TinyBertForSequenceClassification(cfg, meta["num_labels"])
    return TinyBertForMaskedLM(cfg)


def load_model(directory: Path) -> tuple[TinyBert, dict[str, Any]]:
    """Rebuild a model saved by `save_model` (strict: every weight must be present)."""
    meta = read_model_meta(directory)
    model = build_model(meta)
    load_state(model, read_weights(directory / "model.safetensors"), str(directory / "model.safetensors"))
    return model, meta


def load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str, strict: bool = True) -> None:
    """Load `state` into `model` after checking shapes (and, if strict, that every weight is present)."""
    own = model.state_dict()
    if strict:
        expected = {k for k in own if k not in TIED_KEYS}
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise CheckpointError(
                f"{where}: weights do not match the architecture "
                f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
            )
    shapes = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape
    ]
    if shapes:
        raise CheckpointError(
            f"{where}: weight shapes do not match the architecture: {'; '.join(shapes[:5])}"
        )
    model.load_state_dict(state, strict=False)
