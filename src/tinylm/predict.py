"""The one batched inference loop: evaluation, committees and `tinylm predict` all run through it.

`batches` (`tinylm.data.tokens`) walks a `TokenData` in order, each batch trimmed to its longest row;
`predict` runs a forward function over them with gradients off, the model in eval mode and the run's precision
(bf16 autocast or none), and returns float32 numpy outputs concatenated along the batch axis.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from tinylm.data.tokens import TokenData, batches

#: forward(input_ids, attention) -> outputs with the batch on `batch_axis`
Forward = Callable[[Tensor, Tensor], Tensor]


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
