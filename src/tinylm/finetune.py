"""`tinylm finetune`: a pre-trained (or scratch) TinyBert fine-tuned as a classifier on a task.

What transfers from `--init` is explicit: embeddings and encoder (conv front-end included); the
pooler and classifier start fresh (as in the paper's code, where BertForMaskedLM has no pooler)
unless `init_pooler` is set and the source has one. The run records what was loaded and what not.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinylm.committee import Committee
from tinylm.config import FINETUNABLE_MODEL_FIELDS, ModelConfig, TaskConfig, TrainConfig
from tinylm.data.sources import resolve_source
from tinylm.data.tasks import TaskData, load_task_data
from tinylm.data.tokenize import TokenizerInfo, encode_records_cached, load_tokenizer
from tinylm.data.tokens import TokenData
from tinylm.device import pick_device
from tinylm.distill import distill_record, load_teacher, teacher_probabilities, with_unlabelled
from tinylm.errors import CheckpointError, ConfigError, TinylmError
from tinylm.fileio import write_json
from tinylm.lifecycle import Run, run_once
from tinylm.model import TinyBertForSequenceClassification, describe
from tinylm.model_dir import read_model_meta, save_model
from tinylm.objectives import ClassificationObjective, DistillationObjective, classification_metrics
from tinylm.predict import class_probabilities
from tinylm.runs import RunDir, run_name
from tinylm.settings import FinetuneSettings
from tinylm.train import Trainer
from tinylm.weights import load_state, read_weights, save_weights

# ---------------------------------------------------------------- init


def init_source(path: str) -> tuple[str, Path]:
    """Classify an --init path: ('tinylm', dir) or ('hf', dir); a clear error otherwise."""
    p = Path(path)
    if (p / "model.json").is_file():
        if not (p / "model.safetensors").is_file():
            raise CheckpointError(
                f"--init {p}: the run has not finished (no model.safetensors); resume it first"
            )
        return "tinylm", p
    if (p / "config.json").is_file():
        return "hf", p
    if (p / "config.yaml").is_file():
        raise CheckpointError(
            f"--init {p}: the run has not finished (no model.json/model.safetensors); resume it first"
        )
    raise CheckpointError(
        f"--init {p}: not a tinylm run or model directory (model.json + model.safetensors) "
        "nor a transformers BERT directory (config.json)"
    )


def init_model_config(path: str) -> ModelConfig:
    kind, p = init_source(path)
    if kind == "tinylm":
        return ModelConfig(**read_model_meta(p)["model"])
    from tinylm.hf import config_from_hf, read_hf_config

    return config_from_hf(read_hf_config(p / "config.json"), str(p / "config.json"))


def transferable(key: str, init_pooler: bool) -> bool:
    return key.startswith(("bert.embeddings.", "bert.encoder.")) or (
        init_pooler and key.startswith("bert.pooler.")
    )


def build_classifier(
    mcfg: ModelConfig, num_labels: int, tc: TaskConfig, seed: int
) -> tuple[TinyBertForSequenceClassification, dict[str, Any]]:
    """A seeded classifier; with an --init source, its embeddings and encoder (and pooler if asked) loaded."""
    torch.manual_seed(seed)
    model = TinyBertForSequenceClassification(mcfg, num_labels)
    if tc.init == "scratch":
        return model, {"init": "scratch", "loaded": [], "fresh": sorted(model.state_dict())}
    kind, p = init_source(tc.init)
    if kind == "tinylm":
        state = read_weights(p / "model.safetensors")
    else:
        from tinylm.hf import read_hf_state

        state = read_hf_state(p)
    own = model.state_dict()
    take = {k: v for k, v in state.items() if k in own and transferable(k, tc.init_pooler)}
    if not any(k.startswith("bert.encoder.") for k in take):
        raise CheckpointError(f"--init {p}: no encoder weights to transfer")
    load_state(model, take, f"--init {p}", strict=False)
    return model, {
        "init": str(p),
        "init_kind": kind,
        "loaded": sorted(take),
        "fresh": sorted(set(own) - set(take)),
    }


def resolve_model_config(settings: FinetuneSettings) -> ModelConfig:
    """Scratch: the model settings. --init: the source's architecture; model settings the user gave must
    agree with it, except the fine-tunable ones (`FINETUNABLE_MODEL_FIELDS`: dropout, the head's pooling)."""
    init, given = settings.task.init, settings.model
    if init == "scratch":
        return given
    cfg = init_model_config(init)
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    architecture = settings.explicit & fields - FINETUNABLE_MODEL_FIELDS - {"model"}  # "model" is a name
    clash = [
        f"{k}: --init has {getattr(cfg, k)!r}, the settings ask for {getattr(given, k)!r}"
        for k in sorted(architecture)
        if getattr(cfg, k) != getattr(given, k)
    ]
    if clash:
        raise ConfigError(clash, f"--init {init} vs model settings")
    over = {k: getattr(given, k) for k in settings.explicit & FINETUNABLE_MODEL_FIELDS}
    return dataclasses.replace(cfg, **over)


# ---------------------------------------------------------------- the command


def finetune(settings: FinetuneSettings, log: Callable[[str], None] = print) -> RunDir:
    """Fine-tune per the settings; returns the (finished) run directory."""
    needs_validation = [k for k in ("patience", "lr_sweep") if getattr(settings.train, k)]
    if needs_validation and not settings.task.validation_per_label:
        raise ConfigError(
            [
                f"{k}: chooses on validation accuracy; it needs validation_per_label > 0"
                for k in needs_validation
            ]
        )
    settings = settings.with_sections(model=resolve_model_config(settings))  # errors before any data work
    task = settings.task.task
    kind = "distill" if settings.task.teacher else "finetune"
    prefix = f"{kind}-{task.replace('file:', 'file-').replace('/', '_')}"
    if settings.train.lr_sweep:
        return finetune_lr_sweep(settings, prefix, log)
    return run_once(settings, prefix, "fine-tuning run", _finetune, log)


def validation_score(result: dict[str, Any]) -> float:
    """What chooses among a learning-rate sweep's runs: the validation accuracy of the selected epoch."""
    if "test" in result:
        return float(result["test"]["validation_accuracy"])
    return float(result["best_epoch"]["accuracy"])


def finetune_lr_sweep(settings: FinetuneSettings, prefix: str, log: Callable[[str], None] = print) -> RunDir:
    """One fine-tuning per rate of `lr_sweep` (each a run of its own, NAME-lr<rate>, reused when finished),
    then the one with the best validation score (ties: the first rate) copied into this run's directory,
    with `lr_sweep` in its results. Rerun: every finished part is reused."""
    import shutil

    from tinylm.fileio import atomic_dir

    name = settings.run.name or run_name(prefix, settings.flat())
    main = RunDir(Path(settings.run.out) / name)
    if main.is_finished():
        log(f"{main.path}: already finished; reusing it (results.json)")
        return main
    if main.path.exists():
        raise TinylmError(
            f"{main.path} exists and is not a finished sweep; choose another --name or remove it"
        )
    runs = []
    for lr in settings.train.sweep_rates():
        train = dataclasses.replace(settings.train, lr=lr, lr_sweep=None)
        one = settings.with_sections(
            train=train, run=dataclasses.replace(settings.run, name=f"{name}-lr{lr:g}")
        )
        runs.append((lr, run_once(one, prefix, "fine-tuning run", _finetune, log)))
    scores = [validation_score(json.loads((r.path / "results.json").read_text())) for _, r in runs]
    best = scores.index(max(scores))
    tried = ", ".join(f"lr {lr:g} validation {v:.4f}" for (lr, _), v in zip(runs, scores, strict=True))
    log(f"lr sweep: {tried} -> lr {runs[best][0]:g}")
    sweep = {
        "rates": [lr for lr, _ in runs],
        "validation": scores,
        "chosen_lr": runs[best][0],
        "runs": [str(r.path) for _, r in runs],
    }
    with atomic_dir(main.path) as tmp:
        shutil.copytree(runs[best][1].path, tmp, dirs_exist_ok=True)
        results = json.loads((tmp / "results.json").read_text()) | {"lr_sweep": sweep}
        write_json(tmp / "results.json", results)
    return RunDir(main.path)


def _finetune(s: FinetuneSettings, r: Run) -> None:
    mcfg, tcfg, tc, run, d, log = s.model, s.train, s.task, r.dir, r.dist, r.log
    task, tok = load_task_data(tc), load_tokenizer(resolve_source(tc.data_dir))
    if tok.vocab_size != mcfg.vocab_size:
        raise CheckpointError(
            f"vocab_size: the model ({tc.init}) has {mcfg.vocab_size} but the tokenizer {tok.path} has "
            f"{tok.vocab_size}"
        )
    run.prepare(r.flat, s.run.resume)
    data, hit = encode_task(task, tok, mcfg.max_length, tc.cache_dir)
    train, test = data["train"], data["test"]
    model, transfer = build_classifier(mcfg, task.num_labels, tc, tcfg.seed)
    if d.main:
        write_json(
            run.path / "data.json",
            task.description | {"label_names": task.label_names, "tokenizer": tok.path, "cache_hit": hit},
        )
        write_json(run.path / "init.json", transfer)
    log(
        f"task {tc.task}: {len(task.train):,} train / {len(task.test):,} test, {task.num_labels} labels; "
        f"init {transfer['init']} ({len(transfer['loaded'])} tensors loaded, {len(transfer['fresh'])} fresh)"
    )
    log(describe(mcfg))
    objective, teacher, train = _objective(tc, task, train, tok, mcfg.max_length)
    device = d.device(pick_device(tcfg.device))
    trainer = Trainer(model, objective, train, tcfg, run, dist=d)
    best = BestOnValidation(run, model) if task.validation and d.main else None

    def evaluate(m: nn.Module) -> dict[str, Any]:
        metrics = objective.evaluate(
            m, data.get("validation", test), tc.eval_batch_size, device, tcfg.precision
        )
        if best is not None:
            best.update(metrics["accuracy"], trainer.progress.epoch, trainer.progress.step)
        return metrics

    trainer.evaluate_fn = evaluate
    if s.run.resume and trainer.resume():
        step, note = trainer.progress.step, trainer.layout_note()
        log(f"resumed {run.path} at step {step} of {trainer.total_steps}{note}")
    if tcfg.patience:
        trainer.stop_when = patience_stop(
            tcfg.patience, [m["eval"]["accuracy"] for m in run.read_metrics() if "eval" in m]
        )
    result = trainer.fit()
    if d.main:
        _finish(run, model, task, test, tc, tcfg, tok.path, device, result, best, transfer, log, teacher)


def _objective(
    tc: TaskConfig, task: TaskData, train: TokenData, tok: TokenizerInfo, max_length: int
) -> tuple[ClassificationObjective, Committee | None, TokenData]:
    """Cross-entropy on the labels; with a teacher, distillation on its soft probabilities (computed once
    here and attached to the training data, which `distill_unlabelled` extends with unlabelled text)."""
    if not tc.teacher:
        return ClassificationObjective(task.num_labels), None, train
    teacher = load_teacher(tc.teacher, task.label_names)
    if tc.distill_unlabelled:
        train = with_unlabelled(train, tc.distill_unlabelled, tok, max_length)
    train.soft = teacher_probabilities(teacher, train, tc.distill_temperature)
    return DistillationObjective(task.num_labels, tc.distill_temperature, tc.distill_alpha), teacher, train


def _finish(
    run: RunDir,
    model: TinyBertForSequenceClassification,
    task: TaskData,
    test: TokenData,
    tc: TaskConfig,
    tcfg: TrainConfig,
    tokenizer: str,
    device: torch.device,
    result: dict[str, Any],
    best: BestOnValidation | None,
    transfer: dict[str, Any],
    log: Callable[[str], None],
    teacher: Committee | None = None,
) -> None:
    """After training (rank 0): the chance-level warning, the selected model's test predictions, results
    (with a distilled model's comparison to its teacher)."""
    training = {k: v for k, v in result.items() if k != "final_eval"}
    warning = chance_warning(run.read_metrics(), task.num_labels, tcfg.lr)
    if warning:
        training["warning"] = warning
        log(f"warning: {warning}")
    results = summarize(run, task) | {"training": training, "init": transfer["init"]}
    results["precision"] = tcfg.precision
    selected = best.restore() if best is not None else None  # the model of the best validation epoch
    probs = save_outputs(run, model, task, test, tc, tcfg.precision, tokenizer, device)
    if selected is not None:  # the test split, read once (the probabilities just saved)
        assert test.labels is not None
        results["test"] = selected | classification_metrics(
            probs.argmax(1), test.labels, task.num_labels, matrix=True
        )
    else:  # no validation split: the final epoch was evaluated on the test split, as these predictions
        assert test.labels is not None
        metrics = classification_metrics(probs.argmax(1), test.labels, task.num_labels, matrix=True)
        if "confusion_matrix" in metrics:  # written once, and only up to CONFUSION_MATRIX_MAX_LABELS
            results["final_epoch"]["confusion_matrix"] = metrics["confusion_matrix"]
    if teacher is not None:
        assert tc.teacher is not None
        results["distill"] = distill_record(
            tc.teacher, teacher, test, probs, tc.distill_temperature, tc.distill_alpha
        ) | {"unlabelled": tc.distill_unlabelled}
    run.finish(results)
    log(done_message(results, run))


def chance_warning(metrics: list[dict[str, Any]], num_labels: int, lr: float) -> str | None:
    """A warning when the training loss was still at chance in the run's last epoch (a run that learnt
    later gets none), with advice that fits the run's lr."""
    stuck = epochs_at_chance(metrics, num_labels)
    last = max((int(m["epoch"]) for m in metrics if "loss" in m and "eval" not in m), default=-1)
    if not stuck or stuck[-1] != last:
        return None
    advice = (
        f"a tiny model needs a larger lr (e.g. --config tiny-finetune: lr 1e-3; this run: {lr:g})"
        if lr < 1e-3
        else f"this run's lr {lr:g} is already large: check the labels and the text column"
    )
    return (
        f"training loss stayed at ln({num_labels}) = {np.log(num_labels):.3f} (chance) for all of epoch(s) "
        f"{', '.join(map(str, stuck))}, the last one included: the model did not learn; {advice}"
    )


def epochs_at_chance(metrics: list[dict[str, Any]], num_labels: int, tol: float = 0.03) -> list[int]:
    """Epochs in which every logged training loss is within `tol` (relative) of ln(num_labels): the loss of
    a uniform guess, i.e. nothing was learnt in that epoch."""
    chance = float(np.log(num_labels))
    by_epoch: dict[int, list[float]] = {}
    for m in metrics:
        if "loss" in m and "eval" not in m:
            by_epoch.setdefault(int(m["epoch"]), []).append(float(m["loss"]))
    return [
        e for e, losses in sorted(by_epoch.items()) if all(abs(x - chance) <= tol * chance for x in losses)
    ]


def done_message(results: dict[str, Any], run: RunDir) -> str:
    fe, be = results["final_epoch"], results["best_epoch"]
    on = results["evaluated_each_epoch_on"]
    test = (
        f"; test {results['test']['accuracy']:.4f} (epoch {results['test']['epoch']})"
        if "test" in results
        else ""
    )
    return (
        f"done: {on} accuracy final epoch {fe['accuracy']:.4f} (epoch {fe['epoch']}), best "
        f"{be['accuracy']:.4f} "
        f"(epoch {be['epoch']}){test} -> {run.path}"
    )


def encode_task(
    task: TaskData, tok: TokenizerInfo, max_length: int, cache_dir: str | None
) -> tuple[dict[str, TokenData], bool]:
    """Token arrays of the task's splits (train, test and, when present, validation); cached."""
    records = {"train": task.train, "test": task.test} | (
        {"validation": task.validation} if task.validation else {}
    )
    splits, hit = encode_records_cached(tok, records, task.description, max_length, cache_dir)
    return {s: TokenData(a["ids"], a["lengths"], a["labels"]) for s, a in splits.items()}, hit


def patience_stop(patience: int, history: list[float]) -> Callable[[dict[str, Any]], bool]:
    """`Trainer.stop_when` for fine-tuning: True once the last `patience` validation accuracies brought no
    improvement on the best before them (`history`: the accuracies of a resumed run's evaluations so far;
    every rank computes the same, from the same evaluations)."""

    def stop(metrics: dict[str, Any]) -> bool:
        history.append(float(metrics["accuracy"]))
        best_at = max(range(len(history)), key=lambda i: (history[i], -i))  # ties: the earlier one
        return len(history) - 1 - best_at >= patience

    return stop


class BestOnValidation:
    """The weights of the best validation epoch so far (RUN/best.safetensors + best.json, written
    atomically, so a resumed run keeps them); ties keep the earlier epoch."""

    def __init__(self, run: RunDir, model: TinyBertForSequenceClassification):
        self.weights, self.meta, self.model = run.path / "best.safetensors", run.path / "best.json", model
        self.best: dict[str, Any] | None = json.loads(self.meta.read_text()) if self.meta.is_file() else None

    def update(self, accuracy: float, epoch: int, step: int) -> None:
        if self.best is None or accuracy > self.best["validation_accuracy"]:
            save_weights(self.model, self.weights)
            self.best = {"validation_accuracy": accuracy, "epoch": epoch, "step": step}
            write_json(self.meta, self.best)

    def restore(self) -> dict[str, Any]:
        """Load the best epoch's weights into the model; returns which epoch that was."""
        assert self.best is not None, "no validation evaluation was recorded"
        load_state(self.model, read_weights(self.weights), str(self.weights))
        return {"selected_on": "validation"} | self.best


def save_outputs(
    run: RunDir,
    model: TinyBertForSequenceClassification,
    task: TaskData,
    test: TokenData,
    tc: TaskConfig,
    precision: str,
    tokenizer: str,
    device: torch.device,
) -> np.ndarray:
    """The final model and its test-set probabilities (same precision as every evaluation); returns them."""
    probs = class_probabilities(model, test, tc.eval_batch_size, device, precision)
    assert test.labels is not None
    np.savez_compressed(run.path / "test_predictions.npz", probs=probs.astype(np.float32), labels=test.labels)
    save_model(model, run.path, label_names=task.label_names, tokenizer=tokenizer, task=tc.task)
    return probs


def summarize(run: RunDir, task: TaskData) -> dict[str, Any]:
    """Final-epoch and best-epoch results from the evaluation records (both kept: which one the paper
    reported is unknown), on the validation split when the run has one, else on the test split."""
    evals = [m for m in run.read_metrics() if "eval" in m]
    if not evals:
        raise TinylmError(f"{run.path}: no evaluation records")
    per_epoch = [
        {
            "epoch": m["epoch"],
            "step": m["step"],
            "accuracy": m["eval"]["accuracy"],
            "macro_f1": m["eval"]["macro_f1"],
        }
        for m in evals
    ]
    best = max(per_epoch, key=lambda r: r["accuracy"])
    final = evals[-1]["eval"]
    return {
        "task": task.name,
        "label_names": task.label_names,
        "final_epoch": {
            "epoch": evals[-1]["epoch"],
            "accuracy": final["accuracy"],
            "macro_f1": final["macro_f1"],
            "per_class_accuracy": final["per_class_accuracy"],
            "top_confusions": final.get("top_confusions", []),
        },
        "best_epoch": best,
        "per_epoch": per_epoch,
        "evaluated_each_epoch_on": "validation" if task.validation else "test",
        "num_train": len(task.train),
        "num_validation": len(task.validation),
        "num_test": len(task.test),
    }


__all__ = ["build_classifier", "finetune", "resolve_model_config"]
