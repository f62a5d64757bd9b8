"""`tinylm pretrain`: MLM pre-training of a TinyBert on a nested Wikipedia subset."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tinylm import distributed
from tinylm.config import CorpusConfig, ModelConfig, RunConfig, TrainConfig, flat_dict
from tinylm.data.corpus import WikiCorpus, load_wiki_corpus
from tinylm.data.sources import DataSource, resolve_source
from tinylm.data.tokenize import TokenizerInfo, load_tokenizer
from tinylm.distributed import Dist
from tinylm.errors import ConfigError
from tinylm.fileio import DirLock, atomic_dir, write_json
from tinylm.model import TinyBertForMaskedLM, describe, parameter_counts
from tinylm.objectives import MLMObjective, unigram_log_probs
from tinylm.predict import TokenData
from tinylm.runs import RunDir, run_name
from tinylm.train import Progress, Trainer, pick_device, resolve_precision
from tinylm.weights import save_model

SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "corpus": CorpusConfig,
    "run": RunConfig,
}


def load_corpus(ccfg: CorpusConfig, max_length: int, source: DataSource, tok: TokenizerInfo) -> WikiCorpus:
    """The pre-training corpus a config describes: the first N articles of the seeded order, or an
    overlap-controlled selection."""
    c = ccfg
    if c.selection == "nested":
        return load_wiki_corpus(
            source, tok, c.num_articles, c.corpus_seed, max_length, c.eval_articles, c.cache_dir, c.packing
        )
    from tinylm.overlap import load_selected_corpus

    assert c.selection_task is not None  # checked by CorpusConfig.validate
    return load_selected_corpus(
        source,
        tok,
        c.selection_task,
        c.selection,
        c.num_articles,
        c.selection_pool,
        c.corpus_seed,
        max_length,
        c.eval_articles,
        c.cache_dir,
    )


class Snapshots:
    """Keeps the model at given training-token counts (E0's checkpoints): RUN/snapshots/tokens-N holds
    model.safetensors + model.json, with the step, the tokens actually seen and a held-out evaluation.
    Written once, atomically; a resumed run skips the ones it has."""

    def __init__(
        self, run: RunDir, model: TinyBertForMaskedLM, counts: list[int], evaluate: Callable, tokenizer: str
    ):
        self.root, self.model, self.evaluate, self.tokenizer = (
            run.path / "snapshots",
            model,
            evaluate,
            tokenizer,
        )
        self.pending = [n for n in counts if not (self.root / f"tokens-{n}").is_dir()]

    def __call__(self, p: Progress) -> None:
        """Save every pending count the run has reached (called before the first step and after each)."""
        while self.pending and p.tokens >= self.pending[0]:
            n = self.pending.pop(0)
            ev = self.evaluate(self.model)
            with atomic_dir(self.root / f"tokens-{n}") as tmp:
                save_model(
                    self.model,
                    tmp,
                    tokenizer=self.tokenizer,
                    snapshot={"target_tokens": n, "tokens": p.tokens, "step": p.step, "eval": ev},
                )

    def summary(self) -> list[dict[str, Any]]:
        """One row per snapshot on disk: target and actual tokens, step, held-out MLM loss and baseline."""
        rows = []
        for d in sorted(self.root.glob("tokens-*"), key=lambda d: int(d.name.split("-")[1])):
            snap = json.loads((d / "model.json").read_text())["snapshot"]
            rows.append({k: snap[k] for k in ("target_tokens", "tokens", "step")} | snap["eval"])
        return rows


def pretrain(
    built: dict[str, Any],
    log: Callable[[str], None] = print,
    on_step: Callable[[Progress], None] | None = None,
) -> RunDir:
    """Pre-train per the resolved config sections; returns the (finished) run directory."""
    tcfg: TrainConfig = resolve_precision(built["train"])  # the saved config keeps "auto"
    rcfg: RunConfig = built["run"]
    flat = flat_dict(built)
    d = distributed.init()  # a torchrun job: rank 0 writes, every rank trains its part of each batch
    run = RunDir(Path(rcfg.out) / (rcfg.name or run_name("pretrain", flat)), writer=d.main)
    if run.is_finished():
        log(f"{run.path}: already finished; reusing it (results.json)")
        return run
    with DirLock(run.path, "pre-training run") if d.main else contextlib.nullcontext():
        _pretrain(run, built | {"train": tcfg}, flat, log if d.main else _quiet, on_step, d)
    distributed.barrier(d)
    return run


def _pretrain(
    run: RunDir,
    built: dict[str, Any],
    flat: dict[str, Any],
    log: Callable[[str], None],
    on_step: Callable[[Progress], None] | None,
    d: Dist,
) -> None:
    mcfg: ModelConfig = built["model"]
    tcfg: TrainConfig = built["train"]
    ccfg: CorpusConfig = built["corpus"]
    rcfg: RunConfig = built["run"]
    source = resolve_source(ccfg.data_dir)
    tok = load_tokenizer(source)
    if tok.vocab_size != mcfg.vocab_size:
        raise ConfigError(
            [f"vocab_size: the model has {mcfg.vocab_size} but the tokenizer {tok.path} has {tok.vocab_size}"]
        )
    corpus = load_corpus(ccfg, mcfg.max_length, source, tok)
    run.prepare(flat, rcfg.resume)  # config.yaml only once the settings and the data are known to be good
    if d.main:
        write_json(run.path / "data.json", corpus.description | {"tokenizer": tok.path})
    log(
        f"corpus: {ccfg.num_articles:,} articles ({ccfg.selection}, seed {ccfg.corpus_seed}), "
        f"{corpus.description['tokens']:,} tokens; held out {ccfg.eval_articles:,}"
    )
    torch.manual_seed(tcfg.seed)
    model = TinyBertForMaskedLM(mcfg)
    log(describe(mcfg))
    unigram = unigram_log_probs(corpus.train.ids, mcfg.vocab_size)
    objective = MLMObjective(
        mcfg.vocab_size, ccfg.mask_prob, ccfg.mask_replace, ccfg.mask_random, seed=tcfg.seed, unigram=unigram
    )
    eval_data, train = (TokenData(s.ids, s.lengths) for s in (corpus.eval, corpus.train))
    device = d.device(pick_device(tcfg.device))
    evaluate = lambda m: objective.evaluate(m, eval_data, 64, device, tcfg.precision)  # noqa: E731
    snapshots = Snapshots(run, model, tcfg.snapshot_counts() if d.main else [], evaluate, tok.path)
    trainer = Trainer(
        model, objective, train, tcfg, run, evaluate=evaluate, on_step=_both(snapshots, on_step), dist=d
    )
    if rcfg.resume and trainer.resume():
        log(f"resumed {run.path} at step {trainer.progress.step} of {trainer.total_steps}")
    log(f"device {trainer.device}, {tcfg.precision}, {trainer.total_steps:,} steps of {tcfg.batch_size}")
    snapshots(trainer.progress)  # tokens-0: the initial model
    result = trainer.fit()
    if not d.main:
        return
    save_model(model, run.path, tokenizer=tok.path)
    extra = {"snapshots": snapshots.summary()} if tcfg.snapshot_tokens else {}
    run.finish(
        result
        | {"kind": "pretrain", "parameters": parameter_counts(mcfg), "data": corpus.description}
        | {"precision": tcfg.precision}
        | extra
    )
    log(done_line(result, run))


def done_line(result: dict[str, Any], run: RunDir) -> str:
    ev = result["final_eval"]
    return (
        f"done: {result['steps']} steps, held-out MLM loss {ev.get('mlm_loss', float('nan')):.4f} "
        f"(unigram baseline {ev.get('unigram_loss', float('nan')):.4f}), accuracy "
        f"{ev.get('mlm_accuracy', float('nan')):.4f} (unigram {ev.get('unigram_accuracy', float('nan')):.4f})"
        f" -> {run.path}"
    )


def _quiet(*_: Any) -> None:
    return None


def _both(first: Callable[[Progress], None], second: Callable[[Progress], None] | None) -> Callable:
    def call(p: Progress) -> None:
        first(p)
        if second is not None:
            second(p)

    return call
