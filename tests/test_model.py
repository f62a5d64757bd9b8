"""The model: parameter counts of the paper's architectures, conv front-end, and transformers parity."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tinylm.config import ModelConfig, build_section
from tinylm.errors import CheckpointError, ConfigError, TinylmError
from tinylm.hf import export_model, import_model
from tinylm.model import TinyBertForMaskedLM, TinyBertForSequenceClassification, parameter_counts

transformers = pytest.importorskip("transformers")  # a dev dependency: always present in CI

PAPER_COUNTS = {  # paper.md §3.2, backbone incl. pooler (and conv)
    "bert6": 66_660_096,
    "bert1-h12": 31_220_736,
    "bert1-h24": 77_776_896,
    "bert1-conv2-k3-d64-h12": 31_258_627,
    "bert1-conv2-k3-d64-h8": 19_147_779,
    "bert1-conv3-k3-d32-h12": 31_239_779,
    "bert1-conv2-k16x3-d64-h12": 31_420_867,
}


def model_cfg(**kw) -> ModelConfig:
    return build_section(ModelConfig, kw)


@pytest.mark.parametrize("name", list(PAPER_COUNTS))
def test_paper_parameter_counts(name: str) -> None:
    counts = parameter_counts(model_cfg(model=name))
    assert counts["backbone"] == PAPER_COUNTS[name]
    assert (
        counts["mlm_head"] == {768: 622_650, 1536: 2_394_426, 512: 294_202}[model_cfg(model=name).hidden_size]
    )


def test_named_model_overridable_and_validation_reports_all() -> None:
    cfg = model_cfg(model="bert6", layers=2)
    assert cfg.layers == 2 and cfg.hidden_size == 768
    with pytest.raises(ConfigError) as e:
        model_cfg(hidden_size=100, heads=3, layers=-1, dropout=1.5, hiden_size=3, conv_kernel="x")
    msg = str(e.value)
    for part in (
        "heads: 3 does not divide hidden_size 100",
        "layers: must be positive",
        "dropout: must be in [0, 1)",
        "hiden_size: unknown setting (did you mean hidden_size?)",
        "conv_kernel:",
    ):
        assert part in msg
    assert len(e.value.problems) == 5


def test_conv_front_end_shapes_and_rectangular_kernel() -> None:
    cfg = model_cfg(
        layers=1,
        hidden_size=32,
        heads=2,
        ffn_size=64,
        vocab_size=200,
        max_length=16,
        conv_layers=2,
        conv_kernel="16x3",
        conv_channels=4,
    )
    m = TinyBertForMaskedLM(cfg)
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(16, 3), (16, 3), (1, 1)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 4), (4, 4), (4, 1)]
    ids = torch.randint(5, 200, (3, 10))
    assert m(ids).shape == (30, 200)
    # faithful to the paper's code: the conv block ignores the padding mask (a padded position changes
    # outputs)
    m.eval()
    att = torch.ones_like(ids)
    att[:, 8:] = 0
    a = m(ids, att)
    ids2 = ids.clone()
    ids2[:, 9] = 7
    b = m(ids2, att)
    assert not torch.allclose(a.view(3, 10, -1)[:, 0], b.view(3, 10, -1)[:, 0])


def test_evaluation_after_fused_adamw_steps_sees_the_new_weights() -> None:
    """Fused AdamW updates weights without bumping `_version`; the eval-mode Q/K/V cache must not serve
    the weights of an earlier evaluation (it once did: held-out losses plateaued that were not real)."""
    from tinylm.config import TrainConfig
    from tinylm.train import make_optimizer

    torch.manual_seed(0)
    model = TinyBertForMaskedLM(model_cfg(layers=1, hidden_size=32, heads=2, ffn_size=64, vocab_size=100))
    ids, attention = torch.randint(5, 100, (4, 12)), torch.ones(4, 12, dtype=torch.bool)
    opt = make_optimizer(model, TrainConfig(lr=1e-2), torch.device("cpu"))
    assert opt.defaults.get("fused"), "the case that matters: the optimizer the trainer uses on CPU"
    for _ in range(2):  # evaluate, train, evaluate again, with and without a train()/eval() switch between
        with torch.no_grad():
            model.eval()
            model(ids, attention)  # fills the cache
        for _ in range(3):
            model(ids, attention).float().logsumexp(-1).mean().backward()
            opt.step()
            opt.zero_grad()
        with torch.no_grad():
            got = model(ids, attention)
            want = copy.deepcopy(model).eval()(ids, attention)  # a copy has no cache
        assert torch.allclose(got, want, atol=1e-5)
        model.train()


def test_masked_positions_equal_full_logits() -> None:
    cfg = model_cfg(layers=2, hidden_size=32, heads=4, ffn_size=64, vocab_size=300, max_length=16)
    m = TinyBertForMaskedLM(cfg).eval()
    ids = torch.randint(5, 300, (2, 12))
    pos = torch.tensor([0, 5, 13, 23])
    assert torch.allclose(m(ids, None, pos), m(ids)[pos], atol=1e-6)


def hf_pair(cfg: ModelConfig, tmp: Path, kind: str):
    torch.manual_seed(0)
    if kind == "mlm":
        ours = TinyBertForMaskedLM(cfg).eval()
    else:
        ours = TinyBertForSequenceClassification(cfg, 5).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values so the comparison means something
        for name, p in ours.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    out = export_model(ours, tmp / kind, label_names=[f"l{i}" for i in range(5)] if kind != "mlm" else None)
    auto = (
        transformers.AutoModelForMaskedLM
        if kind == "mlm"
        else transformers.AutoModelForSequenceClassification
    )
    theirs = auto.from_pretrained(out).eval()
    return ours, theirs, out


def test_export_loads_in_transformers_and_logits_match(tmp_path: Path) -> None:
    cfg = model_cfg(layers=2, hidden_size=64, heads=4, ffn_size=128, vocab_size=500, max_length=32)
    ids = torch.randint(104, 500, (3, 20))
    ids[:, 0] = 101
    att = torch.ones_like(ids)
    att[1, 15:] = 0
    att[2, 7:] = 0
    ours, theirs, out = hf_pair(cfg, tmp_path, "mlm")
    with torch.no_grad():
        a = ours(ids, att).view(3, 20, -1)
        b = theirs(input_ids=ids, attention_mask=att).logits
    for i, n in enumerate((20, 15, 7)):  # padded positions are meaningless in both
        assert (a[i, :n] - b[i, :n]).abs().max().item() <= 1e-4
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]

    ours_c, theirs_c, _ = hf_pair(cfg, tmp_path, "classifier")
    with torch.no_grad():
        a = ours_c(ids, att)
        b = theirs_c(input_ids=ids, attention_mask=att).logits
    assert (a - b).abs().max().item() <= 1e-4


def test_import_transformers_directory_round_trip(tmp_path: Path) -> None:
    hcfg = transformers.BertConfig(
        vocab_size=400,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=96,
        max_position_embeddings=24,
    )
    torch.manual_seed(1)
    hf = transformers.BertForMaskedLM(hcfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours, report = import_model(tmp_path / "hf")
    ours.eval()
    ids = torch.randint(104, 400, (2, 16))
    with torch.no_grad():
        assert (ours(ids).view(2, 16, -1) - hf(input_ids=ids).logits).abs().max().item() <= 1e-4
    assert "bert.encoder.layer.1.output.dense.weight" in report["loaded"]
    cls, rep = import_model(tmp_path / "hf", kind="classifier", num_labels=3)
    assert "bert.pooler.dense.weight" in rep["not_loaded"] and "classifier.weight" in rep["not_loaded"]


def test_export_refuses_conv_and_bad_import(tmp_path: Path) -> None:
    conv = TinyBertForMaskedLM(
        model_cfg(layers=1, hidden_size=16, heads=2, ffn_size=32, vocab_size=120, conv_layers=1)
    )
    with pytest.raises(TinylmError, match="conv front-end"):
        export_model(conv, tmp_path / "x")
    (tmp_path / "notbert").mkdir()
    (tmp_path / "notbert" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="only BERT directories"):
        import_model(tmp_path / "notbert")
    with pytest.raises(CheckpointError, match="no config.json"):
        import_model(tmp_path)


def test_mean_pooling_head_round_trips_through_save_load_and_export(tmp_path: Path) -> None:
    from tinylm.model import stack_members
    from tinylm.model_dir import load_model, save_model

    cfg = model_cfg(
        layers=1, hidden_size=32, heads=2, ffn_size=64, vocab_size=300, max_length=16, pooling="mean"
    )
    torch.manual_seed(0)
    model = TinyBertForSequenceClassification(cfg, 3).eval()
    ids = torch.randint(104, 300, (2, 12))
    att = torch.ones_like(ids)
    att[1, 5:] = 0
    with torch.no_grad():
        logits = model(ids, att)
        h = model.bert(ids, att)  # the head reads the mean of the 5 real tokens of row 1, not the padding
        pooled = torch.tanh(model.bert.pooler.dense(h[1, :5].mean(0)))
        assert torch.allclose(model.classifier(pooled), logits[1], atol=1e-5)
        cls = TinyBertForSequenceClassification(model_cfg(**{**cfg.__dict__, "pooling": "cls"}), 3).eval()
        cls.load_state_dict(model.state_dict())
        assert not torch.allclose(cls(ids, att), logits, atol=1e-3)  # the heads differ on the same weights
        stacked = stack_members([model, model])(ids, att)
        assert torch.allclose(stacked[1], logits, atol=1e-5)  # committees stack mean-pooling members too
    save_model(model, tmp_path / "run")
    loaded = load_model(tmp_path / "run")[0].eval()
    assert loaded.cfg.pooling == "mean"
    with torch.no_grad():
        assert torch.equal(loaded(ids, att), logits)
    export_model(model, tmp_path / "hf", label_names=["a", "b", "c"])
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["tinylm_pooling"] == "mean"
    # in transformers: refused without trust_remote_code (never loaded as the [CLS] model), equal with it
    for where in (tmp_path / "run", tmp_path / "hf"):
        with pytest.raises(ValueError, match="trust_remote_code"):
            transformers.AutoModelForSequenceClassification.from_pretrained(where)
        hf = transformers.AutoModelForSequenceClassification.from_pretrained(where, trust_remote_code=True)
        assert type(hf).__name__ == "TinylmBertForSequenceClassification"
        with torch.no_grad():
            hf_logits = hf.eval()(input_ids=ids, attention_mask=att).logits
        assert (hf_logits - logits).abs().max() <= 1e-5
    back, _ = import_model(tmp_path / "hf", kind="classifier")
    back.eval()
    with torch.no_grad():
        assert back.cfg.pooling == "mean" and torch.allclose(back(ids, att), logits, atol=1e-6)


def test_import_keeps_the_pooler_and_export_invents_nothing(tmp_path: Path) -> None:
    """A transformers BertModel (pooler, no MLM head, e.g. a sentence encoder) imported and exported again:
    the pooler survives, the export is a BertModel (no random MLM head), tokenizer files travel along."""
    from tinylm.cli import main

    sizes = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    hcfg = transformers.BertConfig(vocab_size=120, max_position_embeddings=16, **sizes)
    torch.manual_seed(3)
    hf = transformers.BertModel(hcfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(vocab + [f"w{i}" for i in range(16)]) + "\n")
    assert main(["import", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    meta = json.loads((tmp_path / "ours" / "model.json").read_text())
    assert (
        meta["pooler"] is True and meta["mlm_head"].startswith("random") and meta["tokenizer"] == "vocab.txt"
    )
    assert (tmp_path / "ours" / "vocab.txt").is_file()
    # the tinylm directory says what it holds: an encoder (no invented MLM head in its weights)
    ours_config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert ours_config["architectures"] == ["BertModel"] and "untrained" in ours_config["tinylm_mlm_head"]
    with safe_open(str(tmp_path / "ours" / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if k.startswith("cls.")]  # noqa: SIM118 (a safetensors file, not a dict)
    encoder, info = transformers.AutoModel.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert type(encoder).__name__ == "BertModel" and not info["missing_keys"]
    _, mlm_info = transformers.AutoModelForMaskedLM.from_pretrained(
        tmp_path / "ours", output_loading_info=True
    )
    assert any(k.startswith("cls.predictions") for k in mlm_info["missing_keys"])  # transformers warns
    from tinylm.model_dir import load_model

    card = (tmp_path / "ours" / "README.md").read_text()
    assert "Imported from the transformers directory" in card and 'AutoModel.from_pretrained("DIR")' in card
    reloaded, _ = load_model(tmp_path / "ours")  # tinylm still loads it (the head: fresh, untrained)
    assert isinstance(reloaded, TinyBertForMaskedLM)
    assert main(["export", str(tmp_path / "ours"), str(tmp_path / "back")]) == 0
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and (tmp_path / "back" / "vocab.txt").is_file()
    back = transformers.AutoModel.from_pretrained(tmp_path / "back").eval()
    ids = torch.randint(104, 120, (2, 10))
    with torch.no_grad():
        a, b = hf(input_ids=ids), back(input_ids=ids)
    assert (a.last_hidden_state - b.last_hidden_state).abs().max() <= 1e-5
    assert (a.pooler_output - b.pooler_output).abs().max() <= 1e-5  # the pooler was kept


def _padded_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([20, 5, 12, 3, 17, 9])
    att = (torch.arange(20)[None] < lengths[:, None]).long()
    ids = torch.randint(5, vocab, (6, 20)) * att
    ids[:, 0] = 101
    return ids, att


def _step(
    model: torch.nn.Module, unpad: bool, ids: torch.Tensor, att: torch.Tensor, mlm: bool, bf16: bool = False
) -> tuple:
    """One training forward/backward with per-row randomness (dropout on), then an eval forward (under
    bf16 autocast with `bf16`, as `precision: bf16` trains)."""
    from tinylm import randomness

    model = copy.deepcopy(model)  # BatchNorm statistics move in training: each arm from the same state
    model.bert.unpad = unpad
    seen: list[int] = []
    model.bert.encoder.layer[0].intermediate.dense.register_forward_hook(
        lambda m, i, o: seen.append(i[0].shape[:-1].numel())
    )
    model.train()
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    with randomness.activate(randomness.rows_of(1, 3, range(len(ids)), 32)), cast:
        out = model(ids, att).float()
    # MLM: a loss on the real tokens' logits only (the trainer asks for masked real tokens' logits alone)
    real = att.reshape(-1).bool()
    loss = out[real].square().mean() if mlm else torch.nn.functional.cross_entropy(out, torch.arange(6) % 3)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        ev = model(ids, att).float()
    return out.detach(), grads, ev, seen[0]


@pytest.mark.parametrize(
    "kind,extra",
    [
        ("cls", {}),
        ("mean", {"pooling": "mean"}),
        ("conv", {"conv_layers": 2, "conv_channels": 4}),
        ("mlm", {}),
    ],
)
def test_packed_real_tokens_compute_what_the_padded_batch_does(
    kind: str, extra: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blocks' per-token work on the real tokens only (`Packed`) gives the padded computation's logits,
    gradients and eval outputs (same dropout masks), and really skips the padding (the feed-forward sees
    the 66 real rows and 6 padding ones up to the bucket of 8, not 6 × 20)."""
    from tinylm import model as model_module

    monkeypatch.setattr(model_module, "PACK_BUCKET", 8)
    torch.manual_seed(0)
    cfg = ModelConfig(
        layers=2, hidden_size=32, heads=2, ffn_size=64, max_length=32, vocab_size=300, dropout=0.1,
        attention_dropout=0.1, **extra,
    )  # fmt: skip
    mlm = kind == "mlm"
    model = TinyBertForMaskedLM(cfg) if mlm else TinyBertForSequenceClassification(cfg, 3)
    ids, att = _padded_batch(cfg.vocab_size)
    out0, g0, ev0, rows0 = _step(model, False, ids, att, mlm)
    out1, g1, ev1, rows1 = _step(model, True, ids, att, mlm)
    if mlm:  # padding positions have no defined logits; compare the real tokens'
        out0, out1, ev0, ev1 = (t[att.reshape(-1).bool()] for t in (out0, out1, ev0, ev1))
    assert (rows0, rows1) == (120, 72) and int(att.sum()) == 66
    torch.testing.assert_close(out1, out0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ev1, ev0, rtol=1e-5, atol=1e-6)
    assert set(g0) == set(g1)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-7, msg=name)


