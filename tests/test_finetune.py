"""Fine-tuning: transfer from a pre-training run, the scratch control, file tasks, evaluation, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tinylm.data.sources import resolve_source
from tinylm.data.tasks import load_task_data
from tinylm.data.tokenize import load_tokenizer
from tinylm.errors import CheckpointError, ConfigError, DataError
from tinylm.finetune import build_classifier, finetune, resolve_model_config
from tinylm.objectives import classification_metrics
from tinylm.pretrain import pretrain
from tinylm.settings import FinetuneSettings, PretrainSettings

QUIET = {"log": lambda *_: None}


def model_settings(data_dir: Path) -> dict:
    vocab = load_tokenizer(resolve_source(data_dir)).vocab_size
    return dict(layers=1, hidden_size=16, heads=2, ffn_size=32, max_length=24, vocab_size=vocab)


@pytest.fixture
def pre_run(data_dir: Path, tmp_path: Path) -> Path:
    s = model_settings(data_dir) | dict(
        num_articles=40,
        eval_articles=8,
        epochs=1,
        batch_size=8,
        data_dir=str(data_dir),
        cache_dir=str(tmp_path / "cache"),
        out=str(tmp_path / "runs"),
        name="pre",
        progress=False,
    )
    return pretrain(PretrainSettings.build(s), **QUIET).path


def ft(data_dir: Path, tmp_path: Path, **kw) -> FinetuneSettings:
    s = dict(
        task="agnews",
        samples_per_label_train=8,
        samples_per_label_test=4,
        epochs=2,
        batch_size=8,
        lr=1e-3,
        data_dir=str(data_dir),
        cache_dir=str(tmp_path / "cache"),
        out=str(tmp_path / "runs"),
        progress=False,
    )
    return FinetuneSettings.build(s | kw)


def test_init_transfers_encoder_and_scratch_is_seeded(data_dir: Path, tmp_path: Path, pre_run: Path) -> None:
    built = ft(data_dir, tmp_path, init=str(pre_run))
    mcfg = resolve_model_config(built)
    model, report = build_classifier(mcfg, 4, built.task, seed=0)
    pre = load_file(pre_run / "model.safetensors")
    own = model.state_dict()
    for k, v in pre.items():
        if k.startswith(("bert.embeddings.", "bert.encoder.")):
            assert torch.equal(own[k], v), k
    assert "bert.pooler.dense.weight" in report["fresh"] and "classifier.weight" in report["fresh"]
    assert not any(k.startswith("cls.") for k in report["loaded"])
    s_built = ft(data_dir, tmp_path, **model_settings(data_dir))
    a, _ = build_classifier(s_built.model, 4, s_built.task, seed=0)
    b, _ = build_classifier(s_built.model, 4, s_built.task, seed=0)
    c, _ = build_classifier(s_built.model, 4, s_built.task, seed=1)
    w = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])  # seeded
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], pre[w])  # scratch is not the pre-trained model


def test_finetune_run_results(data_dir: Path, tmp_path: Path, pre_run: Path) -> None:
    run = finetune(ft(data_dir, tmp_path, init=str(pre_run), name="ft"), **QUIET)
    res = json.loads((run.path / "results.json").read_text())
    assert res["final_epoch"]["epoch"] == 2 and len(res["per_epoch"]) == 2
    assert res["best_epoch"]["accuracy"] >= res["final_epoch"]["accuracy"]
    assert np.array(res["final_epoch"]["confusion_matrix"]).sum() == 16
    init = json.loads((run.path / "init.json").read_text())
    assert init["init"] == str(pre_run) and "bert.encoder.layer.0.output.dense.weight" in init["loaded"]
    preds = np.load(run.path / "test_predictions.npz")
    assert preds["probs"].shape == (16, 4) and np.allclose(preds["probs"].sum(1), 1, atol=1e-5)
    assert abs((preds["probs"].argmax(1) == preds["labels"]).mean() - res["final_epoch"]["accuracy"]) < 1e-9
    data = json.loads((run.path / "data.json").read_text())
    assert data["samples_per_label_train"] == 8 and data["label_names"][0] == "World"


def test_metrics() -> None:
    m = classification_metrics(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3, matrix=True)
    assert m["accuracy"] == 0.75 and m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert m["per_class_accuracy"] == [1.0, 1.0, 0.5]
    assert abs(m["macro_f1"] - (1 + 2 / 3 + 2 / 3) / 3) < 1e-9


def test_file_task_csv_and_jsonl(tmp_path: Path, data_dir: Path) -> None:
    csv_path = tmp_path / "mine.csv"
    rows = ["text,label"] + [f"the city {i},{'pos' if i % 2 else 'neg'}" for i in range(20)]
    csv_path.write_text("\n".join(rows) + "\n")
    built = ft(
        data_dir,
        tmp_path,
        task=f"file:{csv_path}",
        samples_per_label_train=-1,
        samples_per_label_test=-1,
        test_share=0.2,
    )
    task = load_task_data(built.task)
    assert task.label_names == ["neg", "pos"] and len(task.test) == 4 and len(task.train) == 16
    assert not {r.id for r in task.train} & {r.id for r in task.test}
    jl = tmp_path / "mine.jsonl"
    jl.write_text("\n".join(json.dumps({"sentence": f"a town {i}", "y": i % 3}) for i in range(12)) + "\n")
    test = tmp_path / "test.jsonl"
    test.write_text(
        "\n".join(json.dumps({"sentence": f"the river {i}", "y": i % 3}) for i in range(6)) + "\n"
    )
    built = ft(
        data_dir,
        tmp_path,
        task=f"file:{jl}",
        text_column="sentence",
        label_column="y",
        test_file=str(test),
        samples_per_label_train=2,
        samples_per_label_test=-1,
    )
    task = load_task_data(built.task)
    assert task.label_names == ["0", "1", "2"] and len(task.train) == 6 and len(task.test) == 6
    run = finetune(
        FinetuneSettings.build(
            {
                **{k: v for k, v in vars(built.task).items()},
                **model_settings(data_dir),
                "epochs": 1,
                "batch_size": 4,
                "progress": False,
                "out": str(tmp_path / "r"),
            },
        ),
        **QUIET,
    )
    assert run.is_finished()


def test_bad_input_errors(data_dir: Path, tmp_path: Path, pre_run: Path) -> None:
    with pytest.raises(ConfigError, match="task: unknown task 'imdb'"):
        ft(data_dir, tmp_path, task="imdb")
    with pytest.raises(CheckpointError, match="not a tinylm run or model directory"):
        finetune(ft(data_dir, tmp_path, init=str(tmp_path)), **QUIET)
    with pytest.raises(ConfigError, match="hidden_size: --init has 16, the settings ask for 32"):
        finetune(
            ft(data_dir, tmp_path, init=str(pre_run), hidden_size=32, heads=2),
            **QUIET,
        )
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,a\n,b\n")
    with pytest.raises(DataError, match=r"bad.csv:3: empty or non-text value in column 'text'"):
        load_task_data(ft(data_dir, tmp_path, task=f"file:{bad}").task)
    nolab = tmp_path / "nolab.csv"
    nolab.write_text("text,cls\nhello,a\n")
    with pytest.raises(DataError, match=r"nolab.csv:2: no column 'label'"):
        load_task_data(ft(data_dir, tmp_path, task=f"file:{nolab}").task)
    tr, te = tmp_path / "tr.csv", tmp_path / "te.csv"
    tr.write_text("text,label\na b,x\nc d,y\ne f,x\ng h,y\n")
    te.write_text("text,label\na b,x\nc d,x\n")
    with pytest.raises(DataError, match=r"test split has no examples of label 1 \(y\)"):
        load_task_data(
            ft(
                data_dir,
                tmp_path,
                task=f"file:{tr}",
                test_file=str(te),
                samples_per_label_train=-1,
                samples_per_label_test=-1,
            ).task
        )
    # a checkpoint whose vocabulary does not match the tokenizer: error before training
    big = PretrainSettings.build(model_settings(data_dir) | {"vocab_size": 999}).model
    from tinylm.model import TinyBertForMaskedLM
    from tinylm.model_dir import save_model

    save_model(TinyBertForMaskedLM(big), tmp_path / "bigvocab")
    with pytest.raises(CheckpointError, match=r"vocab_size: the model .* has 999 but the tokenizer"):
        finetune(ft(data_dir, tmp_path, init=str(tmp_path / "bigvocab")), **QUIET)


def test_validation_split_picks_the_epoch_and_reads_test_once(data_dir: Path, tmp_path: Path) -> None:
    built = ft(data_dir, tmp_path, **model_settings(data_dir), validation_per_label=3, epochs=4, name="val")
    task = load_task_data(built.task)
    ids = {split: {r.id for r in getattr(task, split)} for split in ("train", "validation", "test")}
    assert len(ids["validation"]) == 3 * 4 and len(ids["train"]) == 5 * 4
    assert not ids["validation"] & ids["train"] and not ids["validation"] & ids["test"]
    assert task.description["num_validation"] == 12 and "validation_ids_hash" in task.description
    run = finetune(built, **QUIET)
    res = json.loads((run.path / "results.json").read_text())
    assert res["evaluated_each_epoch_on"] == "validation" and res["num_validation"] == 12
    val = [e["accuracy"] for e in res["per_epoch"]]
    assert len(val) == 4
    chosen = res["test"]
    assert chosen["selected_on"] == "validation" and chosen["validation_accuracy"] == max(val)
    assert chosen["epoch"] == res["per_epoch"][val.index(max(val))]["epoch"]  # ties keep the earlier epoch
    preds = np.load(run.path / "test_predictions.npz")  # the selected model's test probabilities
    assert float((preds["probs"].argmax(1) == preds["labels"]).mean()) == pytest.approx(chosen["accuracy"])
    with pytest.raises(DataError, match="validation_per_label=9: label 0"):
        load_task_data(ft(data_dir, tmp_path, validation_per_label=9).task)


def test_warning_when_training_loss_stays_at_chance(data_dir: Path, tmp_path: Path) -> None:
    from tinylm.finetune import epochs_at_chance

    chance = float(np.log(4))
    logs = [{"epoch": 0, "loss": chance + d} for d in (0.01, -0.02)] + [{"epoch": 1, "loss": 0.9}]
    assert epochs_at_chance(logs, 4) == [0] and epochs_at_chance(logs[2:], 4) == []
    built = ft(data_dir, tmp_path, **model_settings(data_dir), lr=1e-7, epochs=1, name="stuck")
    run = finetune(built, **QUIET)
    warning = json.loads((run.path / "results.json").read_text())["training"]["warning"]
    assert "ln(4) = 1.386 (chance)" in warning and "tiny-finetune" in warning
    from tinylm.finetune import chance_warning

    learnt_later = [{"epoch": 0, "loss": chance}, {"epoch": 1, "loss": 0.7}]
    assert chance_warning(learnt_later, 4, 1e-4) is None  # it reached a lower loss: no warning
    stuck_large_lr = chance_warning([{"epoch": 0, "loss": chance}], 4, 1e-3)
    assert (
        stuck_large_lr is not None
        and "already large" in stuck_large_lr
        and "tiny-finetune" not in stuck_large_lr
    )
    tiny = FinetuneSettings.build(read_yaml_config("tiny-finetune") | {"task": "agnews"})
    assert (
        tiny.train.lr == 1e-3
        and tiny.task.validation_per_label == 30
        and tiny.train.patience == 3
        and tiny.train.sweep_rates() == [3e-4, 1e-3, 3e-3]
    )


def read_yaml_config(name: str) -> dict:
    from tinylm.config import named_config, read_yaml

    return read_yaml(str(named_config(name)))


def test_patience_stops_when_validation_accuracy_stops_improving(data_dir: Path, tmp_path: Path) -> None:
    """`patience: 1` with a model that cannot improve (lr 1e-12): the run stops after the second evaluation
    instead of running 30 epochs, says so, and the result is the best (first) epoch's model."""
    from tinylm.errors import ConfigError
    from tinylm.finetune import patience_stop

    stop = patience_stop(2, [])
    assert [stop({"accuracy": a}) for a in (0.5, 0.6, 0.6, 0.55)] == [False, False, False, True]
    resumed = patience_stop(1, [0.7, 0.6])  # a resumed run's history counts
    assert resumed({"accuracy": 0.65}) is True
    s = ft(data_dir, tmp_path, **model_settings(data_dir), epochs=30, lr=1e-12, validation_per_label=2,
           patience=1, name="p")  # fmt: skip
    run = finetune(s, **QUIET).path
    res = json.loads((run / "results.json").read_text())
    assert res["training"]["stopped_early"] is True and res["training"]["epochs_completed"] == 2
    assert res["test"]["epoch"] == 1 and len(res["per_epoch"]) == 2
    with pytest.raises(ConfigError, match="patience: chooses on validation accuracy"):
        finetune(ft(data_dir, tmp_path, **model_settings(data_dir), patience=1, name="q"), **QUIET)
    with pytest.raises(ConfigError, match="patience: must be at least 1"):
        ft(data_dir, tmp_path, patience=0)


