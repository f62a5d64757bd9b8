"""`tinylm pretrain`: MLM pre-training of a TinyBert on a nested Wikipedia subset (or a selected one)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from tinylm.config import CorpusConfig
from tinylm.data.corpus import WikiCorpus, load_file_corpus, load_wiki_corpus
from tinylm.data.selection import load_selected_corpus
from tinylm.data.sources import DataSource, resolve_source
from tinylm.data.tokenize import TokenizerInfo, load_tokenizer
from tinylm.data.tokens import TokenData
from tinylm.device import pick_device
from tinylm.errors import ConfigError
from tinylm.fileio import atomic_dir, write_json
from tinylm.lifecycle import Run, run_once
from tinylm.model import TinyBertForMaskedLM, describe, parameter_counts
from tinylm.model_dir import save_model
from tinylm.objectives import MLMObjective, unigram_log_probs
from tinylm.runs import RunDir
from tinylm.settings import PretrainSettings
from tinylm.train import Progress, Trainer


def load_corpus(ccfg: CorpusConfig, max_length: int, source: DataSource, tok: TokenizerInfo) -> WikiCorpus:
    """The pre-training corpus a config describes: the first N documents of the seeded order (Wikipedia or
    a `file:` corpus), or an overlap-controlled selection."""
    c = ccfg
    if c.corpus != "wikipedia":
        return load_file_corpus(
            c.corpus, tok, c.num_articles, c.corpus_seed, max_length, c.eval_articles, c.cache_dir, c.packing
        )
    if c.selection == "nested":
        return load_wiki_corpus(
            source, tok, c.num_articles, c.corpus_seed, max_length, c.eval_articles, c.cache_dir, c.packing
        )
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
        self,
        run: RunDir,
        model: TinyBertForMaskedLM,
        counts: list[int],
        evaluate: Callable[[nn.Module], dict[str, Any]],
        tokenizer: str,
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
    settings: PretrainSettings,
    log: Callable[[str], None] = print,
    on_step: Callable[[Progress], None] | None = None,
) -> RunDir:
    """Pre-train per the settings; returns the (finished) run directory."""
    return run_once(settings, "pretrain", "pre-training run", lambda s, run: _pretrain(s, run, on_step), log)


def mlm_objective(s: PretrainSettings, unigram: np.ndarray) -> MLMObjective:
    """The run's masking objective from its corpus (masking) and train (seed, loss path) settings."""
    c = s.corpus
    return MLMObjective(
        s.model.vocab_size,
        c.mask_prob,
        c.mask_replace,
        c.mask_random,
        seed=s.train.seed,
        unigram=unigram,
        mask_prob_start=c.mask_prob_start,
        predict_prob=c.predict_prob,
        window_start=c.attention_window_start,
        window_share=c.attention_window_share,
        sampled=c.sampled_softmax,
        sampled_share=c.sampled_softmax_share,
        fused=s.train.fused_loss,
    )


def _pretrain(s: PretrainSettings, r: Run, on_step: Callable[[Progress], None] | None) -> None:
    mcfg, tcfg, ccfg, run, d, log = s.model, s.train, s.corpus, r.dir, r.dist, r.log
    source = resolve_source(ccfg.data_dir)
    tok = load_tokenizer(source)
    if tok.vocab_size != mcfg.vocab_size:
        raise ConfigError(
            [f"vocab_size: the model has {mcfg.vocab_size} but the tokenizer {tok.path} has {tok.vocab_size}"]
        )
    corpus = load_corpus(ccfg, mcfg.max_length, source, tok)
    run.prepare(r.flat, s.run.resume)  # config.yaml only once the settings and the data are known to be good
    if d.main:
        write_json(run.path / "data.json", corpus.description | {"tokenizer": tok.path})
    log(
        f"corpus: {corpus.description['corpus']}, {ccfg.num_articles:,} documents ({ccfg.selection}, seed "
        f"{ccfg.corpus_seed}), "
        f"{corpus.description['tokens']:,} tokens; held out {ccfg.eval_articles:,}"
    )
    torch.manual_seed(tcfg.seed)
    model = TinyBertForMaskedLM(mcfg)
    log(describe(mcfg))
    objective = mlm_objective(s, unigram_log_probs(corpus.train.ids, mcfg.vocab_size))
    eval_data, train = (TokenData(c.ids, c.lengths) for c in (corpus.eval, corpus.train))
    device = d.device(pick_device(tcfg.device))

    def evaluate(m: nn.Module) -> dict[str, Any]:
        return objective.evaluate(m, eval_data, 64, device, tcfg.precision)

    snapshots = Snapshots(run, model, tcfg.snapshot_counts() if d.main else [], evaluate, tok.path)
    trainer = Trainer(
        model, objective, train, tcfg, run, evaluate=evaluate, on_step=_both(snapshots, on_step), dist=d
    )
    if s.run.resume and trainer.resume():
        step, note = trainer.progress.step, trainer.layout_note()
        log(f"resumed {run.path} at step {step} of {trainer.total_steps}{note}")
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


def _both(
    first: Callable[[Progress], None], second: Callable[[Progress], None] | None
) -> Callable[[Progress], None]:
    def call(p: Progress) -> None:
        first(p)
        if second is not None:
            second(p)

    return call
