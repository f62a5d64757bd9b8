"""Hugging Face `transformers` compatibility, both directions: tinylm settings <-> a BERT `config.json`
(`hf_config`, `config_from_hf`), weight names, tokenizer files; export a tinylm model to a BERT directory,
import one back.

Exported directories hold `config.json` (model_type "bert") + `model.safetensors` (+ the WordPiece
vocab when known), loadable with `AutoModelForMaskedLM` / `AutoModelForSequenceClassification`.
Conv front-end variants have no transformers counterpart and cannot be exported.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tinylm.config import ModelConfig
from tinylm.errors import CheckpointError, TinylmError
from tinylm.fileio import atomic_dir, read_json_object, write_json
from tinylm.model import TIED_KEYS, TinyBert, TinyBertForMaskedLM, TinyBertForSequenceClassification
from tinylm.weights import load_state, read_weights, state_for_saving

#: model_type of a mean-pooled classifier directory (its class ships as modeling_tinylm.py).
MEAN_POOLED_TYPE = "tinylm_bert"
REMOTE_CODE = "modeling_tinylm.py"


def write_hf_config(directory: Path, config: dict[str, Any]) -> None:
    """config.json, and the modeling file its `auto_map` names (if any) next to it."""
    write_json(directory / "config.json", config)
    if "auto_map" in config:
        shutil.copy(Path(__file__).parent / "remote_code" / REMOTE_CODE, directory / REMOTE_CODE)


def hf_config(
    cfg: ModelConfig, kind: str, label_names: list[str] | None = None, num_labels: int | None = None
) -> dict[str, Any]:
    """transformers' config.json of a model (`num_labels`: a classifier's, where it has no label names)."""
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
        out["tinylm_pooling"] = cfg.pooling
        if num_labels and not label_names:
            out["num_labels"] = num_labels
    if kind == "classifier" and cfg.pooling == "mean":
        # transformers' BertForSequenceClassification reads [CLS]: a mean-pooled head is a class of its own,
        # shipped next to the weights (auto_map); without trust_remote_code transformers refuses to load it
        out |= {
            "model_type": MEAN_POOLED_TYPE,
            "architectures": ["TinylmBertForSequenceClassification"],
            "auto_map": {
                "AutoConfig": "modeling_tinylm.TinylmBertConfig",
                "AutoModelForSequenceClassification": "modeling_tinylm.TinylmBertForSequenceClassification",
            },
        }
    if label_names:
        out["id2label"] = {str(i): n for i, n in enumerate(label_names)}
        out["label2id"] = {n: i for i, n in enumerate(label_names)}
    return out


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


def export_model(
    model: TinyBert,
    out: Path,
    label_names: list[str] | None = None,
    tokenizer_dir: Path | None = None,
    encoder_only: bool = False,
) -> Path:
    """Write a transformers BERT directory for `model` (atomically: complete or absent). `encoder_only`
    (an imported encoder whose MLM head was never trained) writes a `BertModel`: no invented head."""
    if model.cfg.conv_layers:
        raise TinylmError(
            "models with the conv front-end have no transformers BERT counterpart; export needs conv_layers=0"
        )
    if out.exists() and any(out.iterdir()):
        raise TinylmError(f"{out} exists and is not empty; choose a new output directory")
    if out.exists():
        out.rmdir()
    kind = "classifier" if isinstance(model, TinyBertForSequenceClassification) else "mlm"
    if tokenizer_dir is None:
        warnings.warn(
            f"{out}: the model carries no tokenizer files; the export has none (give transformers the "
            "bert-base-uncased vocab.txt/tokenizer.json yourself)",
            stacklevel=2,
        )
    with atomic_dir(out) as tmp:
        config = hf_config(model.cfg, kind, label_names, getattr(model, "num_labels", None))
        state = state_for_saving(model)
        if encoder_only and kind == "mlm":
            config["architectures"] = ["BertModel"]
            state = {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
        write_hf_config(tmp, config)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer_dir is not None:
            for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                if (tokenizer_dir / name).is_file():
                    shutil.copy(tokenizer_dir / name, tmp / name)
            write_tokenizer_files(tmp, model.cfg.max_length)
    return out


def read_hf_config(path: Path) -> dict[str, Any]:
    """config.json of a transformers directory (a clear error when it is not valid JSON)."""
    return read_json_object(path, "of model settings", CheckpointError)


def config_from_hf(cfg: dict[str, Any], where: str) -> ModelConfig:
    if cfg.get("model_type") not in ("bert", MEAN_POOLED_TYPE):
        raise CheckpointError(
            f"{where}: model_type is {cfg.get('model_type')!r}; only BERT directories can be imported"
        )
    if (
        cfg.get("hidden_act", "gelu") != "gelu"
        or cfg.get("position_embedding_type", "absolute") != "absolute"
    ):
        raise CheckpointError(
            f"{where}: only hidden_act='gelu' and absolute position embeddings are supported"
        )
    return ModelConfig(
        layers=cfg["num_hidden_layers"],
        hidden_size=cfg["hidden_size"],
        heads=cfg["num_attention_heads"],
        ffn_size=cfg["intermediate_size"],
        max_length=cfg["max_position_embeddings"],
        vocab_size=cfg["vocab_size"],
        type_vocab_size=cfg.get("type_vocab_size", 2),
        dropout=cfg.get("hidden_dropout_prob", 0.1),
        attention_dropout=cfg.get("attention_probs_dropout_prob", 0.1),
        layer_norm_eps=cfg.get("layer_norm_eps", 1e-12),
        init_std=cfg.get("initializer_range", 0.02),
        pooling=cfg.get("tinylm_pooling", "cls"),
    )


def read_hf_state(directory: Path) -> dict[str, torch.Tensor]:
    if (directory / "model.safetensors").is_file():
        state = read_weights(directory / "model.safetensors")
    elif (directory / "pytorch_model.bin").is_file():
        state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise CheckpointError(f"{directory}: no model.safetensors or pytorch_model.bin")
    # A bare BertModel is saved without the 'bert.' prefix; legacy LayerNorm names use gamma/beta.
    if not any(k.startswith("bert.") for k in state):
        state = {f"bert.{k}": v for k, v in state.items()}
    state = {
        k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"): v
        for k, v in state.items()
    }
    return {k: v for k, v in state.items() if not k.endswith("position_ids") and k not in TIED_KEYS}


def hf_kind(config: dict[str, Any]) -> str:
    """'classifier' for a sequence-classification directory (what `export` writes for a fine-tuned run),
    else 'mlm' (a masked LM, or a bare encoder)."""
    archs = config.get("architectures") or []
    return "classifier" if any(str(a).endswith("ForSequenceClassification") for a in archs) else "mlm"


def hf_label_names(config: dict[str, Any]) -> list[str] | None:
    """The label names of `id2label`, in label order; None when there are none."""
    id2label = config.get("id2label") or {}
    try:
        return [str(id2label[k]) for k in sorted(id2label, key=int)] or None
    except (TypeError, ValueError):
        return None


def import_model(
    directory: Path, kind: str | None = None, num_labels: int | None = None
) -> tuple[TinyBert, dict[str, Any]]:
    """Load a transformers BERT directory into a tinylm model (a classifier when the directory is one,
    classifier and label names included); returns the model and what was loaded."""
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: no config.json (not a transformers model directory)")
    config = read_hf_config(path)
    cfg = config_from_hf(config, str(path))
    state = read_hf_state(directory)
    kind = kind or hf_kind(config)
    labels = hf_label_names(config)
    if kind == "classifier":
        model: TinyBert = TinyBertForSequenceClassification(cfg, num_labels or len(labels or []) or 2)
    else:
        model = TinyBertForMaskedLM(cfg, pooler=any(k.startswith("bert.pooler.") for k in state))
    own = {k for k in model.state_dict() if k not in TIED_KEYS}
    usable = {k: v for k, v in state.items() if k in own}
    skipped = sorted(set(state) - own)
    fresh = sorted(own - set(usable))
    if not any(k.startswith("bert.encoder.") for k in usable):
        raise CheckpointError(
            f"{directory}: no encoder weights found (expected keys like bert.encoder.layer.0...)"
        )
    load_state(model, usable, str(directory), strict=False)
    head_prefix = "classifier." if kind == "classifier" else "cls."
    head = "loaded" if any(k.startswith(head_prefix) for k in usable) else "random (the source has none)"
    report = {"loaded": sorted(usable), "not_loaded": fresh, "ignored": skipped, "kind": kind}
    return model, report | (
        {"classifier": head, "label_names": labels} if kind == "classifier" else {"mlm_head": head}
    )


def hf_tokenizer_file(directory: Path) -> str | None:
    """The tokenizer file of a transformers directory (tokenizer.json, else vocab.txt), if it has one."""
    for name in ("tokenizer.json", "vocab.txt"):
        if (directory / name).is_file():
            return str(directory / name)
    return None


__all__ = ["export_model", "hf_config", "import_model"]
