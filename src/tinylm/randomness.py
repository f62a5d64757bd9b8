"""Per-example randomness of a training step, so that a run's result depends on its global batch only.

Every example of a step's global batch draws its MLM masks and its dropout masks from a generator of its
own, seeded by (run seed, step, the example's place in the global batch), whatever micro-batch, rank or
accumulation step computes it. Draws have the shape of a row padded to the data's full length and are
cut to the micro-batch's length, so that trimming a batch to its longest row changes nothing either.
The trainer makes a step's rows active (`rows_of`) around each micro-batch; the model's dropout and the
MLM masking read them (`active()`); outside a training step (evaluation, inference) nothing is active.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

import torch
from torch import Tensor

_ACTIVE: ContextVar[Rows | None] = ContextVar("tinylm_rows", default=None)
_MASK64 = (1 << 63) - 1


#: The `row` of `row_seed` that seeds a step's shared draws (beyond any batch's rows).
STEP_ROW = 1 << 40


def row_seed(seed: int, step: int, row: int) -> int:
    """A 63-bit seed of (seed, step, row), mixed (splitmix64) so that nearby triples are unrelated."""
    z = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + row * 0x94D049BB133111EB) & ((1 << 64) - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 31)) & _MASK64


class Rows:
    """The generators of a micro-batch's rows, the full (untrimmed) sequence length, and how far the run is
    (`progress`: step ÷ total steps, for schedules such as the masking rate's)."""

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        full_length: int,
        progress: float = 0.0,
        step_seed: int = 0,
    ):
        self.generators, self.full_length, self.progress = list(generators), full_length, progress
        self.step_seed = step_seed

    def step_generator(self) -> torch.Generator:
        """A generator of the whole step (the same in every micro-batch, rank and accumulation step): for
        draws shared by a step's rows, such as sampled-softmax candidates."""
        return torch.Generator().manual_seed(self.step_seed)

    def __len__(self) -> int:
        return len(self.generators)

    def _draw(self, kind: str, shape: Sequence[int], seq_dims: Sequence[int], **kw: int) -> Tensor:
        """One draw per row of `shape` (without the batch axis), sequence axes drawn at full length and
        cut to `shape`; stacked over the rows."""
        full = [self.full_length if d in seq_dims else n for d, n in enumerate(shape)]
        crop = tuple(slice(0, n) for n in shape)
        out = []
        for g in self.generators:
            if kind == "rand":
                x = torch.rand(full, generator=g)
            elif kind == "randint":
                x = torch.randint(kw["high"], full, generator=g)
            else:  # 16-bit integers, four per 64-bit draw (the model's dropout masks)
                n = math.prod(full)
                x = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), generator=g, dtype=torch.int64)
                x = x.view(torch.int16)[:n].view(full)
            out.append(x[crop])
        return torch.stack(out)

    def rand(self, shape: Sequence[int], seq_dims: Sequence[int] = (0,)) -> Tensor:
        return self._draw("rand", shape, seq_dims)

    def randint(self, high: int, shape: Sequence[int], seq_dims: Sequence[int] = (0,)) -> Tensor:
        return self._draw("randint", shape, seq_dims, high=high)

    def bits16(self, shape: Sequence[int], seq_dims: Sequence[int]) -> Tensor:
        return self._draw("bits16", shape, seq_dims)


def rows_of(seed: int, step: int, positions: Sequence[int], full_length: int, progress: float = 0.0) -> Rows:
    """The rows at these places of step `step`'s global batch."""
    gens = [torch.Generator().manual_seed(row_seed(seed, step, int(j))) for j in positions]
    return Rows(gens, full_length, progress, row_seed(seed, step, STEP_ROW))


@contextlib.contextmanager
def activate(rows: Rows) -> Iterator[Rows]:
    """Make `rows` the randomness of the forward pass (and masking) run inside the block."""
    token = _ACTIVE.set(rows)
    try:
        yield rows
    finally:
        _ACTIVE.reset(token)


def active() -> Rows | None:
    return _ACTIVE.get()
