"""`tinylm distill`: the loss is knowledge distillation's, and a student learns its teacher's behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from test_finetune import QUIET, ft, model_settings
from tinylm.classify import classify
from tinylm.committee import Committee
from tinylm.errors import ConfigError
from tinylm.finetune import finetune
from tinylm.objectives import DistillationObjective


def test_distillation_loss_is_alpha_ce_plus_t2_kl() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 3)
    teacher = F.softmax(torch.randn(5, 3) / 2.0, -1)
    batch = {
        "input_ids": torch.zeros(5, 4),
        "attention": torch.ones(5, 4),
        "labels": torch.tensor([0, 1, 2, 1, 0]),
    }
    batch["soft"] = teacher
    model = lambda ids, att: logits  # noqa: E731 - the objective only calls the model

    def loss(alpha: float) -> float:
        return float(DistillationObjective(3, 2.0, alpha).loss(model, batch)[0])

    ce = float(F.cross_entropy(logits, batch["labels"], reduction="sum"))
    student = F.softmax(logits / 2.0, -1)
    kl = float((teacher * (teacher.log() - student.log())).sum()) * 4.0
    assert loss(1.0) == pytest.approx(ce, rel=1e-5) and loss(0.0) == pytest.approx(kl, rel=1e-5)
    assert loss(0.3) == pytest.approx(0.3 * ce + 0.7 * kl, rel=1e-5)


def test_unlabelled_rows_add_only_the_teacher_term() -> None:
    """A row labelled −1 (unlabelled text) adds its KL term and nothing to the labels' cross-entropy or to
    the accuracy count."""
    torch.manual_seed(1)
    logits = torch.randn(4, 3)
    teacher = F.softmax(torch.randn(4, 3), -1)
    labels = torch.tensor([0, 2, -1, -1])
    batch = {"input_ids": torch.zeros(4, 2), "attention": torch.ones(4, 2), "labels": labels, "soft": teacher}
    loss, stats = DistillationObjective(3, 1.0, 0.4).loss(lambda ids, att: logits, batch)
    ce = float(F.cross_entropy(logits[:2], labels[:2], reduction="sum"))
    kl = float((teacher * (teacher.log() - F.log_softmax(logits, -1))).sum())
    assert float(loss) == pytest.approx(0.4 * ce + 0.6 * kl, rel=1e-5)
    assert int(stats["count"]) == 2 and int(stats["correct"]) <= 2


def test_distilled_student_agrees_with_its_committee(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """A committee of two members; the same student (seed, settings) trained on the labels alone and on
    the committee's soft probabilities alone (alpha 0): the distilled one agrees with the committee on
    the test items, the label-trained one much less; the student is an ordinary model directory."""
    from tinylm.cli import main

    ms = model_settings(data_dir)
    members = [
        finetune(ft(data_dir, tmp_path, **ms, seed=s, epochs=2, lr=3e-3, name=f"m{s}"), **QUIET).path
        for s in range(2)
    ]
    Committee.from_runs(members).save(tmp_path / "com")
    student = ms | {"seed": 7, "epochs": 6, "lr": 3e-3}
    plain = finetune(ft(data_dir, tmp_path, **student, name="plain"), **QUIET).path
    distilled = finetune(
        ft(data_dir, tmp_path, **student, name="dist", teacher=str(tmp_path / "com"), distill_alpha=0.0),
        **QUIET,
    ).path
    record = json.loads((distilled / "results.json").read_text())["distill"]
    assert record["teacher_members"] == 2 and record["alpha"] == 0.0 and record["temperature"] == 2.0
    # extra unlabelled task-domain text: one more training example per document, learnt from the teacher
    extra = tmp_path / "news.txt"
    extra.write_text("\n".join(f"markets and teams report {i} on the economy" for i in range(24)) + "\n")
    more = finetune(
        ft(
            data_dir,
            tmp_path,
            **student,
            name="unl",
            teacher=str(tmp_path / "com"),
            distill_unlabelled=f"file:{extra}",
        ),
        **QUIET,
    ).path
    res, base = (json.loads((d / "results.json").read_text()) for d in (more, distilled))
    assert res["training"]["examples"] == base["training"]["examples"] + 24 * student["epochs"]
    assert res["distill"]["unlabelled"] == f"file:{extra}" and base["distill"]["unlabelled"] is None
    with pytest.raises(ConfigError, match="distill_unlabelled: unlabelled text is learnt from a teacher"):
        finetune(ft(data_dir, tmp_path, **student, name="x", distill_unlabelled=f"file:{extra}"), **QUIET)
    texts = [f"a report {i} about {n}" for i, n in enumerate(["World", "Sports", "Business", "Sci/Tech"] * 5)]
    teacher = classify(tmp_path / "com", texts, 32).labels
    agree = {d.name: float((classify(d, texts, 32).labels == teacher).mean()) for d in (plain, distilled)}
    assert agree["dist"] >= 0.9 and agree["dist"] - agree["plain"] >= 0.5, agree
    assert record["agreement_with_teacher"] >= 0.9
    # `tinylm distill` insists on a teacher, and a teacher of other labels is refused before training
    monkeypatch.setenv("TINYLM_DATA_DIR", str(data_dir))
    base = ["--task", "agnews", "--samples_per_label_train", "8", "--out", str(tmp_path / "runs")]
    assert main(["distill", *base]) == 2
    other = finetune(
        ft(
            data_dir,
            tmp_path,
            **ms,
            task="dbpedia",
            samples_per_label_train=2,
            samples_per_label_test=2,
            epochs=1,
        ),
        **QUIET,
    )
    with pytest.raises(ConfigError, match="teacher: .* predicts .*, the task's labels are"):
        finetune(ft(data_dir, tmp_path, **student, name="bad", teacher=str(other.path)), **QUIET)