def test_packed_real_tokens_under_bf16_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under bf16 autocast (precision bf16) packing changes the matmuls' row counts, not their rows: the
    logits and gradients agree with the padded computation to bf16 rounding."""
    from tinylm import model as model_module

    monkeypatch.setattr(model_module, "PACK_BUCKET", 8)
    torch.manual_seed(0)
    cfg = ModelConfig(
        layers=2, hidden_size=32, heads=2, ffn_size=64, max_length=32, vocab_size=300, dropout=0.1,
        attention_dropout=0.1,
    )  # fmt: skip
    model = TinyBertForSequenceClassification(cfg, 3)
    ids, att = _padded_batch(cfg.vocab_size)
    out0, g0, ev0, _ = _step(model, False, ids, att, False, bf16=True)
    out1, g1, ev1, rows = _step(model, True, ids, att, False, bf16=True)
    assert rows == 72
    torch.testing.assert_close(out1, out0, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(ev1, ev0, rtol=2e-2, atol=2e-2)
    for name in g0:
        scale = g0[name].abs().max().item()
        assert (g1[name] - g0[name]).abs().max().item() <= 0.05 * scale + 1e-6, name


def test_packed_row_counts_come_in_buckets() -> None:
    """Packed row counts are multiples of PACK_BUCKET (padding positions fill up the last bucket), so that
    oneDNN caches a handful of matmul shapes, not one per batch; every real token is among the rows."""
    from tinylm.model import PACK_BUCKET, Packed

    for n in (3, 64, 65, 200):
        lengths = torch.tensor([n // 2, n - n // 2])
        att = (torch.arange(256)[None] < lengths[:, None]).long()
        p = Packed.of(att)
        assert len(p.idx) % PACK_BUCKET == 0 and len(p.idx) >= n
        assert set(att.reshape(-1).nonzero().squeeze(1).tolist()) <= set(p.idx.tolist())
        assert p.starts.tolist() == [0, n // 2]


def test_packing_applies_to_padded_batches_only() -> None:
    """As the README says: on CPU a batch whose real tokens are at most 90 % of its positions is packed, a
    fuller one is not (the feed-forward sees every position), and `model.bert.unpad = False` turns it off."""
    torch.manual_seed(0)
    cfg = ModelConfig(layers=1, hidden_size=32, heads=2, ffn_size=64, max_length=32, vocab_size=300)
    model = TinyBertForSequenceClassification(cfg, 3).eval()
    seen: list[int] = []
    model.bert.encoder.layer[0].intermediate.dense.register_forward_hook(
        lambda m, i, o: seen.append(i[0].shape[:-1].numel())
    )

    def rows(lengths: list[int], unpad: bool = True) -> int:
        model.bert.unpad = unpad
        att = (torch.arange(20)[None] < torch.tensor(lengths)[:, None]).long()
        with torch.no_grad():
            model(torch.randint(5, 300, (len(lengths), 20)) * att, att, cls_only=False)
        return seen[-1]

    assert rows([18] * 10) == 192  # 90 % real: packed, 180 real rows bucketed up to 192
    assert rows([19] * 10) == 200  # 95 % real: not packed
    assert rows([10] * 10) == 128  # 50 % real: 100 real rows, bucketed to 128
    assert rows([10] * 10, unpad=False) == 200


def test_explicit_attention_is_chosen_where_it_is_faster_and_only_there() -> None:
    """The rule `explicit_attention` states: explicit matmuls on CPU with dropout or in bf16, SDPA for
    fp32 on CPU without dropout."""
    from tinylm.model import explicit_attention

    fp32, bf16 = torch.zeros(3, 1, 2, 4, 8), torch.zeros(3, 1, 2, 4, 8, dtype=torch.bfloat16)
    assert not explicit_attention(fp32, dropping=False)
    assert explicit_attention(fp32, dropping=True)
    assert explicit_attention(bf16, dropping=False) and explicit_attention(bf16, dropping=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_explicit_attention_equals_sdpa_on_loss_and_every_gradient(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same MLM loss and gradients of every parameter whichever attention path runs, with a padded
    row (masked keys) and queries/keys large enough for peaked attention. Each gradient within a stated
    share of its own largest entry: fp32 1e-5 (summation order; measured ≤ 3e-6), bf16 8e-2 (SDPA keeps
    its softmax in fp32 internally, the explicit path rounds the probabilities to bf16 before p·v;
    measured ≤ 4.5e-2; a 15 % error in the score scale gives ≥ 0.15)."""
    from tinylm import model as model_module
    from tinylm.objectives import MLMObjective

    cfg = ModelConfig(layers=2, hidden_size=32, heads=2, ffn_size=64, vocab_size=500, max_length=24,
                      dropout=0.0, attention_dropout=0.0)  # fmt: skip
    ids = torch.randint(5, 500, (6, 24), generator=torch.Generator().manual_seed(1))
    ids[:, 0], ids[:, -1], ids[4, 15:] = 101, 102, 0
    batch = {"input_ids": ids, "attention": (ids != 0).long()}
    results, chosen = [], []
    for explicit in (False, True):
        monkeypatch.setattr(
            model_module, "explicit_attention", lambda qkv, d, e=explicit: chosen.append(e) or e
        )
        torch.manual_seed(0)
        model = TinyBertForMaskedLM(cfg)
        with torch.no_grad():  # queries and keys far from init's near-uniform attention
            for name, p in model.named_parameters():
                if name.endswith(("query.weight", "key.weight")):
                    p.normal_(0.0, 0.5)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss, _ = MLMObjective(cfg.vocab_size, seed=0).loss(model, batch)
        loss.backward()
        results.append((float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert chosen.count(False) == chosen.count(True) == cfg.layers  # each path ran in every layer
    (sdpa_loss, want), (loss, got) = results
    tol = 1e-5 if dtype == torch.float32 else 8e-2
    assert abs(loss - sdpa_loss) <= tol * abs(sdpa_loss) and set(got) == set(want)
    scale = max(float(g.abs().max()) for g in want.values())
    for name in want:
        err = float((got[name] - want[name]).abs().max())
        if name.endswith("key.bias"):  # softmax ignores a shift of every score: zero in exact arithmetic
            assert err <= tol * scale, name
        else:
            assert err <= tol * float(want[name].abs().max()), f"{name}: {err:.2e}"
