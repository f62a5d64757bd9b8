"""Token arrays as training and inference iterate over them: padded ids, true lengths, optional labels and
soft targets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class TokenData:
    """Padded uint16 token ids (N × T), true lengths, and optional labels: what training and inference
    iterate over."""

    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray | None = None
    #: soft targets (N × labels probabilities), e.g. a teacher's for distillation
    soft: np.ndarray | None = None

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
        if self.soft is not None:
            out["soft"] = torch.from_numpy(self.soft[idx].astype(np.float32))
        return {k: v.to(device, non_blocking=True) for k, v in out.items()}


def batches(data: TokenData, batch_size: int, device: torch.device) -> Iterator[dict[str, Tensor]]:
    """Consecutive batches of `data` in order (the last one may be smaller)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, len(data), batch_size):
        yield data.batch(np.arange(start, min(start + batch_size, len(data))), device)
