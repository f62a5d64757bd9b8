"""The one batched inference loop: evaluation, committees and `tinylm predict` all run through it.

`batches` walks a `TokenData` in order, each batch trimmed to its longest row; `predict` runs a
forward function over them with gradients off, the model in eval mode and the run's precision
(bf16 autocast or none), and returns float32 numpy outputs concatenated along the batch axis.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

#: forward(input_ids, attention) -> outputs with the batch on `batch_axis`
Forward = Callable[[Tensor, Tensor], Tensor]


@dataclass
class TokenData:
    """Padded uint16 token ids (N × T), true lengths, and optional labels: what training and inference
    iterate over."""

    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, idx: np.ndarray, device: torch.device) -> dict[str, Tensor]:
        """Rows `idx`, trimmed to the longest of them (no compute on all-padding columns)."""
        lengths = self.lengths[idx]
        T = int(lengths.max())
        ids = torch.from_numpy(self.ids[idx, :T].astype(np.int64))
        attention = (torch.arange(T)[None, :] < torch.from_numpy(lengths.astype(np.int64))[:, None]).long()
        out = {"input_ids": ids, "attention": attention}
        if self.labels is not None:
            out["labels"] = torch.from_numpy(self.labels[idx].astype(np.int64))
        return {k: v.to(device, non_blocking=True) for k, v in out.items()}


def batches(data: TokenData, batch_size: int, device: torch.device) -> Iterator[dict[str, Tensor]]:
    """Consecutive batches of `data` in order (the last one may be smaller)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, len(data), batch_size):
        yield data.batch(np.arange(start, min(start + batch_size, len(data))), device)


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast when `precision` is 'bf16', else a disabled autocast (fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextlib.contextmanager
def evaluating(*models: nn.Module) -> Iterator[None]:
    """Put models in eval mode for the block, then restore each one's previous mode."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)


@torch.no_grad()
def predict(
    forward: Forward,
    data: TokenData,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    batch_axis: int = 0,
) -> np.ndarray:
    """Outputs of `forward` over all of `data` (float32), concatenated along `batch_axis`.
    Put the models in eval mode first (`evaluating`)."""
    out = []
    for b in batches(data, batch_size, device):
        with autocast(device, precision):
            y = forward(b["input_ids"], b["attention"])
        out.append(y.float().cpu().numpy())
    return np.concatenate(out, axis=batch_axis)


def class_probabilities(
    model: nn.Module, data: TokenData, batch_size: int, device: torch.device, precision: str = "fp32"
) -> np.ndarray:
    """Softmax probabilities (N, labels) of a classifier, in eval mode."""
    with evaluating(model):
        return predict(lambda i, a: model(i, a).float().softmax(-1), data, batch_size, device, precision)