def test_lr_sweep_keeps_the_rate_with_the_best_validation_accuracy(data_dir: Path, tmp_path: Path) -> None:
    """`lr_sweep`: one run per rate (NAME-lr<rate>), the best validation score's run copied in as this run
    with the sweep recorded; a rerun reuses everything; bad lists are one clear error."""
    from tinylm.errors import ConfigError
    from tinylm.finetune import validation_score

    s = ft(data_dir, tmp_path, **model_settings(data_dir), lr_sweep="1e-12,3e-3", validation_per_label=2,
           epochs=3, name="sw")  # fmt: skip
    run = finetune(s, **QUIET).path
    res = json.loads((run / "results.json").read_text())
    sweep = res["lr_sweep"]
    parts = [json.loads((Path(r) / "results.json").read_text()) for r in sweep["runs"]]
    assert [Path(r).name for r in sweep["runs"]] == ["sw-lr1e-12", "sw-lr0.003"]
    assert sweep["validation"] == [validation_score(r) for r in parts]
    best = sweep["validation"].index(max(sweep["validation"]))
    assert sweep["chosen_lr"] == sweep["rates"][best]
    assert res["test"] == parts[best]["test"] and (run / "model.safetensors").is_file()
    again = finetune(s, **QUIET).path
    assert again == run and json.loads((run / "results.json").read_text()) == res
    for bad in ("3e-4", "x,1e-3", "1e-3,-1"):
        with pytest.raises(ConfigError, match="lr_sweep: expected"):
            ft(data_dir, tmp_path, lr_sweep=bad)
    with pytest.raises(ConfigError, match="lr_sweep: chooses on validation accuracy"):
        finetune(ft(data_dir, tmp_path, lr_sweep="auto", name="nv"), **QUIET)
