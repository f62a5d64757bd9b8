"""The training loop and MLM pre-training: masking, schedule, resume equality, corrupt checkpoints, NaN."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tinylm.config import ConfigError, TrainConfig, read_yaml
from tinylm.data.corpus import load_wiki_corpus
from tinylm.data.sources import resolve_source
from tinylm.data.tokenize import load_tokenizer
from tinylm.data.tokens import TokenData
from tinylm.errors import CheckpointError, TinylmError, TrainingDiverged
from tinylm.model_dir import load_model
from tinylm.objectives import MLMObjective, Objective
from tinylm.pretrain import pretrain
from tinylm.runs import RunDir
from tinylm.settings import PretrainSettings
from tinylm.train import Trainer, lr_lambda


def tiny(data_dir: Path, out: Path, **kw) -> dict:
    vocab = load_tokenizer(resolve_source(data_dir)).vocab_size
    settings = dict(
        layers=1,
        hidden_size=16,
        heads=2,
        ffn_size=32,
        max_length=24,
        vocab_size=vocab,
        num_articles=40,
        eval_articles=8,
        epochs=2,
        batch_size=8,
        lr=1e-3,
        warmup_steps=2,
        data_dir=str(data_dir),
        cache_dir=str(out / "cache"),
        out=str(out / "runs"),
        name="r",
        progress=False,
        log_every=1,
        checkpoint_every=3,
    )
    return PretrainSettings.build(settings | kw)


def test_masking_statistics() -> None:
    obj = MLMObjective(vocab_size=1000, seed=0)
    ids = torch.randint(200, 1000, (64, 128))
    ids[:, 0], ids[:, -1], ids[:, 100:120] = 101, 102, 0  # CLS, SEP, padding
    inputs, pos, targets = obj.mask(ids, torch.Generator().manual_seed(1))
    flat_in, flat_ids = inputs.view(-1), ids.view(-1)
    assert not np.isin(flat_ids[pos].numpy(), [0, 101, 102]).any()  # specials never selected
    maskable = int(((ids != 0) & (ids != 101) & (ids != 102)).sum())
    assert abs(len(pos) / maskable - 0.15) < 0.01
    share_mask = float((flat_in[pos] == 103).float().mean())
    share_same = float((flat_in[pos] == flat_ids[pos]).float().mean())
    assert abs(share_mask - 0.8) < 0.03 and abs(share_same - 0.1 - 0.1 / 1000) < 0.02
    unselected = torch.ones_like(flat_ids, dtype=torch.bool)
    unselected[pos] = False
    assert torch.equal(flat_in[unselected], flat_ids[unselected])
    assert torch.equal(targets, flat_ids[pos])


def test_lr_schedule_warmup_decay_and_epoch_unit() -> None:
    f = lr_lambda(TrainConfig(warmup_steps=2), total_steps=10, steps_per_epoch=5)
    assert [round(f(s), 3) for s in (0, 1, 2, 6, 10)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    g = lr_lambda(TrainConfig(schedule_unit="epoch"), total_steps=10, steps_per_epoch=5)
    assert [g(s) for s in (0, 4, 5, 9)] == [
        1.0,
        1.0,
        0.5,
        0.5,
    ]  # constant within an epoch, as the paper's code


def test_pretrain_run_directory_and_loss_falls(data_dir: Path, tmp_path: Path) -> None:
    run = pretrain(tiny(data_dir, tmp_path, epochs=6, checkpoint_every=None), log=lambda *_: None)
    for name in (
        "config.yaml",
        "data.json",
        "metrics.jsonl",
        "model.safetensors",
        "model.json",
        "results.json",
    ):
        assert (run.path / name).is_file(), name
    cfg = yaml.safe_load((run.path / "config.yaml").read_text())
    assert cfg["hidden_size"] == 16 and cfg["num_articles"] == 40
    losses = [m["loss"] for m in run.read_metrics() if "loss" in m]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    evals = [m["eval"] for m in run.read_metrics() if "eval" in m]
    assert len(evals) == 6 and 0 <= evals[-1]["mlm_accuracy"] <= 1
    # the recorded held-out loss is the saved model's: evaluating it afresh gives the same number (a
    # stale Q/K/V cache once froze attention at the first evaluation and inflated every later one)
    model, _ = load_model(run.path)
    corpus = load_wiki_corpus(
        resolve_source(data_dir), load_tokenizer(resolve_source(data_dir)), 40, 42, 24, 8, tmp_path / "cache"
    )
    fresh = MLMObjective(model.cfg.vocab_size).evaluate(
        model, TokenData(corpus.eval.ids, corpus.eval.lengths), 64, torch.device("cpu"), cfg["precision"]
    )
    assert fresh["mlm_loss"] == pytest.approx(evals[-1]["mlm_loss"], abs=2e-5)  # stale: off by 2.6e-4
    again = pretrain(tiny(data_dir, tmp_path, epochs=6, checkpoint_every=None), log=lambda *_: None)
    assert again.path == run.path  # a finished run is reused, not retrained


def test_a_run_made_before_a_setting_existed_resumes_at_its_default(tmp_path: Path) -> None:
    """A setting added later (`runs.HASHED_WHEN_CHANGED`) is absent from an older run's config.yaml: resuming
    with it at its default continues the run (same name), with another value is refused."""
    from tinylm.runs import HASHED_WHEN_CHANGED, run_name

    new = {"lr": 1e-3, "attention_window_start": None, "attention_window_share": 0.25}
    assert HASHED_WHEN_CHANGED["attention_window_share"] == 0.25
    old = {"lr": 1e-3}
    assert run_name("pretrain", old | {"layers": 1, "hidden_size": 8}) == run_name(
        "pretrain", new | {"layers": 1, "hidden_size": 8}
    )
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    (run.path / "config.yaml").write_text(yaml.safe_dump(old))
    (run.path / "metrics.jsonl").write_text('{"step": 1}\n')  # something was trained
    run.prepare(new, resume=True)
    assert yaml.safe_load((run.path / "config.yaml").read_text()) == new
    (run.path / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(TinylmError, match=r"attention_window_share: 0.25 -> 0.5"):
        run.prepare(new | {"attention_window_share": 0.5}, resume=True)


def test_resume_gives_identical_weights(data_dir: Path, tmp_path: Path) -> None:
    full = pretrain(tiny(data_dir, tmp_path / "a", grad_accum=2), log=lambda *_: None)

    def interrupt(p):
        if p.step == 7:
            raise KeyboardInterrupt
        time.sleep(0.6)  # steps 1-5 take >= 3 s before the step-6 checkpoint: kept by the resumed run

    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny(data_dir, tmp_path / "b", grad_accum=2), log=lambda *_: None, on_step=interrupt)
    run_b = RunDir(tmp_path / "b" / "runs" / "r")
    assert not run_b.is_finished() and (run_b.checkpoints / "step-00000006").is_dir()
    with pytest.raises(TinylmError, match="already exists; pass --resume"):
        pretrain(tiny(data_dir, tmp_path / "b", grad_accum=2), log=lambda *_: None)
    with pytest.raises(TinylmError, match="settings differ"):
        pretrain(tiny(data_dir, tmp_path / "b", grad_accum=2, lr=5e-3, resume=True), log=lambda *_: None)
    kept = torch.load(run_b.checkpoints / "step-00000006" / "state.pt", weights_only=False)["progress"]
    t0 = time.perf_counter()
    resumed = pretrain(tiny(data_dir, tmp_path / "b", grad_accum=2, resume=True), log=lambda *_: None)
    resume_wall = time.perf_counter() - t0
    a, b = load_file(full.path / "model.safetensors"), load_file(resumed.path / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [m["step"] for m in resumed.read_metrics() if "loss" in m]
    assert steps == sorted(set(steps))  # no duplicated metric lines after resume
    # train_seconds covers the segment before the kill too: more than the resuming call took in all
    res = json.loads((resumed.path / "results.json").read_text())
    seconds = res["train_seconds"]
    assert seconds > resume_wall and seconds >= 3.0, (seconds, resume_wall)
    # and so do its CPU time and the evaluations' share of the wall time (the sleeps above are wall only)
    # (results.json rounds to 0.01 s)
    assert 0 < kept["cpu_seconds"] < res["cpu_seconds"] + 0.005 and res["cpu_seconds"] < seconds, (kept, res)
    assert 0 < kept["eval_seconds"] <= res["eval_seconds"] + 0.005 and res["eval_seconds"] < seconds, (
        kept,
        res,
    )


def test_corrupt_checkpoint_is_an_error_not_a_restart(data_dir: Path, tmp_path: Path) -> None:
    def interrupt(p):
        if p.step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny(data_dir, tmp_path), log=lambda *_: None, on_step=interrupt)
    ckpt = tmp_path / "runs" / "r" / "checkpoints" / "step-00000003" / "model.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(
        CheckpointError, match=r"step-00000003/model.safetensors: checkpoint file is truncated or corrupt"
    ):
        pretrain(tiny(data_dir, tmp_path, resume=True), log=lambda *_: None)


class NaNAfter(Objective):
    def __init__(self, step: int):
        self.calls, self.step = 0, step

    def loss(self, model, batch):
        self.calls += 1
        out = model(batch["input_ids"], batch["attention"]).float().mean()
        return out * (float("nan") if self.calls >= self.step else 1.0), {"correct": 0, "count": 1}


def test_nan_loss_stops_with_the_step(tmp_path: Path) -> None:
    from tinylm.config import ModelConfig
    from tinylm.model import TinyBertForMaskedLM

    model = TinyBertForMaskedLM(
        ModelConfig(layers=1, hidden_size=8, heads=1, ffn_size=8, vocab_size=120, max_length=8)
    )
    data = TokenData(np.full((16, 8), 110, dtype=np.uint16), np.full(16, 8, dtype=np.int32))
    run = RunDir(tmp_path / "nan")
    run.prepare({}, resume=False)
    trainer = Trainer(model, NaNAfter(3), data, TrainConfig(batch_size=4, epochs=2, progress=False), run)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 3 \(epoch 0, batch 2\)"):
        trainer.fit()


def test_yaml_keys_are_cli_flags_and_all_problems_reported(tmp_path: Path) -> None:
    from tinylm.cli import build_parser

    shipped = Path(__file__).resolve().parents[1] / "src" / "tinylm" / "configs" / "paper-pretrain.yaml"
    keys = read_yaml(shipped)
    flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["pretrain"]._actions}
    assert set(keys) <= flags
    built = PretrainSettings.build(keys)
    assert built.model.layers == 6 and built.train.epochs == 50 and built.train.lr == 5e-5
    bad = tmp_path / "bad.yaml"
    bad.write_text("hidden_size: 100\nheads: 3\nbatch_size: -2\nlr: fast\nepoch: 3\n")
    with pytest.raises(ConfigError) as e:
        PretrainSettings.build(read_yaml(bad))
    text = str(e.value)
    for part in (
        "heads: 3 does not divide",
        "batch_size: must be positive",
        "lr: expected a number",
        "epoch: unknown setting (did you mean epochs?)",
    ):
        assert part in text


def test_pretrain_on_overlap_selected_corpus(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import json

    from tinylm import registry

    with pytest.raises(ConfigError, match="selection_task: required"):
        tiny(data_dir, tmp_path, selection="low")
    # the fixture's AG News has 10 training rows per label; the paper's 1000 would not fit
    small = dataclasses.replace(registry.TASKS["agnews"], train_per_label=5, test_per_label=3)
    monkeypatch.setitem(registry.TASKS, "agnews", small)
    settings = dict(
        selection="high", selection_task="agnews", selection_pool=50, num_articles=10, max_length=12
    )
    run = pretrain(tiny(data_dir, tmp_path, epochs=1, checkpoint_every=None, **settings), log=lambda *_: None)
    data = json.loads((run.path / "data.json").read_text())
    assert data["selection"]["direction"] == "high" and data["num_articles"] == 10
    assert data["selection"]["achieved_overlap_train"]["type_coverage"] > 0


def test_recipe_sweep_records_curves_against_tokens_and_time(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_finetune import model_settings
    from tinylm.bench import sweep as bench_sweep

    small = {k: v for k, v in model_settings(data_dir).items() if k != "data_dir"} | {"batch_size": 4}
    monkeypatch.setattr(bench_sweep, "BASE", bench_sweep.BASE | small | {"model": None})
    monkeypatch.setenv("TINYLM_CACHE_DIR", str(tmp_path / "cache"))
    r = bench_sweep.bench_sweep(["base", "packing"], 20, 1500, 3, str(data_dir), eval_articles=5)
    assert [x["name"] for x in r["rows"]] == ["base", "packing"]
    for x in r["rows"]:
        assert x["tokens"] >= 1500 and x["curve"] and x["unigram_loss"] > 0 and x["tokens_per_s"] > 0
        assert [p["tokens"] for p in x["curve"]] == sorted(p["tokens"] for p in x["curve"])
        # tokens/s counts the training steps only: the run's evaluation seconds are taken out
        assert 0 < x["eval_seconds"] < x["train_seconds"]
        step_seconds = x["train_seconds"] - x["eval_seconds"]
        assert x["tokens_per_s"] == pytest.approx(x["tokens"] / step_seconds, rel=1e-3)
    assert not r["rows"][0]["settings"]["packing"] and r["rows"][1]["settings"]["packing"]
    table = bench_sweep.format_sweep(r)
    assert table.count("\n| ") == 2 and "below unigram" in table
    bench_sweep.plot_sweep(r, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # two lanes run side by side merge into one table; other CPUs or other files are refused by name
    lanes = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, row in zip(lanes, r["rows"], strict=True):
        path.write_text(json.dumps(r | {"rows": [row]}))
    merged = bench_sweep.merge_sweeps(lanes)
    assert [x["name"] for x in merged["rows"]] == ["base", "packing"] and merged["machine"] == r["machine"]
    lanes[1].write_text(json.dumps(r | {"machine": {"cpu": "another CPU"}}))
    with pytest.raises(TinylmError, match="different CPUs"):
        bench_sweep.merge_sweeps(lanes)
    lanes[1].write_text("[1, 2]")
    with pytest.raises(TinylmError, match=r"b\.json: expected a JSON object"):
        bench_sweep.merge_sweeps(lanes)


def test_snapshots_at_token_counts_survive_resume(data_dir: Path, tmp_path: Path) -> None:
    counts = "0,300,700"
    full = pretrain(tiny(data_dir, tmp_path / "a", snapshot_tokens=counts), log=lambda *_: None)

    def interrupt(p):
        if p.step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(
            tiny(data_dir, tmp_path / "b", snapshot_tokens=counts), log=lambda *_: None, on_step=interrupt
        )
    resumed = pretrain(
        tiny(data_dir, tmp_path / "b", snapshot_tokens=counts, resume=True), log=lambda *_: None
    )
    rows = json.loads((full.path / "results.json").read_text())["snapshots"]
    assert [r["target_tokens"] for r in rows] == [0, 300, 700] and rows[0]["tokens"] == rows[0]["step"] == 0
    assert all(r["tokens"] >= r["target_tokens"] for r in rows) and rows[1]["tokens"] < rows[2]["tokens"]
    assert rows[0]["mlm_loss"] > rows[2]["mlm_loss"] and all(r["unigram_loss"] > 0 for r in rows)
    assert (
        json.loads((resumed.path / "results.json").read_text())["snapshots"] == rows
    )  # same steps, same held-out numbers
    for n in (0, 300, 700):
        a = load_file(full.path / "snapshots" / f"tokens-{n}" / "model.safetensors")
        b = load_file(resumed.path / "snapshots" / f"tokens-{n}" / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), n
    a, b = load_file(full.path / "model.safetensors"), load_file(resumed.path / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # snapshots do not change the training trajectory
    with pytest.raises(ConfigError, match="snapshot_tokens: expected comma-separated"):
        tiny(data_dir, tmp_path / "c", snapshot_tokens="0,1e6")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_entropy_and_hits_equal_the_plain_path(dtype: torch.dtype) -> None:
    """The fused loss (sum) and its hit count equal F.cross_entropy and an argmax, with the same gradient;
    bf16 logits are cast to fp32 first, as training does."""
    from tinylm.objectives import cross_entropy_and_hits

    g = torch.Generator().manual_seed(0)
    raw = (torch.randn(37, 1000, generator=g) * 4).to(dtype)
    targets = torch.randint(0, 1000, (37,), generator=g)
    targets[:5] = raw[:5].float().argmax(-1)  # some hits
    a = raw.float().clone().requires_grad_(True)
    b = raw.float().clone().requires_grad_(True)
    loss, hits = cross_entropy_and_hits(a, targets)
    ref = torch.nn.functional.cross_entropy(b, targets, reduction="sum")
    assert torch.allclose(loss, ref, rtol=1e-6, atol=1e-4)
    assert int(hits) == int((b.argmax(-1) == targets).sum()) >= 5
    (loss * 0.5).backward()
    (ref * 0.5).backward()
    assert a.grad is not None and b.grad is not None and torch.allclose(a.grad, b.grad, atol=1e-6)
    empty, none = cross_entropy_and_hits(
        torch.zeros(0, 10, requires_grad=True), torch.zeros(0, dtype=torch.long)
    )
    assert float(empty) == 0.0 and int(none) == 0  # a micro-batch whose rows drew no target


def test_time_to_gate_bench_finds_the_crossing_in_parallel_lanes(data_dir: Path, tmp_path: Path) -> None:
    """Two recipes in two one-thread lanes on a tiny model: each crosses the gate (here loose: within 1 nat
    of the unigram baseline), the table and the JSON have the promised fields, ratios to the baseline."""
    from test_finetune import model_settings
    from tinylm.bench import time_to_gate as ttg

    base = model_settings(data_dir) | {"batch_size": 8, "lr": 3e-3, "warmup_steps": 5, "precision": "fp32"}
    common = {
        "num_articles": 40,
        "eval_articles": 8,
        "data_dir": str(data_dir),
        "cache_dir": str(tmp_path / "c"),
    }
    r = ttg.bench_time_to_gate(["batch 16"], -1.0, 40_000, 5, 2, base=base, common=common)
    assert [x["recipe"] for x in r["lanes"]] == ["tiny-pretrain-v1", "batch 16"]
    assert r["lanes"][0]["baseline"] and not r["lanes"][1]["baseline"] and r["gate_nats"] == -1.0
    keys = {"recipe", "baseline", "tokens_per_s", "steps_to_gate", "tokens_to_gate", "seconds_to_gate"}
    for x in r["lanes"]:
        assert keys | {"final_loss", "unigram_loss"} <= set(x)
        assert x["steps_to_gate"] is not None and x["tokens_to_gate"] > 0 and x["seconds_to_gate"] > 0
        assert x["unigram_loss"] - x["final_loss"] >= -1.0  # stopped at the crossing
        assert x["curve"][-1]["step"] == x["steps_to_gate"]  # the lane stopped at the gate
    assert r["lanes"][0]["seconds_to_gate_vs_baseline"] == 1.0
    assert r["lanes"][1]["settings"]["batch_size"] == 16
    table = ttg.format_time_to_gate(r)
    assert "tiny-pretrain-v1 (baseline)" in table and "batch 16" in table and r["cpu"] in table
    assert r["lanes_at_once"] == 2 and "2 lanes of 1 thread(s), 2 at a time" in table
    json.dumps(r)  # the JSON the command writes
    ttg.plot_time_to_gate(r, tmp_path / "ttg.png")
    assert (tmp_path / "ttg.png").stat().st_size > 1000
    seeded = [{"recipe": a, "seed": s} for s in (0, 1) for a in ("v1", "new")]  # a --seeds run's lanes
    styles = ttg.lane_styles(seeded)
    assert [x["label"] for x in styles] == ["v1, seed 0", "new, seed 0", "v1, seed 1", "new, seed 1"]
    assert styles[0]["color"] == styles[2]["color"] != styles[1]["color"] == styles[3]["color"]
    assert styles[0]["ls"] == styles[1]["ls"] != styles[2]["ls"] == styles[3]["ls"]


def test_the_shipped_recipe_runs_on_its_own_budget_and_v2_is_kept_by_name() -> None:
    """`tiny-pretrain` is v2 with the 40 % → 15 % masking schedule on a 9M budget and the sampled softmax
    (v3: the same with the full softmax): its bench lane keeps that budget (its schedules decay over it)
    whatever `--max-tokens` says; `tiny-pretrain-v2` and `-v3` are still recipes (the old files' settings,
    v2 on the run's cap, v3 on its own budget); the table names a lane's own budget."""
    from tinylm.bench import time_to_gate as ttg
    from tinylm.config import named_config, read_yaml
    from tinylm.settings import PretrainSettings

    now, v2 = read_yaml(named_config("tiny-pretrain")), read_yaml(named_config("tiny-pretrain-v2"))
    v3 = read_yaml(named_config("tiny-pretrain-v3"))
    changed = {k for k in now.keys() | v2.keys() if now.get(k) != v2.get(k)}
    assert changed == {"mask_prob_start", "max_tokens", "sampled_softmax"}
    assert {k for k in now.keys() | v3.keys() if now.get(k) != v3.get(k)} == {"sampled_softmax"}
    built = PretrainSettings.build(now)
    assert built.train.max_tokens == 9_000_000 and now["mask_prob_start"] == 0.4
    assert built.corpus.sampled_softmax == 2048 and built.corpus.sampled_softmax_share == 1.0
    third = ttg.lane_settings(ttg.THIRD, None, {"max_tokens": 14_000_000, "eval_every": 100})
    assert third["max_tokens"] == 9_000_000 and "sampled_softmax" not in third
    fixed = {"max_tokens": 14_000_000, "eval_every": 100}
    cur = ttg.lane_settings(ttg.CURRENT, None, fixed)
    assert cur["max_tokens"] == 9_000_000 and cur["mask_prob_start"] == 0.4 and cur["eval_every"] == 100
    prev = ttg.lane_settings(ttg.PREVIOUS, None, fixed)
    assert prev["max_tokens"] == 14_000_000 and prev.get("mask_prob_start") is None
    assert {k: prev[k] for k in v2 if k not in fixed} == {k: v for k, v in v2.items() if k not in fixed}
    assert ttg.lane_settings("mask 40→15%", None, fixed)["max_tokens"] == 14_000_000
    lanes = [{"recipe": n, "settings": s} for n, s in ((ttg.PREVIOUS, prev), (ttg.CURRENT, cur))]
    assert (
        ttg._own_budgets({"max_tokens": 14_000_000, "lanes": lanes}) == " (tiny-pretrain: its own 9,000,000)"
    )


def test_member_lanes_compare_to_the_baseline_named(data_dir: Path, tmp_path: Path) -> None:
    """`--baseline "member 1/128"`: the member lanes (1 layer; one with the paper's conv front-end) run with
    the named lane first and every ratio to it."""
    from test_finetune import model_settings
    from tinylm.bench import time_to_gate as ttg

    conv = ttg.recipe_settings(ttg.MEMBER_CONV)
    assert conv["model"] == "tiny-1x128" and conv["conv_layers"] == 2 and conv["fused_loss"] is True
    base = model_settings(data_dir) | {"batch_size": 8, "lr": 3e-3, "warmup_steps": 5, "precision": "fp32"}
    base = {k: v for k, v in base.items() if k != "layers"}  # the number of layers: the recipe's
    common = {"num_articles": 40, "eval_articles": 8, "data_dir": str(data_dir), "cache_dir": str(tmp_path)}
    r = ttg.bench_time_to_gate(
        [ttg.MEMBER_CONV], -1.0, 20_000, 5, 2, base=base, common=common, baseline=ttg.MEMBER
    )
    assert [(x["recipe"], x["baseline"]) for x in r["lanes"]] == [
        (ttg.MEMBER, True),
        (ttg.MEMBER_CONV, False),
    ]
    assert r["lanes"][0]["tokens_per_s_vs_baseline"] == 1.0 and r["lanes"][1]["settings"]["conv_layers"] == 2
    assert "member 1/128 (baseline)" in ttg.format_time_to_gate(r)


def test_time_to_gate_over_seeds_pairs_each_lane_with_its_seeds_baseline(
    data_dir: Path, tmp_path: Path
) -> None:
    """`--seeds 0 1`: every recipe runs once per seed, each lane's ratios are to the baseline lane of its own
    seed (the seed reaches the run), and the summary gives per-seed tokens, medians and their ratios."""
    from test_finetune import model_settings
    from tinylm.bench import time_to_gate as ttg

    base = model_settings(data_dir) | {"batch_size": 8, "lr": 3e-3, "warmup_steps": 5, "precision": "fp32"}
    common = {"num_articles": 40, "eval_articles": 8, "data_dir": str(data_dir), "cache_dir": str(tmp_path)}
    r = ttg.bench_time_to_gate(["batch 16"], -1.0, 40_000, 5, 2, base=base, common=common, seeds=[0, 1])
    assert [(x["recipe"], x["seed"]) for x in r["lanes"]] == [
        ("tiny-pretrain-v1", 0),
        ("batch 16", 0),
        ("tiny-pretrain-v1", 1),
        ("batch 16", 1),
    ]
    assert [x["settings"]["seed"] for x in r["lanes"]] == [0, 0, 1, 1]
    by = {(x["recipe"], x["seed"]): x for x in r["lanes"]}
    for seed in (0, 1):
        lane, ref = by[("batch 16", seed)], by[("tiny-pretrain-v1", seed)]
        assert lane["tokens_to_gate_vs_baseline"] == round(lane["tokens_to_gate"] / ref["tokens_to_gate"], 3)
        assert ref["tokens_to_gate_vs_baseline"] == 1.0
    # different seeds draw different masks: the two baseline lanes do not follow the same curve
    assert [p["mlm_loss"] for p in by[("tiny-pretrain-v1", 0)]["curve"]] != [
        p["mlm_loss"] for p in by[("tiny-pretrain-v1", 1)]["curve"]
    ]
    summary = {e["recipe"]: e for e in r["summary"]}
    b16 = summary["batch 16"]
    assert b16["seeds"] == [0, 1] and b16["crossed"] == 2
    assert (
        b16["median_tokens_to_gate"]
        == (by[("batch 16", 0)]["tokens_to_gate"] + by[("batch 16", 1)]["tokens_to_gate"]) / 2
    )
    ref_median = summary["tiny-pretrain-v1"]["median_tokens_to_gate"]
    assert b16["median_tokens_to_gate_vs_baseline"] == round(b16["median_tokens_to_gate"] / ref_median, 3)
    table = ttg.format_time_to_gate(r)
    assert "batch 16, seed 1" in table and "| batch 16 | 2/2 |" in table


def test_a_lane_that_never_crosses_reports_null(tmp_path: Path) -> None:
    from tinylm.bench.time_to_gate import crossing

    ev = [
        (10, 100, 5.0, 0.5, 7.5, 7.0),
        (20, 200, 9.0, 0.5, 7.2, 7.0),
    ]  # step, tokens, wall, eval s, loss, uni
    lines = [
        json.dumps(
            {
                "step": s,
                "tokens": t,
                "wall_seconds": w,
                "eval_seconds": e,
                "eval": {"mlm_loss": m, "unigram_loss": u},
            }
        )
        for s, t, w, e, m, u in ev
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    c = crossing(tmp_path / "metrics.jsonl", 1.5)
    assert c["steps_to_gate"] is None and c["tokens_to_gate"] is None and c["seconds_to_gate"] is None
    assert [p["seconds"] for p in c["curve"]] == [5.0, 8.5]  # the first evaluation's time is not training
    assert c["final_loss"] == 7.2 and c["tokens_per_s"] == round(200 / 8.5, 1)
    assert crossing(tmp_path / "metrics.jsonl", -0.3)["steps_to_gate"] == 20


def test_unpad_bench_runs_on_real_data(real_data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """`tinylm bench unpad` on real AG News batches: both arms train, the JSON and table have the promised
    fields, and real AG News batches are partly padding."""
    from tinylm.bench.unpad import CASES, bench_unpad, format_table

    monkeypatch.setenv("TINYLM_DATA_DIR", str(real_data_dir))
    res = bench_unpad(["finetune agnews 2/128"], steps=2, warmup=1, batch=8)
    (row,) = res["cases"]
    assert row["case"] in CASES and 0.0 < row["padding_share"] < 0.9
    assert row["padded_tokens_per_s"] > 0 and row["packed_tokens_per_s"] > 0
    assert row["speedup"] == pytest.approx(row["packed_tokens_per_s"] / row["padded_tokens_per_s"])
    assert res["cpu"] and "finetune agnews 2/128" in format_table(res)
    assert res["allocator_tuned"] is (sys.platform == "linux")  # the trainer's allocator setting
    assert f"allocator tuned as in training: {'yes' if res['allocator_tuned'] else 'no'}" in format_table(res)
