"""Sampled softmax for the MLM output layer (Jean et al. 2015, arXiv 1412.2007; TensorFlow's
`sampled_softmax_loss` with `remove_accidental_hits`): each row's target against `K` candidate ids drawn
once per step from a proposal `q ∝ unigram ** 0.75`, every logit (the target's too) corrected by `log(K q)`,
the log of that id's expected count among the candidates, and a candidate equal to the row's target left
out. The vocabulary projection costs `K` columns instead of the vocabulary's (2,048 of 30,522 for the
`tiny-pretrain` recipe).

It is an estimate with a known bias, not the full softmax: as `K` grows the loss tends to the cross-entropy
of the target against the *other* ids, `-log(p_t / (1 - p_t))` under the full softmax `p`, whose gradient
is the full softmax's up to terms of the size of `p_t` (`tests/test_sampled_loss.py`). That is close while
the model is far from confident (the plateau near the unigram loss); a run may switch to the full softmax
for its last steps (`sampled_softmax_share`: 0.5 ended 0.05 nats lower than sampling throughout after 9 M
tokens, at 1.16x the wall time; `tiny-pretrain` samples throughout). A training recipe, not the model:
evaluation, the adequacy gate and the saved model always use the full vocabulary projection.

An importance-sampling estimate without the target in the normaliser (`log Σ_j exp(s_j - log K q_j) - s_t`,
consistent as `K` grows) reached 1.22 nats below the unigram loss where this one reached the 1.5-nat gate
(4.45 M tokens, one seed; benchmarks/README.md), so this one is the recipe's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tinylm.vocab_loss import _matmul_dtype, _padded_width, default_chunk

#: Exponent of the proposal: `q ∝ unigram ** PROPOSAL_POWER` (word2vec's 3/4: frequent ids less dominant).
PROPOSAL_POWER = 0.75


@dataclass(frozen=True)
class Candidates:
    """A step's candidate ids and, per vocabulary id, `log(K q)`: the log of its expected count."""

    ids: Tensor
    log_expected: Tensor


def proposal(unigram_log_probs: Tensor, power: float = PROPOSAL_POWER) -> Tensor:
    """The proposal `q ∝ unigram ** power` over the vocabulary (ids the unigram gives no mass keep none)."""
    q = torch.exp(unigram_log_probs.double() * power)
    return (q / q.sum()).float()


def draw(q: Tensor, k: int, generator: torch.Generator) -> Candidates:
    """`k` ids drawn from `q` with replacement (one draw per step, shared by its rows)."""
    ids = torch.multinomial(q, k, replacement=True, generator=generator)
    log_expected = torch.log(q * k)
    log_expected[q == 0] = 0.0  # never drawn, never a target ([PAD]: the padding rows' stand-in target)
    return Candidates(ids, log_expected)


