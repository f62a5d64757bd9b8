"""Typed configuration: dataclass sections, YAML files whose keys equal the CLI flags, full validation.

A command's configuration is a set of sections (model, train, corpus, ...). Their field names are
unique across the sections, so a YAML file is flat (`hidden_size: 256`, `lr: 5.0e-5`) and each key
is also a CLI flag (`--hidden_size 256`, or `--hidden-size 256`). Values are resolved in the order
model preset < YAML file < CLI flags, then every problem is reported at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

from tinylm.errors import ConfigError
from tinylm.registry import BERT_VOCAB_SIZE, NAMED_MODELS, TASKS

S = TypeVar("S")


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A config field with its help text (shown by --help) and allowed values."""
    return field(default=default, metadata={"help": help, "choices": choices})


# ---------------------------------------------------------------- sections


class Section(Protocol):
    """A config section: a dataclass of settings that reports its own problems."""

    def validate(self) -> list[str]: ...


#: The model settings a fine-tuning may change on a pre-trained architecture (the head and dropout); every
#: other model field is the pre-trained model's.
FINETUNABLE_MODEL_FIELDS = frozenset({"dropout", "attention_dropout", "pooling"})


@dataclass
class ModelConfig:
    model: str | None = opt(
        None,
        "named architecture (bert6, bert1-h12, bert1-h24, bert1-conv2-k3-d64-h12, ...); "
        "other model flags override its values",
    )
    layers: int = opt(2, "number of transformer blocks")
    hidden_size: int = opt(128, "hidden size (heads × head size)")
    heads: int = opt(2, "attention heads; must divide hidden_size")
    ffn_size: int = opt(512, "feed-forward (intermediate) size")
    max_length: int = opt(128, "maximum sequence length in tokens (position embeddings)")
    vocab_size: int = opt(BERT_VOCAB_SIZE, f"vocabulary size (bert-base-uncased: {BERT_VOCAB_SIZE})")
    type_vocab_size: int = opt(2, "token-type vocabulary size")
    dropout: float = opt(0.1, "dropout on embeddings, residual branches and the classifier")
    attention_dropout: float = opt(0.1, "dropout on attention probabilities")
    layer_norm_eps: float = opt(1e-12, "LayerNorm epsilon")
    init_std: float = opt(0.02, "std of the normal weight init")
    position_init: str = opt(
        "normal",
        "position-embedding init: 'normal' (BERT's) or 'sinusoidal' (the sin/cos table of Vaswani et al., "
        "scaled to std init_std: neighbouring positions start out similar); init only, same architecture",
        ("normal", "sinusoidal"),
    )
    attention_init: str = opt(
        "normal",
        "query/key init: 'normal' (BERT's) or 'mimetic' (each layer's key weights start equal to its query "
        "weights, std 0.05, so every head starts attending to similar tokens and nearby positions; "
        "Trockman & Kolter 2023); init only, same architecture",
        ("normal", "mimetic"),
    )
    conv_layers: int = opt(0, "conv front-end: number of Conv2d+BN+GELU layers before the blocks (0 = none)")
    conv_kernel: str = opt("3", "conv kernel: '3' (3×3) or '16x3' (16 tokens × 3 hidden units)")
    conv_channels: int = opt(64, "conv front-end channel count d")
    pooling: str = opt(
        "cls",
        "classifier input: 'cls' (the [CLS] state through the pooler: the paper's head) or 'mean' (the "
        "mean of the non-padding token states through the pooler)",
        ("cls", "mean"),
    )

    def validate(self) -> list[str]:
        p: list[str] = []
        for name in (
            "layers",
            "hidden_size",
            "heads",
            "ffn_size",
            "max_length",
            "vocab_size",
            "type_vocab_size",
        ):
            if getattr(self, name) < 1:
                p.append(f"{name}: must be positive, got {getattr(self, name)}")
        if self.heads >= 1 and self.hidden_size >= 1 and self.hidden_size % self.heads:
            p.append(f"heads: {self.heads} does not divide hidden_size {self.hidden_size}")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                p.append(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.conv_layers < 0:
            p.append(f"conv_layers: must be >= 0, got {self.conv_layers}")
        if self.conv_layers and self.conv_channels < 1:
            p.append(f"conv_channels: must be positive, got {self.conv_channels}")
        try:
            self.kernel()
        except ValueError as e:
            p.append(f"conv_kernel: {e}")
        return p

    def kernel(self) -> tuple[int, int]:
        parts = str(self.conv_kernel).lower().replace("×", "x").split("x")
        if not 1 <= len(parts) <= 2 or not all(s.strip().isdigit() and int(s) > 0 for s in parts):
            raise ValueError(f"expected 'K' or 'KxK2' with positive integers, got {self.conv_kernel!r}")
        k = [int(s) for s in parts]
        return (k[0], k[-1])


#: `lr_sweep: auto`: the learning rates tried (around tiny-finetune's 1e-3).
AUTO_LR_SWEEP = "3e-4,1e-3,3e-3"


@dataclass
class TrainConfig:
    epochs: float = opt(1.0, "passes over the training data (may be fractional)")
    max_tokens: int | None = opt(None, "stop after this many non-padding training tokens (overrides epochs)")
    max_steps: int | None = opt(
        None, "stop after this many optimizer steps (overrides epochs and max_tokens)"
    )
    batch_size: int = opt(32, "examples per optimizer step (split into grad_accum micro-batches)")
    grad_accum: int = opt(1, "gradient accumulation micro-batches per step")
    lr: float = opt(5e-5, "peak learning rate (AdamW)")
    weight_decay: float = opt(0.01, "AdamW weight decay (not applied to biases and LayerNorm)")
    beta1: float = opt(0.9, "AdamW beta1")
    beta2: float = opt(0.999, "AdamW beta2")
    adam_eps: float = opt(1e-8, "AdamW epsilon")
    warmup_steps: int = opt(0, "linear warm-up steps (in schedule units) before linear decay to 0")
    schedule_unit: str = opt(
        "step", "step the LR schedule per 'step' or per 'epoch' (the paper's code)", ("step", "epoch")
    )
    grad_clip: float | None = opt(1.0, "max gradient norm (None/0 = no clipping; the paper's code: none)")
    seed: int = opt(0, "seed for init, dropout, masking and data order")
    precision: str = opt(
        "fp32",
        "fp32; bf16 autocast (an error where the device lacks it); auto: fp32 where the device has no bf16, "
        "else the faster of the two as measured on this CPU (timed once per CPU model and thread count)",
        ("fp32", "bf16", "auto"),
    )
    device: str = opt("auto", "auto (CUDA if present), cpu or cuda", ("auto", "cpu", "cuda"))
    fused_loss: bool = opt(
        True,
        "MLM: vocabulary projection and cross-entropy fused over chunks of rows (the logit matrix is never "
        "stored; same mathematics; benchmarks/README.md has its speed); false: the plain path",
    )
    compile: bool = opt(False, "wrap the model in torch.compile")
    threads: int | None = opt(None, "torch intra-op threads (default: torch's choice)")
    lr_sweep: str | None = opt(
        None,
        "fine-tuning: one run per learning rate (comma-separated, e.g. 3e-4,1e-3,3e-3; 'auto' = those "
        "three), the run with the best validation accuracy kept as this run (the grid's rule; needs "
        "validation_per_label); each rate's run stays next to it as NAME-lr<rate>",
    )
    patience: int | None = opt(
        None,
        "fine-tuning with a validation split: stop once the validation accuracy has not improved for this "
        "many evaluations (epochs); the best epoch's model is the result either way; None: every epoch",
    )
    log_every: int = opt(10, "write a metrics line every N steps")
    eval_every: int | None = opt(None, "evaluate every N steps (default: at the end of each epoch)")
    checkpoint_every: int | None = opt(None, "checkpoint every N steps (default: at the end of each epoch)")
    keep_checkpoints: int = opt(2, "how many recent checkpoints to keep (resume falls back to an older one)")
    prune: bool = opt(
        True,
        "when the run finishes, delete what only a resume needs: checkpoints/ (weights + optimizer state) "
        "and best.safetensors (the final model.safetensors is that model); false keeps everything",
    )
    progress: bool = opt(True, "show a progress bar")
    snapshot_tokens: str | None = opt(
        None,
        "also keep the model (with a held-out evaluation) after these many training tokens, "
        "comma-separated (e.g. 0,1000000,4000000), under RUN/snapshots/tokens-N",
    )

    def sweep_rates(self) -> list[float]:
        """The learning rates of `lr_sweep` (empty: no sweep); ValueError names what is wrong."""
        if not self.lr_sweep:
            return []
        text = AUTO_LR_SWEEP if str(self.lr_sweep).strip() == "auto" else str(self.lr_sweep)
        try:
            rates = [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ValueError(
                f"expected 'auto' or comma-separated positive numbers, got {self.lr_sweep!r}"
            ) from None
        if len(rates) < 2 or not all(r > 0 for r in rates):
            raise ValueError(f"expected at least two positive learning rates, got {self.lr_sweep!r}")
        return rates

    def snapshot_counts(self) -> list[int]:
        """The token counts of `snapshot_tokens`, sorted (ValueError names what is wrong)."""
        if not self.snapshot_tokens:
            return []
        parts = [s.strip() for s in str(self.snapshot_tokens).split(",") if s.strip()]
        if not all(s.isdigit() for s in parts):
            raise ValueError(f"expected comma-separated non-negative integers, got {self.snapshot_tokens!r}")
        return sorted({int(s) for s in parts})

    def validate(self) -> list[str]:
        p: list[str] = []
        if not self.epochs > 0:  # also catches nan
            p.append(f"epochs: must be positive, got {self.epochs}")
        try:
            self.sweep_rates()
        except ValueError as e:
            p.append(f"lr_sweep: {e}")
        if self.patience is not None and self.patience < 1:
            p.append(f"patience: must be at least 1 (or null: no early stop), got {self.patience}")
        try:
            self.snapshot_counts()
        except ValueError as e:
            p.append(f"snapshot_tokens: {e}")
        for name in ("batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                p.append(f"{name}: must be positive, got {getattr(self, name)}")
        for name in ("max_tokens", "max_steps", "eval_every", "checkpoint_every", "threads"):
            v = getattr(self, name)
            if v is not None and v < 1:
                p.append(f"{name}: must be positive when given, got {v}")
        if self.batch_size >= 1 and self.grad_accum >= 1 and self.batch_size % self.grad_accum:
            p.append(f"grad_accum: {self.grad_accum} does not divide batch_size {self.batch_size}")
        return p + self._optimizer_problems()

    def _optimizer_problems(self) -> list[str]:
        p: list[str] = []
        if not 0 < self.lr < float("inf"):  # also catches nan
            p.append(f"lr: must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            p.append(f"weight_decay: must be >= 0, got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                p.append(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.warmup_steps < 0:
            p.append(f"warmup_steps: must be >= 0, got {self.warmup_steps}")
        if self.grad_clip is not None and self.grad_clip < 0:
            p.append(f"grad_clip: must be >= 0, got {self.grad_clip}")
        return p


@dataclass
class CorpusConfig:
    data_dir: str | None = opt(None, "local data directory (default: $TINYLM_DATA_DIR, else the HF hub)")
    cache_dir: str | None = opt(None, "token cache directory (default: $TINYLM_CACHE_DIR or ~/.cache/tinylm)")
    corpus: str = opt(
        "wikipedia",
        "pre-training documents: 'wikipedia' (the article leads of the data directory or the hub), or "
        "file:PATH — a .txt (one document per line, or blank-line separated when it has blank lines), a "
        ".jsonl[.gz] with a 'text' field per line, or a directory of them (e.g. one written by `tinylm "
        "corpus select`); ordered, nested, held out and cached like Wikipedia",
    )
    num_articles: int = opt(
        40000, "documents in the pre-training subset (nested: first N of one seeded order)"
    )
    corpus_seed: int = opt(42, "seed of the article order (the paper: 42)")
    eval_articles: int = opt(1000, "held-out articles for MLM evaluation (the end of the order)")
    selection: str = opt(
        "nested",
        "which articles: 'nested' (first num_articles of the order), or 'high'/'low' "
        "(overlap-controlled: the full-length articles of the pool with the highest/lowest "
        "overlap with selection_task)",
        ("nested", "high", "low"),
    )
    selection_task: str | None = opt(None, "task whose training vocabulary drives selection high/low")
    selection_pool: int = opt(100000, "candidate articles (first of the order) for selection high/low")
    packing: bool = opt(
        False,
        "train on full max_length windows over each article's whole text (articles separated by [SEP]) "
        "instead of its first max_length tokens: ~3-4x the tokens per article; a deviation from the paper "
        "(held-out samples stay first tokens)",
    )
    mask_prob: float = opt(0.15, "share of non-special tokens selected for MLM")
    mask_prob_start: float | None = opt(
        None,
        "masking-rate schedule: start at this share and fall linearly to mask_prob over the run's steps "
        "(e.g. 0.3; arXiv 2305.15096); held-out evaluation always masks mask_prob; None = constant",
    )
    predict_prob: float | None = opt(
        None,
        "prediction rate below the masking rate (arXiv 2202.08005): while a training step masks more than "
        "this share of tokens, each selected token enters the loss with probability predict_prob ÷ the "
        "step's rate (the others stay corrupted in the input), so the vocabulary projection's rows stay at "
        "this rate's count; None = every selected token is predicted",
    )
    sampled_softmax: int | None = opt(
        None,
        "sampled-softmax warm-up (arXiv 1412.2007): in the first sampled_softmax_share of the run's steps "
        "the MLM loss scores each target against this many candidate ids drawn per step from the corpus "
        "unigram ** 0.75 (logits corrected by log expected count) instead of the whole vocabulary: a cheaper "
        "projection (the training log's loss and accuracy are then the sampled ones); evaluation and the "
        "saved model always use the full vocabulary; None = full softmax",
    )
    sampled_softmax_share: float = opt(
        1.0, "share of the run's steps that use sampled_softmax (the rest: the full softmax)"
    )
    attention_window_start: int | None = opt(
        None,
        "attention-window warm-up: in a training step each token attends only to the tokens within ± this "
        "many positions, the window widening linearly to the whole sequence over attention_window_share of "
        "the run's steps, then full attention; evaluation and the saved model always attend to every token "
        "(same architecture, a training curriculum); None = full attention throughout",
    )
    attention_window_share: float = opt(
        0.25, "share of the run's steps over which attention_window_start widens to full attention"
    )
    mask_replace: float = opt(0.8, "share of selected tokens replaced by [MASK]")
    mask_random: float = opt(0.1, "share of selected tokens replaced by a random token (rest: unchanged)")

    def validate(self) -> list[str]:
        p: list[str] = []
        if self.num_articles < 1:
            p.append(f"num_articles: must be positive, got {self.num_articles}")
        if self.eval_articles < 1:
            p.append(f"eval_articles: must be positive, got {self.eval_articles}")
        if self.corpus != "wikipedia" and not (self.corpus.startswith("file:") and len(self.corpus) > 5):
            p.append(f"corpus: expected 'wikipedia' or file:PATH, got {self.corpus!r}")
        elif self.corpus != "wikipedia" and self.selection != "nested":
            p.append(
                "selection: high/low selects from Wikipedia; for a file: corpus, select with `tinylm corpus "
                "select --from file:PATH` and pre-train on its output"
            )
        if self.packing and self.selection != "nested":
            p.append("packing: applies to nested corpora only (selection 'nested')")
        if self.selection != "nested" and not self.selection_task:
            p.append(f"selection_task: required when selection is {self.selection!r}")
        if self.selection != "nested" and self.selection_pool < self.num_articles:
            p.append(
                f"selection_pool: {self.selection_pool} is smaller than num_articles {self.num_articles}"
            )
        return p + self._objective_problems()

    def _objective_problems(self) -> list[str]:
        """The masking and attention-window settings' problems."""
        p: list[str] = []
        if not 0 < self.mask_prob < 1:
            p.append(f"mask_prob: must be in (0, 1), got {self.mask_prob}")
        if self.mask_prob_start is not None and not 0 < self.mask_prob_start < 1:
            p.append(f"mask_prob_start: must be in (0, 1) or null (constant), got {self.mask_prob_start}")
        top = max(self.mask_prob, self.mask_prob_start or 0.0)
        if self.predict_prob is not None and not 0 < self.predict_prob < top:
            p.append(
                f"predict_prob: must be in (0, {top:g}) (below the highest masking rate, else it never acts) "
                f"or null, got {self.predict_prob}"
            )
        if self.sampled_softmax is not None and self.sampled_softmax < 1:
            p.append(
                f"sampled_softmax: must be >= 1 candidate or null (full softmax), got {self.sampled_softmax}"
            )
        if not 0 < self.sampled_softmax_share <= 1:
            p.append(f"sampled_softmax_share: must be in (0, 1], got {self.sampled_softmax_share}")
        if self.attention_window_start is not None and self.attention_window_start < 0:
            p.append(
                f"attention_window_start: must be >= 0 positions or null (full attention), got "
                f"{self.attention_window_start}"
            )
        if not 0 < self.attention_window_share <= 1:
            p.append(f"attention_window_share: must be in (0, 1], got {self.attention_window_share}")
        if not (
            0 <= self.mask_replace and 0 <= self.mask_random and self.mask_replace + self.mask_random <= 1
        ):
            p.append(
                f"mask_replace + mask_random: must be shares summing to <= 1, got {self.mask_replace} + "
                f"{self.mask_random}"
            )
        return p


@dataclass
class TaskConfig:
    task: str = opt("agnews", "agnews, dbpedia, fewrel, or file:PATH (a CSV with a header row, or JSONL)")
    init: str = opt(
        "scratch",
        "'scratch' (random init: the non-pre-trained control), a pre-training run, "
        "a tinylm model directory, or a transformers BERT directory",
    )
    init_pooler: bool = opt(False, "also load the pooler when the init source has one (the paper: fresh)")
    samples_per_label_train: int | None = opt(
        -1, "training examples per label (-1: the task's paper default, None: all)"
    )
    samples_per_label_test: int | None = opt(
        -1, "test examples per label (-1: the task's paper default, None: all)"
    )
    sample_seed: int = opt(42, "seed of the per-label sampling (the paper's code: 42)")
    fewrel_marking: str = opt(
        "punct", "FewRel entity marking: punct ('@ head @', '# tail #') or none", ("punct", "none")
    )
    fewrel_split_seed: int = opt(42, "seed of FewRel's per-relation train/test split")
    fewrel_test_per_relation: int = opt(
        70, "FewRel test instances per relation (the rest train; paper 630/70)"
    )
    text_column: str = opt("text", "file tasks: the text column / JSON field")
    label_column: str = opt("label", "file tasks: the label column / JSON field (names or integers)")
    test_file: str | None = opt(None, "file tasks: a separate test file (else a seeded split of the file)")
    test_share: float = opt(
        0.1, "file tasks without a test file: share of each label's rows held out for test"
    )
    validation_per_label: int = opt(
        0,
        "training examples per label held out as a seeded validation split: every epoch is evaluated on it, "
        "the best epoch is chosen on it and the test split is read once, for that epoch's model (0: no "
        "validation split; every epoch is evaluated on the test split, as the paper's code does)",
    )
    eval_batch_size: int = opt(128, "batch size for evaluation")
    data_dir: str | None = opt(None, "local data directory (default: $TINYLM_DATA_DIR, else the HF hub)")
    cache_dir: str | None = opt(None, "token cache directory (default: $TINYLM_CACHE_DIR or ~/.cache/tinylm)")
    teacher: str | None = opt(
        None,
        "distillation: a committee or fine-tuned model directory whose soft probabilities (at "
        "distill_temperature) the model also learns from (`tinylm distill`); None: labels only",
    )
    distill_temperature: float = opt(2.0, "distillation: softmax temperature of teacher and student")
    distill_alpha: float = opt(
        0.5, "distillation: weight of the labels' cross-entropy (1 − alpha: the teacher's soft targets)"
    )
    distill_unlabelled: str | None = opt(
        None,
        "distillation: extra unlabelled task-domain text, file:PATH (.txt, .jsonl[.gz] or a directory, as "
        "`pretrain --corpus`), each document one more training example learnt from the teacher's soft "
        "probabilities alone; None: the labelled examples only",
    )

    def validate(self) -> list[str]:
        p: list[str] = []
        if self.distill_temperature <= 0:
            p.append(f"distill_temperature: must be positive, got {self.distill_temperature}")
        if not 0 <= self.distill_alpha <= 1:
            p.append(f"distill_alpha: must be in [0, 1], got {self.distill_alpha}")
        if self.distill_unlabelled is not None and not self.teacher:
            p.append("distill_unlabelled: unlabelled text is learnt from a teacher; set teacher too")
        if self.distill_unlabelled is not None and not self.distill_unlabelled.startswith("file:"):
            p.append(f"distill_unlabelled: expected file:PATH, got {self.distill_unlabelled!r}")
        if not (self.task in TASKS or self.task.startswith("file:")):
            p.append(f"task: unknown task {self.task!r} (expected {', '.join(TASKS)} or file:PATH)")
        for name in ("samples_per_label_train", "samples_per_label_test"):
            v = getattr(self, name)
            if v is not None and v != -1 and v < 1:
                p.append(f"{name}: must be positive, -1 (paper default) or None (all), got {v}")
        if self.eval_batch_size < 1:
            p.append(f"eval_batch_size: must be positive, got {self.eval_batch_size}")
        if self.validation_per_label < 0:
            p.append(f"validation_per_label: must be >= 0, got {self.validation_per_label}")
        return p


@dataclass
class RunConfig:
    out: str = opt("runs", "directory that holds run directories")
    name: str | None = opt(None, "run name (default: derived from the config hash)")
    resume: bool = opt(False, "continue the run in OUT/NAME from its latest checkpoint")

    def validate(self) -> list[str]:
        return []


# ---------------------------------------------------------------- parsing machinery


def model_shape(model: Mapping[str, Any], ffn: bool = False) -> str:
    """The one formatter of an architecture's name: layers/hidden/heads (/ffn with `ffn`), +convN for a conv
    front-end (tables, logs, committee results)."""
    conv = f"+conv{model['conv_layers']}" if model.get("conv_layers") else ""
    size = f"/{model['ffn_size']}" if ffn else ""
    return f"{model['layers']}/{model['hidden_size']}/{model['heads']}{size}{conv}"


def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> tuple[type, bool]:
    """(scalar type, optional?) of an annotation like `int | None`."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes", "on"):
        return True
    if str(value).lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name}: expected true/false, got {value!r}")


def _to_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    try:
        return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an integer, got {value!r}") from None


def _coerce(name: str, value: Any, tp: Any, choices: tuple[str, ...] | None) -> Any:
    base, optional = _base_type(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise ValueError(f"{name}: a value is required")
    out: Any
    if base is bool:
        out = _to_bool(name, value)
    elif base is int:
        out = _to_int(name, value)
    elif base is float:
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected a number, got {value!r}") from None
    else:
        out = str(value)
    if choices and out not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(str, choices))}, got {out!r}")
    return out


def section_fields(sections: Mapping[str, type[Any]]) -> dict[str, tuple[str, dataclasses.Field[Any], Any]]:
    """Map every flat key to (section name, field, annotation); keys are unique across sections."""
    out: dict[str, tuple[str, dataclasses.Field[Any], Any]] = {}
    for sec, cls in sections.items():
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            assert f.name not in out, f"duplicate config key {f.name}"
            out[f.name] = (sec, f, hints[f.name])
    return out


def add_config_args(parser: argparse.ArgumentParser, sections: Mapping[str, type[Any]]) -> None:
    """One flag per config key (`--key` and `--key-with-dashes`), defaults left to the dataclasses."""
    parser.add_argument(
        "--config", metavar="YAML", help="YAML file of settings; its keys are these flags' names"
    )
    for sec, cls in sections.items():
        group = parser.add_argument_group(f"{sec} settings")
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
            base, _ = _base_type(hints[f.name])
            default = f.default if f.default is not dataclasses.MISSING else None
            help_text = f"{f.metadata.get('help', '')} (default: {default})"
            metavar = base.__name__.upper() if base in (int, float, str) else "BOOL"
            if f.metadata.get("choices"):
                metavar = "{" + ",".join(f.metadata["choices"]) + "}"
            group.add_argument(
                *names, dest=f.name, default=argparse.SUPPRESS, metavar=metavar, help=help_text
            )


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file not found: {path}"], str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError([f"not valid YAML: {e}"], str(path)) from e
    if not isinstance(data, dict):
        raise ConfigError([f"expected a mapping of settings, got {type(data).__name__}"], str(path))
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_sections(
    sections: Mapping[str, type[Any]], *layers: Mapping[str, Any], source: str = "config"
) -> dict[str, Any]:
    """Merge layers of flat settings (later wins), apply a named model, coerce and validate everything."""
    known = section_fields(sections)
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    problems: list[str] = []
    if "model" in merged and "model" in known and merged["model"] not in (None, "", "none"):
        name = str(merged["model"])
        if name not in NAMED_MODELS:
            problems.append(
                f"model: unknown named model {name!r} (expected one of {', '.join(NAMED_MODELS)})"
            )
        else:
            preset = dict(NAMED_MODELS[name])
            for layer in layers:  # explicit settings override the preset
                preset.update({k: v for k, v in layer.items() if k != "model"})
            merged = preset | {"model": name}
    values: dict[str, dict[str, Any]] = {sec: {} for sec in sections}
    for key, value in merged.items():
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            problems.append(f"{key}: unknown setting" + (f" (did you mean {close[0]}?)" if close else ""))
            continue
        sec, f, tp = known[key]
        try:
            values[sec][key] = _coerce(key, value, tp, f.metadata.get("choices"))
        except ValueError as e:
            problems.append(str(e))
    built: dict[str, Any] = {}
    for sec, cls in sections.items():
        obj = cls(**values[sec])
        problems.extend(obj.validate())
        built[sec] = obj
    if problems:
        raise ConfigError(problems, source)
    return built


def build_section(
    cls: type[S], settings: Mapping[str, Any], source: str = "config", others: str = "error"
) -> S:
    """One section from flat settings; keys of other sections are an error, or ignored with
    `others="ignore"` (e.g. the section of a run's whole config.yaml)."""
    if others == "ignore":
        fields = {f.name for f in dataclasses.fields(typing.cast(Any, cls))}
        settings = {k: v for k, v in settings.items() if k in fields}
    section: S = build_sections({"section": cls}, settings, source=source)["section"]
    return section


def args_layers(
    sections: Mapping[str, type[Any]], args: argparse.Namespace
) -> tuple[list[dict[str, Any]], str]:
    """The settings layers of a command line: `--config FILE`, then the flags given; and their source."""
    known = section_fields(sections)
    config = getattr(args, "config", None)
    file_layer = read_yaml(config) if config else {}
    cli_layer = {k: v for k, v in vars(args).items() if k in known}
    return [file_layer, cli_layer], (f"{config} + command line" if config else "command line")


PACKAGE_CONFIGS = Path(__file__).parent / "configs"


def named_config(name: str) -> Path:
    """A config shipped with tinylm (`paper-pretrain`, ...) or a path to a YAML file."""
    p = PACKAGE_CONFIGS / f"{name}.yaml"
    return p if p.is_file() else Path(name)
