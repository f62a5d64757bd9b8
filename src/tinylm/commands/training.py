"""`tinylm pretrain`, `finetune` and `distill`: a settings bundle from --config and the flags, then the
recipe."""

from __future__ import annotations

import argparse
from typing import Any

from tinylm.config import add_config_args, named_config
from tinylm.settings import FinetuneSettings, PretrainSettings


def _resolve_config(args: argparse.Namespace) -> None:
    """`--config NAME` may be a shipped config (paper-pretrain, ...) or a YAML path."""
    if getattr(args, "config", None):
        args.config = str(named_config(args.config))


def _pretrain(args: argparse.Namespace) -> int:
    from tinylm.pretrain import pretrain

    _resolve_config(args)
    pretrain(PretrainSettings.from_args(args))
    return 0


def add_pretrain(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "pretrain",
        help="MLM pre-training on a Wikipedia subset",
        description="Pre-train a TinyBert with masked-language modelling on the first N articles of the "
        "seeded Wikipedia order. Settings come from --config (a YAML file, or a shipped name: "
        "paper-pretrain, tiny-pretrain) and flags; flags win. The run directory holds config.yaml, "
        "data.json, metrics.jsonl, checkpoints/ and the final model.safetensors.",
    )
    add_config_args(p, PretrainSettings.sections())
    p.set_defaults(handler=_pretrain)


def _finetune(args: argparse.Namespace) -> int:
    from tinylm.finetune import finetune

    _resolve_config(args)
    finetune(FinetuneSettings.from_args(args))
    return 0


def add_finetune(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a pre-trained (or scratch) model on a classification task",
        description="Fine-tune a classifier on agnews, dbpedia, fewrel or your own file (--task file:PATH). "
        "--init RUN_DIR transfers embeddings + encoder from a pre-training run, a tinylm model directory or "
        "a transformers BERT directory; --init scratch is the same architecture from random init (the "
        "control). The test split is evaluated after every epoch (accuracy, macro-F1, per-class accuracy, "
        "confusion matrix); results.json keeps final-epoch and best-epoch accuracy. Shipped configs: "
        "tiny-finetune (the default for 1-2 layer models: lr 1e-3, a validation split chooses the epoch), "
        "paper-finetune-agnews, paper-finetune-dbpedia, paper-finetune-fewrel.",
    )
    add_config_args(p, FinetuneSettings.sections())
    p.set_defaults(handler=_finetune)


def _distill(args: argparse.Namespace) -> int:
    from tinylm.errors import ConfigError
    from tinylm.finetune import finetune

    _resolve_config(args)
    settings = FinetuneSettings.from_args(args)
    if not settings.task.teacher:
        raise ConfigError(["teacher: required (a committee or fine-tuned model directory)"], "distill")
    finetune(settings)
    return 0


def add_distill(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "distill",
        help="train one model on a committee's soft probabilities (knowledge distillation)",
        description="Fine-tune a student (--init: a pre-training run, as `finetune`) on the labels and "
        "on the temperature-T soft probabilities of --teacher (a committee directory from `tinylm "
        "committee --out`, or a fine-tuned model): loss = alpha × cross-entropy + (1 − alpha) × T² × "
        "KL(teacher ‖ student). Every `finetune` setting applies (--config tiny-finetune, --lr_sweep, "
        "--patience, ...). The student is an ordinary fine-tuned model directory; results.json's "
        "`distill` record compares it with the teacher on the same test items (accuracies, agreement).",
    )
    add_config_args(p, FinetuneSettings.sections())
    p.set_defaults(handler=_distill)
