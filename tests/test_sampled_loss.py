"""The sampled-softmax warm-up (`sampled_loss`, `sampled_softmax` in the pre-training recipe): what the
estimate tends to, accidental hits, padding rows, the step-shared candidates, and that evaluation and the
steps after `sampled_softmax_share` use the full softmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinylm.config import ModelConfig
from tinylm.data.tokens import TokenData
from tinylm.model import TinyBertForMaskedLM
from tinylm.objectives import MLMObjective, unigram_log_probs
from tinylm.randomness import activate, rows_of
from tinylm.sampled_loss import Candidates, draw, proposal, sampled_cross_entropy


def plain_sampled_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor, cand: Candidates
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampled softmax written plainly with autograd (the reference of the fused one)."""
    valid, t = targets >= 0, targets.clamp(min=0)
    sampled = F.linear(h, weight[cand.ids], bias[cand.ids]).float() - cand.log_expected[cand.ids]
    true = (h.float() * weight[t].float()).sum(1) + bias[t].float() - cand.log_expected[t]
    sampled = sampled.masked_fill(cand.ids[None, :] == t[:, None], float("-inf"))
    logits = torch.cat([true[:, None], sampled], 1)
    loss = torch.where(valid, torch.logsumexp(logits, 1) - true - cand.log_expected[t], 0.0).sum()
    return loss, ((true >= sampled.amax(1)) & valid).sum()


def _case(vocab: int = 300, d: int = 16, rows: int = 24):
    g = torch.Generator().manual_seed(0)
    weight = (torch.randn(vocab, d, generator=g) * 0.5).requires_grad_()
    bias = (torch.randn(vocab, generator=g) * 0.1).requires_grad_()
    h = torch.randn(rows, d, generator=g).requires_grad_()
    targets = torch.randint(vocab, (rows,), generator=g)
    unigram = torch.log_softmax(torch.randn(vocab, generator=g) * 2, 0)
    return h, weight, bias, targets, unigram


def test_with_many_candidates_the_loss_is_the_cross_entropy_against_the_other_ids() -> None:
    """K → ∞: `-log(p_t / (1 - p_t))` under the full softmax, and its gradients (the documented limit)."""
    h, weight, bias, targets, unigram = _case()
    log_p = F.log_softmax(F.linear(h, weight, bias), 1)
    log_pt = log_p.gather(1, targets[:, None]).squeeze(1)
    want = -(log_pt - torch.log1p(-log_pt.exp())).sum()
    want_grads = torch.autograd.grad(want, (h, weight, bias))
    cand = draw(proposal(unigram), 400_000, torch.Generator().manual_seed(1))
    got, hits = sampled_cross_entropy(h, weight, bias, targets, cand)
    grads = torch.autograd.grad(got, (h, weight, bias))
    assert abs(float(got.detach()) - float(want.detach())) < 0.01 * abs(float(want.detach()))
    for g, w in zip(grads, want_grads, strict=True):
        assert float((g - w).norm() / w.norm()) < 0.04
    assert 0 <= int(hits) <= len(targets)
    few = draw(proposal(unigram), 64, torch.Generator().manual_seed(1))  # few candidates: another number
    assert (
        abs(float(sampled_cross_entropy(h, weight, bias, targets, few)[0].detach()) - float(want.detach()))
        > 1
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [1, 7, None])
def test_the_fused_loss_and_gradients_equal_the_plain_computation(
    dtype: torch.dtype, chunk: int | None
) -> None:
    """Loss, hits and the gradients of h, weight and bias against the plain autograd computation, in fp32
    and under bf16 autocast, with padding rows and accidental hits, chunked or not."""
    h, weight, bias, targets, unigram = _case(vocab=500, d=32, rows=40)
    targets[-3:] = -1
    cand = draw(proposal(unigram), 256, torch.Generator().manual_seed(3))
    targets[0] = cand.ids[5]  # an accidental hit
    results = []
    for fn in (plain_sampled_cross_entropy, sampled_cross_entropy):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            kw = {"chunk": chunk} if fn is sampled_cross_entropy else {}
            loss, hits = fn(h, weight, bias, targets, cand, **kw)
        results.append((loss.detach(), int(hits), torch.autograd.grad(loss * 0.5, (h, weight, bias))))
    (want, want_hits, want_grads), (got, hits, grads) = results
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    assert hits == want_hits or dtype == torch.bfloat16
    for g, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=tol, atol=tol * float(w.abs().max()))
    assert float(grads[0][-3:].abs().max()) == 0.0


