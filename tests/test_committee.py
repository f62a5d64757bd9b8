"""Soft committees: stacked inference equals member-by-member, rules, accuracy vs k, artifact, predict,
errors."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from test_finetune import QUIET, ft, model_settings
from tinylm.committee import Committee, accuracy_vs_size, combine, evaluate_committee
from tinylm.config import ModelConfig
from tinylm.errors import CheckpointError, TinylmError
from tinylm.finetune import finetune
from tinylm.model import TinyBertForSequenceClassification, stack_members


def random_member(cfg: ModelConfig, seed: int, labels: int = 5) -> TinyBertForSequenceClassification:
    torch.manual_seed(seed)
    m = TinyBertForSequenceClassification(cfg, labels)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return m.eval()


@pytest.mark.parametrize("conv", [0, 2])
def test_stacked_equals_one_by_one(conv: int) -> None:
    cfg = ModelConfig(
        layers=2,
        hidden_size=32,
        heads=4,
        ffn_size=64,
        vocab_size=300,
        max_length=16,
        conv_layers=conv,
        conv_kernel="3",
        conv_channels=4,
    )
    members = [random_member(cfg, s) for s in range(4)]
    ids = torch.randint(104, 300, (3, 12))
    att = torch.ones_like(ids)
    att[1, 9:] = 0
    with torch.no_grad():
        one = torch.stack([m(ids, att) for m in members]).softmax(-1)
        stacked = stack_members(members)(ids, att).softmax(-1)
    assert (one - stacked).abs().max().item() <= 1e-5


def test_mixed_architectures_group_and_match() -> None:
    a = ModelConfig(layers=1, hidden_size=32, heads=4, ffn_size=64, vocab_size=300, max_length=16)
    b = ModelConfig(layers=1, hidden_size=48, heads=3, ffn_size=96, vocab_size=300, max_length=16)
    members = [random_member(a, 0), random_member(b, 1), random_member(a, 2)]
    metas = [{"label_names": list("abcde"), "model": {"vocab_size": 300}} for _ in members]
    c = Committee(members, metas, ["m0", "m1", "m2"])
    assert c.groups == [[0, 2], [1]]
    ids = torch.randint(104, 300, (2, 10))
    seq = c.member_logits(ids, None, "sequential")
    st = c.member_logits(ids, None, "stacked")
    par = c.member_logits(ids, None, "stacked", workers=2)
    assert (seq.softmax(-1) - st.softmax(-1)).abs().max() <= 1e-5 and torch.allclose(st, par)
    assert torch.allclose(c.member_logits(ids, None), st)  # auto: stacked for small batches
    assert "batch 1: stacked (auto)" in c.execution_plan(
        1
    ) and "batch 32: sequential (auto)" in c.execution_plan(32)


def test_rules_and_curve() -> None:
    logits = np.log(
        np.array(
            [
                [[0.6, 0.4], [0.2, 0.8], [0.9, 0.1]],
                [[0.3, 0.7], [0.4, 0.6], [0.45, 0.55]],
                [[0.35, 0.65], [0.3, 0.7], [0.4, 0.6]],
            ]
        )
    )
    assert combine(logits, "mean_prob").tolist() == [1, 1, 0]
    assert combine(logits, "vote").tolist() == [1, 1, 1]
    labels = np.array([1, 1, 0])
    curve = accuracy_vs_size(logits, labels, "mean_prob", orderings=10, seed=0)
    assert curve["first_k"][0] == pytest.approx(2 / 3) and curve["first_k"][-1] == 1.0
    assert len(curve["mean"]) == 3 and curve["std"][-1] == 0.0  # all members: ordering does not matter


@pytest.fixture
def members(data_dir: Path, tmp_path: Path) -> list[str]:
    runs = []
    for seed in range(3):
        built = ft(data_dir, tmp_path, **model_settings(data_dir), seed=seed, epochs=1, name=f"m{seed}")
        runs.append(str(finetune(built, **QUIET).path))
    return runs


def test_committee_cli_artifact_and_predict(
    members: list[str], tmp_path: Path, data_dir: Path, monkeypatch
) -> None:
    from tinylm.cli import main

    monkeypatch.setenv("TINYLM_DATA_DIR", str(data_dir))
    out = tmp_path / "com"
    assert (
        main(
            [
                "committee",
                "--members",
                *members[:2],
                "--task",
                "agnews",
                "--reference",
                members[2],
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res["curve"]["k"] == [1, 2] and res["reference"]["run"] == members[2]
    assert (out / "accuracy_vs_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((out / "committee" / "manifest.json").read_text())
    assert [m["source"] for m in manifest["members"]] == members[:2]
    loaded = Committee.load(out / "committee")
    assert len(loaded.members) == 2 and loaded.label_names[0] == "World"
    texts = tmp_path / "texts.txt"
    texts.write_text("the city news report\nstock market price\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinylm.cli",
            "predict",
            "--model",
            str(out / "committee"),
            "--input",
            str(texts),
        ],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "TINYLM_DATA_DIR": str(data_dir)},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and all(len(line.split("\t")) == 3 for line in lines)
    assert lines[0].split("\t")[1] in ["World", "Sports", "Business", "Sci/Tech"]
    single = subprocess.run(
        [sys.executable, "-m", "tinylm.cli", "predict", "--model", members[0]],
        input="hello world\n",
        capture_output=True,
        text=True,
    )
    assert single.returncode == 0 and len(single.stdout.strip().splitlines()) == 1
    (tmp_path / "empty.txt").write_text("\n\n")
    assert main(["predict", "--model", members[0], "--input", str(tmp_path / "empty.txt")]) == 2
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe bad")
    assert main(["predict", "--model", members[0], "--input", str(tmp_path / "bad.txt")]) == 2
    assert (
        main(["committee", "--members", *members[:2], "--out", str(out)]) == 2
    )  # exists: nothing overwritten


def test_committee_bad_input(members: list[str], tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(TinylmError, match="empty member list"):
        evaluate_committee([], None, None, "mean_prob", 5, 0)
    with pytest.raises(CheckpointError, match="no such run directory"):
        Committee.from_runs([members[0], str(tmp_path / "missing")])
    other = finetune(
        ft(
            data_dir,
            tmp_path,
            **model_settings(data_dir),
            task="dbpedia",
            samples_per_label_train=2,
            samples_per_label_test=1,
            epochs=1,
            name="db",
        ),
        **QUIET,
    )
    with pytest.raises(TinylmError, match=rf"member {other.path} has labels"):
        Committee.from_runs([members[0], str(other.path)])
    with pytest.raises(TinylmError, match="was fine-tuned on agnews"):
        evaluate_committee(members[:2], "fewrel", None, "mean_prob", 5, 0)


class PreLNLayer(torch.nn.Module):
    """A model variant the committee code knows nothing about: a pre-LN block built from the model's parts."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from tinylm import model

        self.ln1, self.ln2 = model.LayerNorm(cfg.hidden_size), model.LayerNorm(cfg.hidden_size)
        self.attn = model.SelfAttention(cfg)
        self.proj = model.Linear(cfg.hidden_size, cfg.hidden_size)
        self.ff1, self.ff2 = (
            model.Linear(cfg.hidden_size, cfg.ffn_size),
            model.Linear(cfg.ffn_size, cfg.hidden_size),
        )

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, cls_only: bool = False, packed: object = None
    ) -> torch.Tensor:
        first = x[..., :1, :] if packed is None else packed.first(x)  # type: ignore[attr-defined]
        x = (first if cls_only else x) + self.proj(self.attn(self.ln1(x), mask, cls_only, packed))
        return x + self.ff2(torch.nn.functional.gelu(self.ff1(self.ln2(x))))


