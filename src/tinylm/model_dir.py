"""Self-contained model directories: weights, `model.json` (architecture, kind, labels, provenance), the
tokenizer files and transformers' `config.json`, so that a directory predicts wherever it is copied and
loads in transformers as is."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from tinylm.config import ModelConfig
from tinylm.errors import CheckpointError
from tinylm.fileio import write_json
from tinylm.hf import REMOTE_CODE, hf_config, write_hf_config, write_tokenizer_files
from tinylm.model import TinyBert, TinyBertForMaskedLM, TinyBertForSequenceClassification
from tinylm.weights import load_state, read_weights, save_weights


def model_meta(model: TinyBert, **extra: Any) -> dict[str, Any]:
    kind = "classifier" if isinstance(model, TinyBertForSequenceClassification) else "mlm"
    meta: dict[str, Any] = {"kind": kind, "model": dataclasses.asdict(model.cfg)}
    if isinstance(model, TinyBertForSequenceClassification):
        meta["num_labels"] = model.num_labels
    elif model.bert.pooler is not None:
        meta["pooler"] = True
    return meta | extra


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
#: What a model directory holds (a committee copies these per member).
MODEL_FILES = (
    "model.safetensors",
    "model.json",
    "config.json",
    *TOKENIZER_FILES,
    "tokenizer_config.json",
    "special_tokens_map.json",
    REMOTE_CODE,
)


def copy_tokenizer(tokenizer: str | None, directory: Path, max_length: int) -> str | None:
    """Copy the tokenizer files (tokenizer.json, vocab.txt) next to the weights; returns the file to
    record in model.json (relative: the directory works wherever it is copied), None when there is none."""
    if not tokenizer or not Path(tokenizer).is_file():
        return None
    src = Path(tokenizer)
    for name in {src.name, *TOKENIZER_FILES}:
        if (src.parent / name).is_file() and name in TOKENIZER_FILES:
            shutil.copy(src.parent / name, directory / name)
    write_tokenizer_files(directory, max_length)
    return src.name if src.name in TOKENIZER_FILES else None


def model_tokenizer(directory: Path, meta: dict[str, Any]) -> str | None:
    """The tokenizer file of a model directory: its own copy (relative name), else an absolute path
    recorded by an older tinylm, if that still exists."""
    tok = meta.get("tokenizer")
    if not tok:
        return None
    for candidate in (directory / tok, Path(tok)):
        if candidate.is_file():
            return str(candidate)
    return None


#: The weights of an MLM head that was never trained (an imported encoder): not saved, re-made at load.
UNTRAINED_HEAD = ("cls.",)


def untrained_mlm_head(meta: dict[str, Any]) -> bool:
    """Whether a directory's MLM head was never trained (`tinylm import` of an encoder without one)."""
    return meta.get("kind", "mlm") == "mlm" and str(meta.get("mlm_head", "")).startswith("random")


def save_model(model: TinyBert, directory: Path, tokenizer: str | None = None, **extra: Any) -> None:
    """A self-contained model directory: `model.safetensors` + `model.json` (architecture, kind, label
    names, ...), the tokenizer files, and transformers' `config.json` (BERT models without the conv
    front-end), so that it loads with `AutoModelFor…`/`AutoTokenizer.from_pretrained(directory)` as is."""
    directory.mkdir(parents=True, exist_ok=True)
    untrained = untrained_mlm_head(extra)
    save_weights(model, directory / "model.safetensors", leave_out=UNTRAINED_HEAD if untrained else ())
    copied = copy_tokenizer(tokenizer, directory, model.cfg.max_length)
    meta = model_meta(model, **extra)
    if tokenizer:
        meta |= {"tokenizer": copied or tokenizer, "tokenizer_source": tokenizer}
    write_json(directory / "model.json", meta)
    if not model.cfg.conv_layers:
        kind = "classifier" if isinstance(model, TinyBertForSequenceClassification) else "mlm"
        config = hf_config(model.cfg, kind, extra.get("label_names"), getattr(model, "num_labels", None))
        if untrained:  # an encoder: transformers loads it as one, and warns if asked for a masked LM
            config |= {"architectures": ["BertModel"], "tinylm_mlm_head": "untrained (not saved)"}
        write_hf_config(directory, config)


def read_model_meta(directory: Path) -> dict[str, Any]:
    path = directory / "model.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: no model.json (not a tinylm model directory)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def build_model(meta: dict[str, Any]) -> TinyBert:
    cfg = ModelConfig(**meta["model"])
    if meta["kind"] == "classifier":
        return TinyBertForSequenceClassification(cfg, meta["num_labels"])
    return TinyBertForMaskedLM(cfg, pooler=bool(meta.get("pooler")))


def load_model(directory: Path) -> tuple[TinyBert, dict[str, Any]]:
    """Rebuild a model saved by `save_model` (strict: every weight must be present, but an untrained MLM
    head, which keeps its random init)."""
    meta = read_model_meta(directory)
    model = build_model(meta)
    optional = UNTRAINED_HEAD if untrained_mlm_head(meta) else ()
    load_state(
        model,
        read_weights(directory / "model.safetensors"),
        str(directory / "model.safetensors"),
        optional=optional,
    )
    return model, meta