def test_a_candidate_equal_to_the_target_is_left_out() -> None:
    h, weight, bias, targets, unigram = _case(rows=1)
    log_expected = torch.log(proposal(unigram) * 3)
    t = int(targets[0])
    others = torch.tensor([(t + 1) % 300, (t + 2) % 300])
    without = sampled_cross_entropy(h, weight, bias, targets, Candidates(others, log_expected))[0]
    with_hit = Candidates(torch.cat([others, torch.tensor([t])]), log_expected)
    torch.testing.assert_close(sampled_cross_entropy(h, weight, bias, targets, with_hit)[0], without)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padding_rows_add_nothing_and_nothing_is_not_finite(dtype: torch.dtype) -> None:
    """Rows with target -1 (a bucket's padding; [PAD] has no proposal mass): zero loss and gradient, in
    fp32 and under bf16 autocast, the real rows' loss unchanged."""
    h, weight, bias, targets, unigram = _case()
    q = proposal(unigram.clone().index_fill_(0, torch.tensor([0]), float("-inf")))
    cand = draw(q, 256, torch.Generator().manual_seed(2))
    padded = torch.cat([targets, torch.full((5,), -1)])
    h_pad = torch.cat([h.detach(), torch.randn(5, h.shape[1])]).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        loss, _ = sampled_cross_entropy(h_pad, weight, bias, padded, cand)
        real, _ = sampled_cross_entropy(h.detach(), weight, bias, targets, cand)
    (grad,) = torch.autograd.grad(loss, h_pad)
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())
    assert float(grad[len(targets) :].abs().max()) == 0.0
    torch.testing.assert_close(loss, real)


def _objective_case(**kw):
    cfg = ModelConfig(layers=1, hidden_size=32, heads=2, ffn_size=64, vocab_size=500, max_length=24,
                      dropout=0.0, attention_dropout=0.0)  # fmt: skip
    ids = torch.randint(5, 500, (6, 24), generator=torch.Generator().manual_seed(1))
    ids[:, 0], ids[:, -1], ids[4, 15:] = 101, 102, 0
    unigram = unigram_log_probs(ids.numpy(), 500)
    torch.manual_seed(0)
    model = TinyBertForMaskedLM(cfg)
    return model, {"input_ids": ids, "attention": (ids != 0).long()}, MLMObjective(500, unigram=unigram, **kw)


def test_a_steps_candidates_are_shared_by_its_micro_batches_and_drawn_again_next_step() -> None:
    """The candidates come from the step's generator: the same for any rows of the step (another
    micro-batch, rank or accumulation step), so a step's summed loss does not depend on how its batch is
    split; another step draws others."""
    model, batch, objective = _objective_case(sampled=64)
    first = objective.candidates(rows_of(0, 3, range(3), 24))
    assert torch.equal(first.ids, objective.candidates(rows_of(0, 3, range(3, 6), 24)).ids)
    assert not torch.equal(first.ids, objective.candidates(rows_of(0, 4, range(3), 24)).ids)
    with activate(rows_of(0, 3, range(6), 24)):
        whole = float(objective.loss(model, batch)[0].detach())
    parts = 0.0
    for half in (range(3), range(3, 6)):
        sub = {k: v[list(half)] for k, v in batch.items()}
        with activate(rows_of(0, 3, half, 24)):
            parts += float(objective.loss(model, sub)[0].detach())
    assert parts == pytest.approx(whole, rel=1e-5)


def test_the_full_softmax_after_the_share_and_in_evaluation() -> None:
    model, batch, sampled = _objective_case(sampled=64, sampled_share=0.5)
    _, _, full = _objective_case()

    def step_loss(obj: MLMObjective, progress: float) -> float:
        with activate(rows_of(0, 3, range(6), 24, progress)):
            return float(obj.loss(model, batch)[0].detach())

    assert step_loss(sampled, 0.2) != step_loss(full, 0.2)  # same masks, 64 candidates
    assert step_loss(sampled, 0.5) == step_loss(full, 0.5)  # past the share: the full softmax
    ids = batch["input_ids"]
    data = TokenData(ids.numpy().astype(np.uint16), batch["attention"].sum(1).numpy())
    cpu = torch.device("cpu")
    assert sampled.evaluate(model, data, 2, cpu) == full.evaluate(model, data, 2, cpu)


def test_the_proposal_follows_the_unigram_to_the_three_quarters() -> None:
    unigram = torch.log(torch.tensor([0.0, 0.1, 0.2, 0.7]))
    q = proposal(unigram)
    assert float(q[0]) == 0.0 and float(q.sum()) == pytest.approx(1.0)
    assert float(q[3] / q[1]) == pytest.approx(7**0.75, rel=1e-5)
    ids = draw(q, 20_000, torch.Generator().manual_seed(0)).ids
    share = torch.bincount(ids, minlength=4).double() / len(ids)
    assert float(share[0]) == 0.0 and abs(float(share[3] - q[3])) < 0.02
