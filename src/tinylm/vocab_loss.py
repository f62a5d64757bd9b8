"""The MLM output layer and its loss fused: vocabulary projection + cross-entropy, gradients made in the
forward pass.

The plain path writes the (rows × vocab) fp32 logit matrix (~80 MB at batch 32), keeps it for the
backward pass and reads or rewrites it many times (row max, exp, sum, softmax − one-hot, the slice's
gradient, the cast back to the matmul dtype, the bias gradient). The loss is the last node of the graph,
so the gradients can be computed in the forward pass and only scaled in the backward pass (as Liger's and
Apple's fused linear-cross-entropy kernels do). Here, per group of rows:

- the logits come from one `addmm` in the matmul dtype (bias inside, exactly as `F.linear` under
  autocast), are taken to fp32 `chunk` rows at a time, shifted by the row max and exponentiated in place;
  the loss is `log Σ exp − (target logit − max)` in fp32, as the plain path's;
- the unnormalised numerators `e = exp(z − max)` are stored once in the matmul dtype, the target's entry
  replaced by `e_t − Σ e` (the one-hot folded in before the rounding, so confident rows lose nothing);
  the softmax's division by `Σ e` is applied to the small factors instead of the big matrix:
  `grad_h = (E @ W) / Σ e` row-wise, and `[grad_W | grad_b] = Eᵀ @ [X / Σ e | 1 / Σ e]` in one matmul.

So the (rows × vocab) matrix is passed over by: the matmul, the cast to fp32, the row max, the shift,
exp, the row sum, the cast back, and the two gradient matmuls: no softmax scaling, no bias pass, no
column sum, one weight-gradient matmul per group. Same mathematics as the plain path:
`tests/test_vocab_loss.py` compares loss, hits and gradients in fp32 and bf16, confident rows included;
`benchmarks/vocab_loss.py` times it against the plain path.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import Tensor

#: L2 cache of one core assumed where Linux's sysfs does not say.
DEFAULT_L2_BYTES = 1 << 20
#: Rows per group: the group's numerators are kept in the matmul dtype until its gradient matmuls
#: (2,048 × 30,522 × 2 B ≈ 125 MB in bf16); a 32 × 128 batch's ~640 masked rows are one group.
GROUP_ROWS = 2048


def _matmul_dtype(h: Tensor) -> torch.dtype:
    """The dtype the plain path's matmuls would use: autocast's where it is on, else the inputs'."""
    dev = h.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype


@functools.cache
def l2_cache_bytes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """One core's L2 cache (Linux sysfs: cpu0's level-2 unified or data cache), else `DEFAULT_L2_BYTES`."""
    for index in sorted(Path(root).glob("index*")):
        try:
            level, kind = (index / "level").read_text().strip(), (index / "type").read_text().strip()
            if level == "2" and kind in ("Unified", "Data"):
                size = (index / "size").read_text().strip().upper()
                unit = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                return int(size.rstrip("KM")) * unit
        except (OSError, ValueError):
            continue
    return DEFAULT_L2_BYTES


