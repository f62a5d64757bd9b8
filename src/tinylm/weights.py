"""Saving and loading model weights (safetensors) with their architecture, for run dirs and exports."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tinylm.config import ModelConfig
from tinylm.errors import CheckpointError
from tinylm.fileio import atomic_path, space_errors, write_json
from tinylm.model import TIED_KEYS, TinyBert, TinyBertForMaskedLM, TinyBertForSequenceClassification


def state_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without tied aliases (safetensors refuses shared storage), contiguous, on CPU."""
    sd = model.state_dict()
    return {k: v.detach().cpu().contiguous() for k, v in sd.items() if k not in TIED_KEYS}


def save_weights(model: nn.Module, path: Path) -> None:
    with space_errors(path.parent), atomic_path(path) as tmp:
        save_file(state_for_saving(model), str(tmp), metadata={"format": "pt"})


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({e})") from e


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
)


def write_tokenizer_files(directory: Path, max_length: int) -> None:
    """transformers' tokenizer_config.json and special_tokens_map.json (bert-base-uncased settings), so that
    `AutoTokenizer.from_pretrained(directory)` works offline from the copied tokenizer files."""
    write_json(
        directory / "tokenizer_config.json",
        {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": True,
            "model_max_length": max_length,
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
        },
    )
    write_json(
        directory / "special_tokens_map.json",
        {
            t: f"[{t.split('_')[0].upper()}]"
            for t in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
        },
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


def hf_config(cfg: ModelConfig, kind: str, label_names: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "architectures": ["BertForSequenceClassification" if kind == "classifier" else "BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "intermediate_size": cfg.ffn_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.max_length,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.init_std,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
    }
    if kind == "classifier":
        # transformers' BertForSequenceClassification reads [CLS]; tinylm records its head's pooling here
        out["tinylm_pooling"] = cfg.pooling
    if label_names:
        out["id2label"] = {str(i): n for i, n in enumerate(label_names)}
        out["label2id"] = {n: i for i, n in enumerate(label_names)}
    return out


def save_model(model: TinyBert, directory: Path, tokenizer: str | None = None, **extra: Any) -> None:
    """A self-contained model directory: `model.safetensors` + `model.json` (architecture, kind, label
    names, ...), the tokenizer files, and transformers' `config.json` (BERT models without the conv
    front-end), so that it loads with `AutoModelFor…`/`AutoTokenizer.from_pretrained(directory)` as is."""
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(model, directory / "model.safetensors")
    copied = copy_tokenizer(tokenizer, directory, model.cfg.max_length)
    meta = model_meta(model, **extra)
    if tokenizer:
        meta |= {"tokenizer": copied or tokenizer, "tokenizer_source": tokenizer}
    write_json(directory / "model.json", meta)
    if not model.cfg.conv_layers:
        kind = "classifier" if isinstance(model, TinyBertForSequenceClassification) else "mlm"
        write_json(directory / "config.json", hf_config(model.cfg, kind, extra.get("label_names")))


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
    """Rebuild a model saved by `save_model` (strict: every weight must be present)."""
    meta = read_model_meta(directory)
    model = build_model(meta)
    load_state(model, read_weights(directory / "model.safetensors"), str(directory / "model.safetensors"))
    return model, meta


def load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str, strict: bool = True) -> None:
    """Load `state` into `model` after checking shapes (and, if strict, that every weight is present)."""
    own = model.state_dict()
    if strict:
        expected = {k for k in own if k not in TIED_KEYS}
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise CheckpointError(
                f"{where}: weights do not match the architecture "
                f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
            )
    shapes = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape
    ]
    if shapes:
        raise CheckpointError(
            f"{where}: weight shapes do not match the architecture: {'; '.join(shapes[:5])}"
        )
    model.load_state_dict(state, strict=False)
