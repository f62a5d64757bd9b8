"""Texts to labels with a saved classifier: a fine-tuned model directory, a committee directory, or an
ONNX export (run by onnxruntime); and the lines `tinylm predict` prints for them.

One output line per input line: a blank input line gives a blank line (`null` with JSON); else
`label<TAB>name<TAB>probability`, a `{"label", "score"}` record (JSON, like transformers'
text-classification pipeline), or the k most probable labels with their scores, best first.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tinylm.committee import Committee, combine, committee_logits, softmax
from tinylm.data.sources import resolve_source
from tinylm.data.tokenize import TokenizerInfo, encode_texts, load_tokenizer, tokenizer_from_file
from tinylm.data.tokens import TokenData, batches
from tinylm.errors import ConfigError, DataError


@dataclass(frozen=True)
class Predictions:
    """Label names, class probabilities (N, labels) and predicted labels (N,) of N texts."""

    label_names: list[str]
    probs: np.ndarray
    labels: np.ndarray


def read_lines(where: str, path: str | None) -> list[str]:
    """The input's lines (a final newline ends the last line, it does not start a new one)."""
    try:
        raw = sys.stdin.buffer.read() if path in (None, "-") else Path(str(path)).read_bytes()
    except OSError as e:
        raise DataError(f"{where}: cannot read ({e})") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{where}, line {line}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); save it as UTF-8"
        ) from e
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def fallback_tokenizer(model_dir: Path) -> TokenizerInfo:
    """A model directory written by an older tinylm carries no tokenizer: the data directory's."""
    if not os.environ.get("TINYLM_DATA_DIR"):
        raise DataError(
            f"{model_dir}: carries no tokenizer files (written by an older tinylm); set TINYLM_DATA_DIR to a "
            "data directory with tokenizer/bert-base-uncased, or re-export the model with this version"
        )
    return load_tokenizer(resolve_source(None))


def classify(model_dir: Path, texts: list[str], batch_size: int, rule: str = "mean_prob") -> Predictions:
    """Class probabilities and labels of `texts`, from torch weights (a model or committee directory) or
    from an ONNX export."""
    if (model_dir / "onnx.json").is_file():
        return _classify_onnx(model_dir, texts, batch_size, rule)
    committee = (
        Committee.load(model_dir)
        if (model_dir / "manifest.json").is_file()
        else Committee.from_runs([model_dir])
    )
    tok = tokenizer_from_file(committee.tokenizer) if committee.tokenizer else fallback_tokenizer(model_dir)
    enc = encode_texts(tok, texts, committee.members[0].cfg.max_length)
    member_logits = committee_logits(committee, TokenData(enc.ids, enc.lengths), batch_size)
    return Predictions(committee.label_names, softmax(member_logits).mean(0), combine(member_logits, rule))


def _classify_onnx(model_dir: Path, texts: list[str], batch_size: int, rule: str) -> Predictions:
    from tinylm.onnx_export import OnnxClassifier

    if rule != "mean_prob":
        raise ConfigError([f"rule: an ONNX export computes mean_prob only, got {rule}"], "predict")
    onnx = OnnxClassifier(model_dir)
    tok = tokenizer_from_file(onnx.tokenizer) if onnx.tokenizer else fallback_tokenizer(model_dir)
    enc = encode_texts(tok, texts, onnx.max_length)
    chunks = [
        onnx.probabilities(b["input_ids"].numpy(), b["attention"].numpy())
        for b in batches(TokenData(enc.ids, enc.lengths), batch_size, torch.device("cpu"))
    ]
    probs = np.concatenate(chunks)
    return Predictions(onnx.label_names, probs, probs.argmax(-1))


def texts_of(lines: list[str], blank: str = "null") -> list[str]:
    """The texts to classify: every line that is not blank (empty or only whitespace, Unicode spaces
    included), stripped; with `blank="predict"` blank lines too, as they are."""
    return [line.strip() if line.strip() else line for line in lines if line.strip() or blank == "predict"]


def output_lines(
    lines: list[str], pred: Predictions, as_json: bool, top_k: int | None, blank: str = "null"
) -> list[str]:
    """What `tinylm predict` prints: one line per input line (`top_k` 0: every label)."""
    names, probs = pred.label_names, pred.probs
    k = len(names) if top_k == 0 else top_k
    out, i = [], 0
    for line in lines:  # one output line per input line: a blank input line gives a blank (or null) line
        if not line.strip() and blank == "null":
            out.append("null" if as_json else "")
            continue
        y = int(pred.labels[i])
        if k is not None:
            order = probs[i].argsort()[::-1][:k]
            recs = [{"label": names[j], "score": round(float(probs[i, j]), 6)} for j in order]
            out.append(
                json.dumps(recs) if as_json else "\t".join(f"{r['label']}\t{r['score']:.4f}" for r in recs)
            )
        elif as_json:
            out.append(json.dumps({"label": names[y], "score": round(float(probs[i, y]), 6)}))
        else:
            out.append(f"{y}\t{names[y]}\t{probs[i, y]:.4f}")
        i += 1
    return out