def default_chunk(device: torch.device, vocab: int) -> int:
    """Rows per fp32 chunk. On a CPU: as many as fill half of one core's L2 cache with fp32 logits, so that
    the max, shift, exp and sum passes run in that cache instead of main memory (`benchmarks/vocab_loss.py`:
    on a 2-core Xeon with a 2 MB L2, 8 rows of a 30,522 vocabulary took the loss from 97 to 68 ms against
    256 rows, caches flushed as inside a step); elsewhere a whole group at once (one kernel per pass)."""
    if device.type != "cpu":
        return GROUP_ROWS
    return max(1, l2_cache_bytes() // 2 // (4 * vocab))


def _padded_width(d: int) -> int:
    """Columns of `[X / Σe | 1 / Σe]`, rounded up to a multiple of 16 (matmul kernels' tile width)."""
    return -(-(d + 1) // 16) * 16


def _group(
    x: Tensor, w: Tensor, b: Tensor, targets: Tensor, chunk: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Loss sum, hits, `E @ W`, `Eᵀ @ [X/Σe | 1/Σe]` and `valid / Σe` for one group of rows (see above)."""
    rows, d = x.shape
    valid = targets >= 0
    t = targets.clamp(min=0)[:, None]
    e = torch.addmm(b, x, w.t())  # the logits in the matmul dtype (the plain path's F.linear)
    sumexp = torch.empty(rows, dtype=torch.float32, device=x.device)
    picked = torch.empty(rows, dtype=torch.float32, device=x.device)
    for s in range(0, rows, chunk):
        z = e[s : s + chunk].float()  # fp32 logits, as the plain path's `.float()` (a view when fp32)
        z.sub_(z.amax(1, keepdim=True))
        picked[s : s + chunk] = z.gather(1, t[s : s + chunk]).squeeze(1)  # target − max: 0 when largest
        sumexp[s : s + chunk] = z.exp_().sum(1)
        if e.dtype != torch.float32:  # fp32 logits were changed in place: nothing to copy back
            e[s : s + chunk] = z  # back to the matmul dtype
    total = torch.where(valid, sumexp.log() - picked, 0.0).sum()
    hits = ((picked >= 0) & valid).sum()
    target_entries = torch.arange(rows, device=x.device) * e.shape[1] + t.squeeze(1)
    e.view(-1)[target_entries] = (picked.exp() - sumexp).to(e.dtype)  # the one-hot, before the rounding
    inv = valid / sumexp  # 1 / Σe, zero on ignored rows
    cols = torch.zeros(rows, _padded_width(d), dtype=torch.float32, device=x.device)
    cols[:, :d] = x * inv[:, None]
    cols[:, d] = inv
    return total, hits, torch.mm(e, w), torch.mm(e.t(), cols.to(e.dtype)), inv


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, h: Tensor, weight: Tensor, bias: Tensor, targets: Tensor, chunk: int
    ) -> tuple[Tensor, Tensor]:
        dt = _matmul_dtype(h)
        d = h.shape[1]
        with torch.autocast(h.device.type, enabled=False):
            w, x, b = weight.to(dt), h.to(dt), bias.to(dt)
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            hits = torch.zeros((), dtype=torch.int64, device=h.device)
            eh, inv, wb = [], [], None
            for s in range(0, max(len(h), 1), GROUP_ROWS):  # no rows (a rank's empty share): one empty group
                loss, n, eh_g, wb_g, inv_g = _group(
                    x[s : s + GROUP_ROWS], w, b, targets[s : s + GROUP_ROWS], chunk
                )
                total, hits = total + loss, hits + n
                eh.append(eh_g)
                inv.append(inv_g)
                wb = wb_g.float() if wb is None else wb.add_(wb_g.float())
        assert wb is not None
        ctx.save_for_backward(torch.cat(eh), torch.cat(inv), wb[:, :d], wb[:, d])
        ctx.dtypes = (h.dtype, weight.dtype, bias.dtype)
        ctx.mark_non_differentiable(hits)
        return total, hits

    @staticmethod
    def backward(ctx, grad: Tensor, _hits: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:
        eh, inv, grad_w, grad_b = ctx.saved_tensors
        dh, dw, db = ctx.dtypes
        grad_h = eh.float() * (inv * grad)[:, None]  # not in place: `eh` is the saved fp32 tensor in fp32
        return grad_h.to(dh), (grad_w * grad).to(dw), (grad_b * grad).to(db), None, None


def linear_cross_entropy(
    h: Tensor, weight: Tensor, bias: Tensor, targets: Tensor, chunk: int | None = None
) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy of `h @ weight.T + bias` (fp32 logits) against `targets`, rows whose target is
    negative ignored (padding rows), and the number of rows whose target has the largest logit (ties
    count); the plain path's `cross_entropy_and_hits(F.linear(h, weight, bias).float(), targets)`.
    `chunk`: rows taken to fp32 at a time (default: `default_chunk`)."""
    rows = chunk or default_chunk(h.device, weight.shape[0])
    total, hits = _LinearCrossEntropy.apply(h, weight, bias, targets, rows)
    return total, hits