@pytest.mark.parametrize("conv", [0, 2])
def test_a_model_variant_stacks_without_committee_changes(conv: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from tinylm import model

    monkeypatch.setattr(model, "Layer", PreLNLayer)
    cfg = ModelConfig(
        layers=2,
        hidden_size=32,
        heads=4,
        ffn_size=64,
        vocab_size=300,
        max_length=16,
        conv_layers=conv,
        conv_channels=4,
    )
    members = [random_member(cfg, s) for s in range(3)]
    assert isinstance(members[0].bert.encoder.layer[0], PreLNLayer)
    ids = torch.randint(104, 300, (3, 12))
    att = torch.ones_like(ids)
    att[2, 7:] = 0
    with torch.no_grad():
        one = torch.stack([m(ids, att) for m in members])
        stacked = stack_members(members)(ids, att)
    assert stacked.shape == one.shape and (one - stacked).abs().max().item() <= 1e-5
    metas = [{"label_names": list("abcde"), "model": {"vocab_size": 300}} for _ in members]
    c = Committee(members, metas, ["a", "b", "c"])
    seq, st = c.member_logits(ids, att, "sequential"), c.member_logits(ids, att, "stacked")
    assert (seq - st).abs().max().item() <= 1e-5


def test_stacking_refuses_mixed_architectures_and_leaves_members_alone() -> None:
    a = ModelConfig(layers=1, hidden_size=32, heads=4, ffn_size=64, vocab_size=300, max_length=16)
    b = ModelConfig(layers=1, hidden_size=48, heads=3, ffn_size=96, vocab_size=300, max_length=16)
    with pytest.raises(ValueError, match="member 1 has another architecture"):
        stack_members([random_member(a, 0), random_member(b, 1)])
    m = random_member(a, 0)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    stack_members([m, random_member(a, 1)])
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_copied_committee_predicts_without_data_dir_and_lines_align(
    members: list[str], tmp_path: Path, data_dir: Path
) -> None:
    """A committee directory carries its tokenizer: copied elsewhere, it predicts with no data directory;
    one output line per input line (blank lines included), JSON records and top-k like transformers."""
    import os
    import shutil

    com = Committee.from_runs(members[:2]).save(tmp_path / "com")
    moved = tmp_path / "elsewhere" / "committee"
    shutil.copytree(com, moved)
    shutil.rmtree(com)
    env = {k: v for k, v in os.environ.items() if k != "TINYLM_DATA_DIR"}
    texts = "the city news report\n\nstock market price\n   \nriver village\n"

    def run(*extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "tinylm.cli", "predict", "--model", str(moved), *extra]
        return subprocess.run(cmd, input=texts, capture_output=True, text=True, env=env)

    plain = run()
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.split("\n")[:-1]
    assert (
        len(lines) == 5
        and lines[1] == lines[3] == ""
        and all(len(lines[i].split("\t")) == 3 for i in (0, 2, 4))
    )
    recs = [json.loads(line) for line in run("--json").stdout.splitlines()]
    assert recs[1] is None and recs[3] is None and set(recs[0]) == {"label", "score"}
    assert (
        recs[0]["label"] == lines[0].split("\t")[1]
        and abs(recs[0]["score"] - float(lines[0].split("\t")[2])) < 1e-4
    )
    top = [json.loads(line) for line in run("--json", "--top_k", "all").stdout.splitlines()]
    assert len(top[0]) == 4 and top[0][0] == recs[0] and abs(sum(r["score"] for r in top[0]) - 1) < 1e-4
    assert [r["score"] for r in top[0]] == sorted((r["score"] for r in top[0]), reverse=True)
    assert len(json.loads(run("--json", "--top_k", "2").stdout.splitlines()[2])) == 2
    bad = run("--batch_size", "0")
    assert (
        bad.returncode == 2 and "batch_size: must be positive" in bad.stderr and "Traceback" not in bad.stderr
    )
    spaces = texts + "\u00a0\u2003\n"  # a line of a no-break space and an em space: blank by the stated rule
    cmd = [sys.executable, "-m", "tinylm.cli", "predict", "--model", str(moved), "--json"]
    default = subprocess.run(cmd, input=spaces, capture_output=True, text=True, env=env)
    assert [line == "null" for line in default.stdout.splitlines()] == [False, True, False, True, False, True]
    asked = subprocess.run(
        [*cmd, "--blank", "predict"], input=spaces, capture_output=True, text=True, env=env
    )
    recs = [json.loads(line) for line in asked.stdout.splitlines()]
    assert len(recs) == 6 and all(set(r) == {"label", "score"} for r in recs)  # as transformers' pipeline


def test_finetuned_run_loads_in_transformers_with_the_same_probabilities(
    members: list[str], tmp_path: Path
) -> None:
    """A fine-tuned run directory is a transformers model directory as is (config.json with model_type and
    id2label, tokenizer files for AutoTokenizer); its probabilities equal `tinylm predict`'s."""
    transformers = pytest.importorskip("transformers")
    run = Path(members[0])
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(run).eval()
    tok = transformers.AutoTokenizer.from_pretrained(run)
    assert hf.config.id2label[0] == "World" and hf.config.model_type == "bert"
    texts = ["the city news report", "stock market price rose"]
    batch = tok(texts, padding=True, truncation=True, max_length=24, return_tensors="pt")
    with torch.no_grad():
        theirs = hf(**batch).logits.softmax(-1).numpy()
    proc = subprocess.run(
        [sys.executable, "-m", "tinylm.cli", "predict", "--model", str(run), "--json", "--top_k", "all"],
        input="\n".join(texts) + "\n",
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    for row, recs in zip(theirs, (json.loads(line) for line in proc.stdout.splitlines()), strict=True):
        ours = {r["label"]: r["score"] for r in recs}
        assert max(abs(ours[hf.config.id2label[j]] - float(p)) for j, p in enumerate(row)) <= 1e-5


def test_onnx_export_of_a_model_and_a_committee_matches_torch(
    members: list[str], tmp_path: Path, data_dir: Path
) -> None:
    """`tinylm export --format onnx`: a fine-tuned model and a committee (two architectures, all members in
    one graph) run in onnxruntime with logits within 1e-4 of torch, and `predict` on the export directory
    gives torch's probabilities."""
    import os
    import shutil

    import onnxruntime as ort
    import transformers

    from tinylm.cli import main
    from tinylm.model_dir import load_model

    other = finetune(
        ft(
            data_dir,
            tmp_path,
            **model_settings(data_dir) | {"hidden_size": 24, "heads": 3},
            epochs=1,
            name="w",
        ),
        **QUIET,
    )
    com = Committee.from_runs([*members[:2], str(other.path)])
    com_dir = com.save(tmp_path / "com")
    registry_log, noise = logging.getLogger("torch.onnx._internal.exporter._registration"), []
    listener = logging.Handler()
    listener.emit = noise.append  # type: ignore[method-assign]
    registry_log.addHandler(listener)
    try:
        assert main(["export", members[0], str(tmp_path / "one.onnx"), "--format", "onnx"]) == 0
        assert main(["export", str(com_dir), str(tmp_path / "com.onnx"), "--format", "onnx"]) == 0
    finally:
        registry_log.removeHandler(listener)
    assert not noise  # "torchvision is not installed. Skipping torchvision::nms" ×4 per export: silenced
    meta = json.loads((tmp_path / "com.onnx" / "onnx.json").read_text())
    assert meta["kind"] == "committee" and meta["members"] == 3 and len(meta["architectures"]) == 2
    assert meta["check"]["max_abs_logit_diff_vs_torch"] <= 1e-4
    ids = torch.randint(104, 200, (4, 15))
    att = torch.ones_like(ids)
    att[2, 9:] = 0
    session = ort.InferenceSession(str(tmp_path / "com.onnx" / "model.onnx"))
    feed = {"input_ids": ids.numpy(), "attention_mask": att.numpy(), "token_type_ids": np.zeros_like(ids)}
    member_logits, probs = session.run(None, feed)
    want = com.member_logits(ids, att, "sequential")
    assert np.abs(member_logits - want.numpy()).max() <= 1e-4
    assert np.abs(probs - want.softmax(-1).mean(0).numpy()).max() <= 1e-5
    # the single model as ONNX users load it: config.json (model_type, labels), the tokenizer's full
    # output (token_type_ids included) fed as is, weights inside model.onnx (the file alone suffices)
    one = tmp_path / "one.onnx"
    config = json.loads((one / "config.json").read_text())
    labels = json.loads((one / "onnx.json").read_text())["label_names"]
    assert config["model_type"] == "bert" and config["id2label"] == {str(i): n for i, n in enumerate(labels)}
    assert sorted(p.name for p in one.iterdir() if "onnx" in p.name) == ["model.onnx", "onnx.json"]
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(one / "model.onnx", alone / "model.onnx")
    tok = transformers.AutoTokenizer.from_pretrained(one)
    enc = tok(["the city news report", "stock market price rose"], padding=True, return_tensors="np")
    assert set(enc) == {"input_ids", "attention_mask", "token_type_ids"}
    (logits,) = ort.InferenceSession(str(alone / "model.onnx")).run(None, dict(enc))
    model, _ = load_model(Path(members[0]))
    with torch.no_grad():
        want_one = model.eval()(torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"]))
    assert np.abs(logits - want_one.numpy()).max() <= 1e-4
    env = {k: v for k, v in os.environ.items() if k != "TINYLM_DATA_DIR"}
    texts = "the city news report\nstock market price\n"
    runs = {
        name: subprocess.run(
            [sys.executable, "-m", "tinylm.cli", "predict", "--model", str(path), "--json", "--top_k", "all"],
            input=texts,
            capture_output=True,
            text=True,
            env=env,
        )
        for name, path in (("torch", com_dir), ("onnx", tmp_path / "com.onnx"))
    }
    assert all(r.returncode == 0 for r in runs.values()), {k: r.stderr for k, r in runs.items()}
    a, b = ([json.loads(line) for line in runs[k].stdout.splitlines()] for k in ("torch", "onnx"))
    for ra, rb in zip(a, b, strict=True):
        sa, sb = ({r["label"]: r["score"] for r in recs} for recs in (ra, rb))
        assert sa.keys() == sb.keys() and max(abs(sa[k] - sb[k]) for k in sa) <= 1e-5


def test_export_then_import_of_a_classifier_round_trips(
    members: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`export` of a fine-tuned run, then `import` of that directory: a classifier again, with its labels,
    pooling and weights; `predict` gives the same probabilities."""
    from tinylm.classify import classify
    from tinylm.cli import main
    from tinylm.model_dir import read_model_meta

    run = Path(members[0])
    assert main(["export", str(run), str(tmp_path / "hf")]) == 0
    assert main(["import", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    out = capsys.readouterr().out
    assert "(classifier)" in out and "classifier loaded" in out and "0 ignored" in out
    meta, orig = read_model_meta(tmp_path / "back"), read_model_meta(run)
    assert meta["kind"] == "classifier" and meta["label_names"] == orig["label_names"]
    assert meta["model"]["pooling"] == orig["model"]["pooling"]
    texts = ["the city council met on monday", "shares of the company rose", "a new species of frog"]
    a, b = classify(run, texts, 8), classify(tmp_path / "back", texts, 8)
    assert a.label_names == b.label_names and np.abs(a.probs - b.probs).max() <= 1e-5
