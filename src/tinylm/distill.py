"""`tinylm distill`: one shallow student trained on a teacher's soft probabilities (and the labels).

The teacher is a committee directory (`tinylm committee --out`) or any fine-tuned model directory; its
temperature-T probabilities on the student's training examples (a soft committee: the mean of the
members' temperature-T softmaxes) are computed once, before training, and travel with the batches. The
student is an ordinary fine-tuning run (predict, export, ONNX all work); its results.json gains a
`distill` record: the teacher, T, alpha, and the teacher's and student's test accuracy with their
agreement on the same test items.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinylm.committee import Committee, committee_logits, softmax
from tinylm.data.tokenize import TokenizerInfo
from tinylm.data.tokens import TokenData
from tinylm.errors import ConfigError


def load_teacher(path: str, label_names: list[str]) -> Committee:
    """The teacher (committee or single model directory), refused unless its labels are the task's."""
    where = Path(path)
    if not where.is_dir():
        raise ConfigError([f"teacher: {path} is not a directory (expected a committee or model directory)"])
    teacher = Committee.load(where) if (where / "manifest.json").is_file() else Committee.from_runs([where])
    if list(teacher.label_names) != list(label_names):
        raise ConfigError(
            [f"teacher: {path} predicts {teacher.label_names}, the task's labels are {label_names}"]
        )
    return teacher


def with_unlabelled(train: TokenData, spec: str, tok: TokenizerInfo, max_length: int) -> TokenData:
    """The training examples followed by every document of a `file:` corpus (first `max_length` WordPieces,
    as the task's texts), labelled UNLABELLED: the student learns them from the teacher alone."""
    from tinylm.data.documents import encode_documents
    from tinylm.objectives import UNLABELLED

    extra = encode_documents(spec, tok, max_length)
    width = max(train.ids.shape[1], extra.ids.shape[1])
    ids = np.zeros((len(train) + len(extra), width), dtype=train.ids.dtype)
    ids[: len(train), : train.ids.shape[1]] = train.ids
    ids[len(train) :, : extra.ids.shape[1]] = extra.ids
    assert train.labels is not None
    labels = np.concatenate([train.labels, np.full(len(extra), UNLABELLED, dtype=train.labels.dtype)])
    return TokenData(ids, np.concatenate([train.lengths, extra.lengths]), labels)


def teacher_probabilities(teacher: Committee, data: TokenData, temperature: float) -> np.ndarray:
    """The soft committee at temperature T: mean over members of softmax(logits / T), (N, labels)."""
    return softmax(committee_logits(teacher, data) / temperature).mean(0).astype(np.float32)


def distill_record(
    teacher_path: str,
    teacher: Committee,
    test: TokenData,
    student_probs: np.ndarray,
    temperature: float,
    alpha: float,
) -> dict[str, Any]:
    """Teacher vs student on the same test items: accuracies and how often they agree."""
    assert test.labels is not None
    teacher_pred = teacher_probabilities(teacher, test, 1.0).argmax(1)
    student_pred = student_probs.argmax(1)
    return {
        "teacher": teacher_path,
        "teacher_members": len(teacher.members),
        "temperature": temperature,
        "alpha": alpha,
        "teacher_test_accuracy": float((teacher_pred == test.labels).mean()),
        "student_test_accuracy": float((student_pred == test.labels).mean()),
        "agreement_with_teacher": float((teacher_pred == student_pred).mean()),
    }
