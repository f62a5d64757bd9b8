"""The fused vocabulary projection + loss (`vocab_loss`) against the plain path, and the init-only and
masking-schedule and attention-window options of the faster pre-training recipes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinylm.config import ModelConfig
from tinylm.data.tokens import TokenData
from tinylm.model import TinyBertForMaskedLM, sinusoidal_positions
from tinylm.objectives import MLMObjective, cross_entropy_and_hits
from tinylm.randomness import activate, rows_of
from tinylm.vocab_loss import linear_cross_entropy

#: Stated tolerances (relative to the largest gradient entry): fp32 summation order only; bf16: both paths
#: round the logits and the gradient's factors to bf16, at different points (the fused path rounds the
#: softmax numerators and `X / Σe`, the plain path the softmax itself).
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def _autocast(dtype: torch.dtype) -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_fused_loss_and_gradients_equal_the_plain_path(dtype: torch.dtype, chunk: int) -> None:
    g = torch.Generator().manual_seed(0)
    rows, valid, vocab, d = 150, 131, 997, 32
    h = torch.randn(rows, d, generator=g).requires_grad_()
    w = (torch.randn(vocab, d, generator=g) * 0.3).requires_grad_()
    b = (torch.randn(vocab, generator=g) * 0.1).requires_grad_()
    targets = torch.randint(vocab, (rows,), generator=g)
    targets[3] = int(torch.mv(w, h[3]).add(b).argmax())  # at least one hit
    targets[valid:] = -1  # padding rows: ignored
    with _autocast(dtype):
        logits = F.linear(h, w, b)[:valid]
        plain, plain_hits = cross_entropy_and_hits(logits.float(), targets[:valid])
    want = torch.autograd.grad(plain, (h, w, b))
    with _autocast(dtype):
        fused, hits = linear_cross_entropy(h, w, b, targets, chunk)
    got = torch.autograd.grad(fused * 0.5, (h, w, b))  # the incoming gradient scales every gradient
    tol = TOLERANCE[dtype]
    assert abs(float(fused.detach()) - float(plain.detach())) <= tol * abs(float(plain.detach()))
    assert int(hits) == int(plain_hits) >= 1 or dtype == torch.bfloat16
    for name, a, c in zip(("h", "weight", "bias"), want, got, strict=True):
        assert c.dtype == a.dtype, name
        err = float((a * 0.5 - c).abs().max() / a.abs().max())
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol}"
    assert float(got[0][valid:].abs().max()) == 0.0  # ignored rows get no gradient


def _plain_and_fused(
    h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype, **kw: int
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """(loss, hits, grad h, grad w, grad b) of the plain path and of the fused one, padding rows ignored."""
    valid = targets >= 0
    with _autocast(dtype):
        plain, plain_hits = cross_entropy_and_hits(F.linear(h, w, b)[valid].float(), targets[valid])
        fused, hits = linear_cross_entropy(h, w, b, targets, **kw)
    want = torch.autograd.grad(plain, (h, w, b))
    got = torch.autograd.grad(fused, (h, w, b))
    return (plain.detach(), plain_hits, *want), (fused.detach(), hits, *got)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_confident_rows_keep_their_small_gradients(dtype: torch.dtype) -> None:
    """Rows whose target has > 99.7 % of the probability: a row's gradient is the small difference between
    the softmax and the one-hot. The fused path folds the one-hot in before rounding and scales by 1/Σe
    afterwards; measured row by row against float64, it is no less accurate than the plain path."""
    g = torch.Generator().manual_seed(3)
    rows, vocab, d = 40, 500, 64
    w = F.normalize(torch.randn(vocab, d, generator=g), dim=1)
    targets = torch.randint(vocab, (rows,), generator=g)
    h = (w[targets] * 14 + torch.randn(rows, d, generator=g) * 0.05).requires_grad_()
    w.requires_grad_()
    b = torch.zeros(vocab, requires_grad=True)
    exact = [t.double().detach().requires_grad_() for t in (h, w, b)]
    exact_loss = F.cross_entropy(F.linear(*exact), targets, reduction="sum")
    truth = torch.autograd.grad(exact_loss, exact)
    assert float(torch.softmax(F.linear(*exact), 1).gather(1, targets[:, None]).min().detach()) > 0.997
    (loss, plain_hits, *want), (fused, hits, *got) = _plain_and_fused(h, w, b, targets, dtype)
    assert int(hits) == int(plain_hits) == rows
    loss_errors = [abs(float(x) - float(exact_loss.detach())) for x in (fused, loss)]
    assert loss_errors[0] <= max(1.5 * loss_errors[1], 1e-6), loss_errors

    def row_error(grad: torch.Tensor) -> float:  # the worst row's error relative to its own norm
        return float(((grad.double() - truth[0]).norm(dim=1) / truth[0].norm(dim=1)).max())

    assert row_error(got[0]) <= max(1.5 * row_error(want[0]), 1e-5), (row_error(got[0]), row_error(want[0]))
    for name, a, c, t in zip(("weight", "bias"), want[1:], got[1:], truth[1:], strict=True):
        scale = float(t.abs().max())
        fused_err, plain_err = (float((x.double() - t).abs().max()) / scale for x in (c, a))
        assert fused_err <= max(1.5 * plain_err, 1e-5), (name, fused_err, plain_err)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_beyond_one_group_accumulate_into_the_same_gradients(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With groups of 16 rows, 70 rows take five groups (the last a partial one): the same loss, hits and
    gradients as one group and as the plain path (each group's weight gradient is rounded to the matmul
    dtype before the groups are summed: the stated tolerance relative to the largest entry)."""
    import tinylm.vocab_loss as vocab_loss

    g = torch.Generator().manual_seed(4)
    h = torch.randn(70, 24, generator=g).requires_grad_()
    w = (torch.randn(300, 24, generator=g) * 0.3).requires_grad_()
    b = (torch.randn(300, generator=g) * 0.1).requires_grad_()
    targets = torch.randint(300, (70,), generator=g)
    targets[[5, 33, 69]] = -1
    one = _plain_and_fused(h, w, b, targets, dtype)[1]
    monkeypatch.setattr(vocab_loss, "GROUP_ROWS", 16)
    plain, groups = _plain_and_fused(h, w, b, targets, dtype, chunk=5)
    assert int(groups[1]) == int(one[1])
    tol = TOLERANCE[dtype]
    for a, c, p in zip(one[2:], groups[2:], plain[2:], strict=True):
        assert float((c - a).abs().max() / a.abs().max()) <= tol
        assert float((c - p).abs().max() / p.abs().max()) <= tol
    assert abs(float(groups[0]) - float(one[0])) <= 1e-6 * abs(float(one[0]))  # the loss is summed in fp32
    assert abs(float(groups[0]) - float(plain[0])) <= tol * abs(float(plain[0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_rows_is_a_zero_loss_with_zero_gradients(dtype: torch.dtype) -> None:
    """A process whose share of a global batch has no masked rows: loss 0, no hits, every gradient zero."""
    h = torch.randn(0, 16).requires_grad_()
    w, b = torch.randn(50, 16).requires_grad_(), torch.zeros(50).requires_grad_()
    with _autocast(dtype):
        loss, hits = linear_cross_entropy(h, w, b, torch.zeros(0, dtype=torch.long))
    grads = torch.autograd.grad(loss, (h, w, b))
    assert float(loss.detach()) == 0.0 and int(hits) == 0
    assert grads[0].shape == (0, 16) and all(float(g.abs().sum()) == 0.0 for g in grads)


def test_a_retained_graph_gives_the_same_gradients_twice() -> None:
    """backward(retain_graph=True) twice accumulates exactly twice the gradients (the saved tensors are
    scaled into new tensors, never in place)."""
    g = torch.Generator().manual_seed(5)
    h = torch.randn(20, 8, generator=g).requires_grad_()
    w, b = torch.randn(40, 8, generator=g).requires_grad_(), torch.zeros(40).requires_grad_()
    loss, _ = linear_cross_entropy(h, w, b, torch.randint(40, (20,), generator=g))
    (loss * 0.5).backward(retain_graph=True)
    once = [t.grad.clone() for t in (h, w, b)]
    (loss * 0.5).backward()
    for t, first in zip((h, w, b), once, strict=True):
        torch.testing.assert_close(t.grad, 2 * first)


def test_the_cpu_chunk_fills_half_the_l2_cache_and_other_devices_take_whole_groups(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    import tinylm.vocab_loss as vocab_loss

    l2 = vocab_loss.l2_cache_bytes()
    assert 64 << 10 <= l2 <= 64 << 20  # read from sysfs (or the stated default): a plausible L2
    caches = [("index0", 1, "Data", "48K"), ("index1", 1, "Instruction", "32K"),
              ("index2", 2, "Unified", "1M"), ("index3", 3, "Unified", "32768K")]  # fmt: skip
    for name, level, kind, size in caches:  # a fake sysfs cache directory
        (tmp_path / name).mkdir()
        for key, value in (("level", level), ("type", kind), ("size", size)):
            (tmp_path / name / key).write_text(f"{value}\n")
    assert vocab_loss.l2_cache_bytes(str(tmp_path)) == 1 << 20
    assert vocab_loss.l2_cache_bytes(str(tmp_path / "index2")) == vocab_loss.DEFAULT_L2_BYTES  # no index*
    monkeypatch.setattr(vocab_loss, "l2_cache_bytes", lambda: 2 << 20)
    assert vocab_loss.default_chunk(torch.device("cpu"), 30522) == 8  # 8 × 30,522 × 4 B ≈ 1 MB
    monkeypatch.setattr(vocab_loss, "l2_cache_bytes", lambda: 512 << 10)
    assert vocab_loss.default_chunk(torch.device("cpu"), 30522) == 2
    assert vocab_loss.default_chunk(torch.device("cpu"), 10**7) == 1
    assert vocab_loss.default_chunk(torch.device("cuda"), 30522) == vocab_loss.GROUP_ROWS


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mlm_objective_fused_equals_plain_on_every_parameter(dtype: torch.dtype) -> None:
    """The trainer's step (`MLMObjective.loss` under the step's rows) through both paths: the same loss,
    counts and gradients of every parameter, the tied decoder/embedding included."""
    cfg = ModelConfig(layers=1, hidden_size=32, heads=2, ffn_size=64, vocab_size=500, max_length=24,
                      dropout=0.0, attention_dropout=0.0)  # fmt: skip
    ids = torch.randint(5, 500, (6, 24), generator=torch.Generator().manual_seed(1))
    ids[:, 0], ids[:, -1], ids[4, 15:] = 101, 102, 0
    batch = {"input_ids": ids, "attention": (ids != 0).long()}
    results = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = TinyBertForMaskedLM(cfg)
        objective = MLMObjective(cfg.vocab_size, seed=0, fused=fused)
        with activate(rows_of(0, 3, range(6), 24)), _autocast(dtype):
            loss, stats = objective.loss(model, batch)
        loss.backward()
        results.append(
            (float(loss.detach()), stats, {n: p.grad.clone() for n, p in model.named_parameters()})
        )
    (plain, plain_stats, want), (fused_loss, stats, got) = results
    tol = TOLERANCE[dtype]
    assert stats["count"] == plain_stats["count"] > 0
    assert stats["correct"] == plain_stats["correct"] or dtype == torch.bfloat16
    assert abs(fused_loss - plain) <= tol * abs(plain)
    assert set(got) == set(want)
    scale = max(float(g.abs().max()) for g in want.values())
    for name in want:  # (key biases have zero gradient in exact arithmetic: absolute tolerance too)
        torch.testing.assert_close(got[name], want[name], rtol=tol * 5, atol=tol * scale, msg=name)


def test_mask_rate_schedule_falls_linearly_and_evaluation_keeps_mask_prob() -> None:
    objective = MLMObjective(30522, mask_prob=0.15, mask_prob_start=0.3)
    assert [round(objective.rate_at(p), 4) for p in (0.0, 0.5, 1.0, 2.0)] == [0.3, 0.225, 0.15, 0.15]
    ids = torch.randint(1000, 30000, (64, 128), generator=torch.Generator().manual_seed(0))
    early = objective.mask_rows(ids, rows_of(0, 0, range(64), 128, progress=0.0))[1]
    late = objective.mask_rows(ids, rows_of(0, 0, range(64), 128, progress=1.0))[1]
    n = ids.numel()
    assert 0.28 < len(early) / n < 0.32 and 0.13 < len(late) / n < 0.17
    held_out = objective.mask(ids, torch.Generator().manual_seed(0))[1]
    assert 0.13 < len(held_out) / n < 0.17


def test_prediction_rate_keeps_the_loss_rows_while_the_masking_rate_corrupts_more() -> None:
    """predict_prob 0.15 under a 30 % masking rate: ~30 % of the tokens corrupted, ~15 % in the loss, every
    predicted position among the corrupted ones; at or below predict_prob every selected token is
    predicted and the draws are those of the run without it (the same masks, step for step)."""
    ids = torch.randint(1000, 30000, (64, 128), generator=torch.Generator().manual_seed(0))
    plain = MLMObjective(30522, mask_prob=0.15, mask_prob_start=0.3)
    split = MLMObjective(30522, mask_prob=0.15, mask_prob_start=0.3, predict_prob=0.15)
    inputs, positions, targets = split.mask_rows(ids, rows_of(0, 0, range(64), 128, progress=0.0))
    plain_inputs, plain_positions, _ = plain.mask_rows(ids, rows_of(0, 0, range(64), 128, progress=0.0))
    n = ids.numel()
    selected = plain_positions  # the same generators draw the same selection and corruption
    assert torch.equal(inputs, plain_inputs) and 0.28 < len(selected) / n < 0.32
    assert 0.13 < len(positions) / n < 0.17 and bool(torch.isin(positions, selected).all())
    assert torch.equal(targets, ids.view(-1)[positions])
    late = split.mask_rows(ids, rows_of(0, 0, range(64), 128, progress=1.0))
    late_plain = plain.mask_rows(ids, rows_of(0, 0, range(64), 128, progress=1.0))
    assert all(torch.equal(a, b) for a, b in zip(late, late_plain, strict=True))


def _window_model() -> tuple[TinyBertForMaskedLM, torch.Tensor, torch.Tensor]:
    cfg = ModelConfig(layers=2, hidden_size=32, heads=2, ffn_size=64, vocab_size=200, max_length=16,
                      dropout=0.0, attention_dropout=0.0)  # fmt: skip
    torch.manual_seed(0)
    ids = torch.randint(5, 100, (3, 16), generator=torch.Generator().manual_seed(2))
    attention = torch.ones(3, 16, dtype=torch.long)
    attention[1, 10:], attention[2, 3:] = 0, 0
    return TinyBertForMaskedLM(cfg).eval(), ids * attention, attention


@pytest.mark.parametrize("unpad", [True, False])
def test_attention_window_restricts_what_each_token_sees(unpad: bool) -> None:
    """A window as wide as the sequence changes no real token's logits; window w: changing a token more
    than w·layers positions away changes nothing, a nearer one does; padding queries beyond every real
    token's window stay finite (each token keeps itself)."""
    model, ids, attention = _window_model()
    model.bert.unpad = unpad
    real = attention.view(-1).bool()
    full = model(ids, attention)
    torch.testing.assert_close(model(ids, attention, window=15)[real], full[real], rtol=0, atol=0)
    narrow = model(ids, attention, window=1)  # 2 layers: position 0 sees positions 0-2
    assert bool(torch.isfinite(narrow).all())
    assert not torch.allclose(narrow[real], full[real], atol=1e-4)
    far, near = ids.clone(), ids.clone()
    far[0, 3], near[0, 2] = ids[0, 3] % 90 + 6, ids[0, 2] % 90 + 6
    torch.testing.assert_close(model(far, attention, window=1)[0], narrow[0], rtol=0, atol=0)
    assert not torch.allclose(model(near, attention, window=1)[0], narrow[0], atol=1e-6)
    assert not torch.allclose(model(far, attention)[0], full[0], atol=1e-6)  # full attention sees it


def test_attention_window_widens_to_full_and_training_steps_use_it() -> None:
    objective = MLMObjective(200, seed=0, window_start=2, window_share=0.5)
    assert [objective.window_at(p, 128) for p in (0.0, 0.25, 0.49, 0.5, 1.0)] == [2, 65, 125, None, None]
    assert MLMObjective(100).window_at(0.0, 128) is None
    model, ids, attention = _window_model()
    model.train()
    batch = {"input_ids": ids, "attention": attention}

    def step_loss(obj: MLMObjective, progress: float) -> float:
        with activate(rows_of(0, 3, range(3), 16, progress)):
            return float(obj.loss(model, batch)[0].detach())

    plain = MLMObjective(200, seed=0)
    assert step_loss(objective, 0.0) != step_loss(plain, 0.0)  # same masks, windowed attention
    assert step_loss(objective, 0.6) == step_loss(plain, 0.6)  # past the warm-up: full attention
    data = TokenData(ids.numpy().astype(np.uint16), attention.sum(1).numpy())
    cpu = torch.device("cpu")
    assert objective.evaluate(model, data, 2, cpu) == plain.evaluate(model, data, 2, cpu)  # full attention
    with pytest.raises(ValueError, match="not with cls_only"):
        model.bert(ids, attention, cls_only=True, window=2)


def test_init_options_change_only_the_init() -> None:
    base = ModelConfig(layers=1, hidden_size=64, heads=2, ffn_size=64, vocab_size=300, max_length=32)
    plain = TinyBertForMaskedLM(base)
    mimetic = TinyBertForMaskedLM(ModelConfig(**vars(base) | {"position_init": "sinusoidal",
                                                               "attention_init": "mimetic"}))  # fmt: skip
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in mimetic.named_parameters()]
    pos = mimetic.bert.embeddings.position_embeddings.weight
    assert torch.equal(pos, sinusoidal_positions(32, 64, base.init_std))
    assert abs(float(pos.std()) - base.init_std) < 0.005
    cos = F.cosine_similarity(pos[:-1], pos[1:]).mean()
    assert cos > 0.9  # neighbouring positions start out similar
    attn = mimetic.bert.encoder.layer[0].attention.self
    assert torch.equal(attn.query.weight, attn.key.weight)
    plain_attn = plain.bert.encoder.layer[0].attention.self
    assert not torch.equal(plain_attn.query.weight, plain_attn.key.weight)


def test_bad_recipe_options_are_one_clear_error_before_anything_runs(tmp_path) -> None:
    import subprocess
    import sys

    from tinylm.errors import ConfigError
    from tinylm.settings import PretrainSettings

    with pytest.raises(ConfigError) as e:
        PretrainSettings.build({"mask_prob_start": 1.5, "position_init": "random", "attention_init": "x",
                                "attention_window_start": -1, "attention_window_share": 0,
                                "predict_prob": 0, "sampled_softmax": 0,
                                "sampled_softmax_share": 1.5})  # fmt: skip
    text = str(e.value)
    for field in ("mask_prob_start", "position_init", "attention_init", "attention_window_start",
                  "attention_window_share", "sampled_softmax:", "sampled_softmax_share"):  # fmt: skip
        assert field in text
    out = subprocess.run(
        [sys.executable, "-m", "tinylm", "pretrain", "--mask_prob_start", "0", "--out", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode != 0 and "mask_prob_start: must be in (0, 1)" in out.stderr
    # predict_prob at or above every masking rate the run uses would never act: an error, not a no-op
    assert "predict_prob: must be in (0, " in text
    with pytest.raises(ConfigError, match=r"predict_prob: must be in \(0, 0.15\)"):
        PretrainSettings.build({"predict_prob": 0.15})
    assert list(tmp_path.iterdir()) == []  # nothing started
