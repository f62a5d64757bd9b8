"""The MLM output layer and its loss fused: vocabulary projection + cross-entropy over chunks of rows.

The plain path writes the (rows × vocab) logit matrix (~80 MB at batch 32), keeps it for the backward
pass, and reads or rewrites it several times (row max, exp, sum, softmax − one-hot, the gradient of the
slice that drops padding rows); on a 2-core AMD EPYC (AVX2) those passes were ~20 % of a 2/128 step
(benchmarks/README.md, profile). Here the rows are taken `chunk` at a time: the chunk's logits are made,
turned into their gradient (softmax − one-hot) in place, and immediately multiplied into the gradients of
the rows, the weight and the bias; the logits are never kept. The loss is the last node of the graph, so
the gradients can be computed in the forward pass and only scaled in the backward pass (as Liger's and
Apple's fused linear-cross-entropy kernels do). Same mathematics as the plain path:
`tests/test_vocab_loss.py` compares loss, hits and gradients in fp32 and bf16.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Rows per chunk: its fp32 logits (256 × 30,522 × 4 B ≈ 31 MB) bound the memory of the loss, and the
#: weight is read twice per chunk. `benchmarks/vocab_loss.py` times chunk sizes (differences within noise).
CHUNK_ROWS = 256


def _matmul_dtype(h: Tensor) -> torch.dtype:
    """The dtype the plain path's matmuls would use: autocast's where it is on, else the inputs'."""
    dev = h.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, h: Tensor, weight: Tensor, bias: Tensor, targets: Tensor, chunk: int
    ) -> tuple[Tensor, Tensor]:
        dt = _matmul_dtype(h)
        with torch.autocast(h.device.type, enabled=False):
            w, x = weight.to(dt), h.to(dt)
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            hits = torch.zeros((), dtype=torch.int64, device=h.device)
            grad_h = torch.empty(h.shape, dtype=dt, device=h.device)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device)
            grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=h.device)
            for s in range(0, len(h), chunk):
                xc, tc = x[s : s + chunk], targets[s : s + chunk]
                valid = tc >= 0
                t = tc.clamp(min=0)[:, None]
                z = torch.mm(xc, w.t()).float().add_(bias)  # the chunk's logits (fp32, as the plain path)
                z.sub_(z.amax(1, keepdim=True))
                picked = z.gather(1, t).squeeze(1)  # target logit − row max: 0 where it is the largest
                hits += ((picked >= 0) & valid).sum()
                sumexp = z.exp_().sum(1)
                total += torch.where(valid, sumexp.log() - picked, 0.0).sum()
                z.mul_((valid / sumexp)[:, None])  # softmax, zero on ignored rows
                z.scatter_add_(1, t, -valid.float()[:, None])  # − one-hot
                zc = z.to(dt)
                grad_h[s : s + chunk] = torch.mm(zc, w)
                if dt == torch.float32:
                    grad_w.addmm_(zc.t(), xc)
                else:
                    grad_w += torch.mm(zc.t(), xc).float()
                grad_b += z.sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (h.dtype, weight.dtype, bias.dtype)
        ctx.mark_non_differentiable(hits)
        return total, hits

    @staticmethod
    def backward(ctx, grad: Tensor, _hits: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:
        grad_h, grad_w, grad_b = ctx.saved_tensors
        dh, dw, db = ctx.dtypes
        return (grad_h * grad).to(dh), (grad_w * grad).to(dw), (grad_b * grad).to(db), None, None


def linear_cross_entropy(
    h: Tensor, weight: Tensor, bias: Tensor, targets: Tensor, chunk: int = CHUNK_ROWS
) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy of `h @ weight.T + bias` (fp32 logits) against `targets`, rows whose target is
    negative ignored (padding rows), and the number of rows whose target has the largest logit (ties
    count); the plain path's `cross_entropy_and_hits(F.linear(h, weight, bias).float(), targets)`."""
    total, hits = _LinearCrossEntropy.apply(h, weight, bias, targets, chunk)
    return total, hits