def _rows(
    x: Tensor, wc: Tensor, bc: Tensor, corr: Tensor, true: Tensor, hit: Tensor, chunk: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The candidates' logits `x @ wc.T + bc` in the matmul dtype, then per `chunk` rows in fp32: corrected,
    accidental hits to -inf, shifted by the row max (the target's corrected logit `true` included) and
    exponentiated in place. Returns the numerators (matmul dtype, in place of the logits), the row max,
    the sum of the numerators with the target's, the target's numerator, and the hit rows."""
    rows = len(x)
    e = torch.addmm(bc, x, wc.t())
    top = torch.empty(rows, dtype=torch.float32, device=x.device)
    total = torch.empty_like(top)
    for s in range(0, rows, chunk):
        z = e[s : s + chunk].float().sub_(corr).masked_fill_(hit[s : s + chunk], float("-inf"))
        top[s : s + chunk] = torch.maximum(z.amax(1), true[s : s + chunk])
        total[s : s + chunk] = z.sub_(top[s : s + chunk, None]).exp_().sum(1)
        e[s : s + chunk] = z
    own = torch.exp(true - top)
    return e, top, total + own, own, true >= top


class _SampledCrossEntropy(torch.autograd.Function):
    """The sampled softmax with its gradients made in the forward pass (as `vocab_loss` does for the full
    one): the (rows × K) numerators are kept once in the matmul dtype, the division by the row sum is
    applied to the small factors, `[grad_wc | grad_bc]` come from one matmul."""

    @staticmethod
    def forward(
        ctx,
        h: Tensor,
        wc: Tensor,
        bc: Tensor,
        wt: Tensor,
        bt: Tensor,
        corr: Tensor,
        corr_t: Tensor,
        hit: Tensor,
        valid: Tensor,
        chunk: int,
    ) -> tuple[Tensor, Tensor]:
        dt = _matmul_dtype(h)
        d = h.shape[1]
        with torch.autocast(h.device.type, enabled=False):
            x = h.to(dt)
            true = (h.float() * wt.float()).sum(1) + bt.float() - corr_t  # fp32, as the plain path
            e, top, total, own, hits = _rows(x, wc.to(dt), bc.to(dt), corr, true, hit, chunk)
            loss = torch.where(valid, total.log() + top - true - corr_t, 0.0).sum()
            inv = valid / total  # 1 / Σ, zero on ignored rows
            d_true = torch.where(valid, own * inv - 1.0, 0.0)
            cols = torch.zeros(len(x), _padded_width(d), dtype=torch.float32, device=x.device)
            cols[:, :d] = x * inv[:, None]
            cols[:, d] = inv
            wb = torch.mm(e.t(), cols.to(dt)).float()
            grad_h = torch.mm(e, wc.to(dt)).float() * inv[:, None] + d_true[:, None] * wt.float()
            grad_wt = d_true[:, None] * h.float()
        ctx.save_for_backward(grad_h, wb[:, :d], wb[:, d], grad_wt, d_true)
        ctx.dtypes = (h.dtype, wc.dtype, bc.dtype, wt.dtype, bt.dtype)
        hit_count = (hits & valid).sum()
        ctx.mark_non_differentiable(hit_count)
        return loss, hit_count

    @staticmethod
    def backward(ctx, grad: Tensor, _hits: Tensor) -> tuple[Tensor | None, ...]:
        grads = [(g * grad).to(dtype) for g, dtype in zip(ctx.saved_tensors, ctx.dtypes, strict=True)]
        return (*grads, None, None, None, None, None)


def sampled_cross_entropy(
    h: Tensor, weight: Tensor, bias: Tensor, targets: Tensor, cand: Candidates, chunk: int | None = None
) -> tuple[Tensor, Tensor]:
    """Summed sampled-softmax cross-entropy of the rows of `h` (rows whose target is negative ignored; each
    row's value less its target's constant correction `log(K q_t)`, so that it is on the nats scale) and
    the number of rows whose corrected target logit is at least every candidate's; `weight`/`bias`: the
    vocabulary projection's. The candidates' logits come from one matmul in autocast's dtype (the bias
    inside, as `F.linear` under autocast), the loss in fp32 `chunk` rows at a time (default: as many as
    fill half of one core's L2 cache); `tests/test_sampled_loss.py` compares it with the plain autograd
    computation."""
    device = h.device
    ids = cand.ids.to(device)
    log_expected = cand.log_expected.to(device)
    valid = targets >= 0
    t = targets.clamp(min=0)
    both = torch.cat([ids, t])  # one gather of the candidates' and targets' rows: one gradient scatter
    w, b, corr = weight[both], bias[both], log_expected[both]
    k = len(ids)
    hit = ids[None, :] == t[:, None]
    rows = chunk or default_chunk(device, k)
    loss, hits = _SampledCrossEntropy.apply(
        h, w[:k], b[:k], w[k:], b[k:], corr[:k], corr[k:], hit, valid, rows
    )
    return loss, hits
