"""Model weights as files: safetensors without tied aliases, read with clear errors, loaded after shape
checks. The model directory around them (metadata, tokenizer, transformers config) is `model_dir`."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tinylm.errors import CheckpointError
from tinylm.fileio import atomic_path, space_errors
from tinylm.model import TIED_KEYS


def state_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without tied aliases (safetensors refuses shared storage), contiguous, on CPU."""
    sd = model.state_dict()
    return {k: v.detach().cpu().contiguous() for k, v in sd.items() if k not in TIED_KEYS}


def save_weights(model: nn.Module, path: Path, leave_out: tuple[str, ...] = ()) -> None:
    """The model's weights as safetensors (atomically), without the keys starting with `leave_out`."""
    state = {k: v for k, v in state_for_saving(model).items() if not (leave_out and k.startswith(leave_out))}
    with space_errors(path.parent), atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({e})") from e


def load_state(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    where: str,
    strict: bool = True,
    optional: tuple[str, ...] = (),
) -> None:
    """Load `state` into `model` after checking shapes (and, if strict, that every weight is present but
    those starting with `optional`, which keep their init)."""
    own = model.state_dict()
    if strict:
        expected = {k for k in own if k not in TIED_KEYS and not (optional and k.startswith(optional))}
        expected |= set(state) & set(own)
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
