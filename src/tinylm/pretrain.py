"""`tinylm pretrain`: MLM pre-training of a TinyBert on a nested Wikipedia subset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tinylm.config import CorpusConfig, ModelConfig, RunConfig, TrainConfig, flat_dict
from tinylm.data.corpus import load_wiki_corpus
from tinylm.data.sources import resolve_source
from tinylm.data.tokenize import load_tokenizer
from tinylm.errors import ConfigError
from tinylm.fileio import write_json
from tinylm.model import TinyBertForMaskedLM, describe, parameter_counts
from tinylm.objectives import MLMObjective
from tinylm.predict import TokenData
from tinylm.runs import RunDir, run_name
from tinylm.train import Trainer
from tinylm.weights import save_model

SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "corpus": CorpusConfig,
    "run": RunConfig,
}


def pretrain(built: dict[str, Any], log=print, on_step=None) -> RunDir:
    """Pre-train per the resolved config sections; returns the (finished) run directory."""
    mcfg: ModelConfig = built["model"]
    tcfg: TrainConfig = built["train"]
    ccfg: CorpusConfig = built["corpus"]
    rcfg: RunConfig = built["run"]
    flat = flat_dict(built)
    run = RunDir(Path(rcfg.out) / (rcfg.name or run_name("pretrain", flat)))
    if run.is_finished():
        log(f"{run.path}: already finished; reusing it (results.json)")
        return run
    run.prepare(flat, rcfg.resume)
    source = resolve_source(ccfg.data_dir)
    tok = load_tokenizer(source)
    if tok.vocab_size != mcfg.vocab_size:
        raise ConfigError(
            [f"vocab_size: the model has {mcfg.vocab_size} but the tokenizer {tok.path} has {tok.vocab_size}"]
        )
    if ccfg.selection == "nested":
        corpus = load_wiki_corpus(
            source,
            tok,
            ccfg.num_articles,
            ccfg.corpus_seed,
            mcfg.max_length,
            ccfg.eval_articles,
            ccfg.cache_dir,
        )
    else:
        from tinylm.overlap import load_selected_corpus

        corpus = load_selected_corpus(source, tok, ccfg.selection_task, ccfg.selection, ccfg.num_articles, ccfg.selection_pool,
                                      ccfg.corpus_seed, mcfg.max_length, ccfg.eval_articles, ccfg.cache_dir)  # fmt: skip
    write_json(run.path / "data.json", corpus.description | {"tokenizer": tok.path})
    log(f"corpus: {ccfg.num_articles:,} articles ({ccfg.selection}, seed {ccfg.corpus_seed}), {corpus.description['tokens']:,} tokens; "
        f"held out {ccfg.eval_articles:,}")  # fmt: skip
    torch.manual_seed(tcfg.seed)
    model = TinyBertForMaskedLM(mcfg)
    log(describe(mcfg))
    objective = MLMObjective(
        mcfg.vocab_size, ccfg.mask_prob, ccfg.mask_replace, ccfg.mask_random, seed=tcfg.seed
    )
    eval_data = TokenData(corpus.eval.ids, corpus.eval.lengths)
    trainer = Trainer(
        model, objective, TokenData(corpus.train.ids, corpus.train.lengths), tcfg, run,
        evaluate=lambda m: objective.evaluate(m, eval_data, 64, trainer.device, tcfg.precision), on_step=on_step,
    )  # fmt: skip
    if rcfg.resume and trainer.resume():
        log(f"resumed {run.path} at step {trainer.progress.step} of {trainer.total_steps}")
    log(
        f"device {trainer.device}, precision {tcfg.precision}, {trainer.total_steps:,} steps of {tcfg.batch_size}"
    )
    result = trainer.fit()
    save_model(model, run.path, tokenizer=tok.path)
    run.finish(
        result | {"kind": "pretrain", "parameters": parameter_counts(mcfg), "data": corpus.description}
    )
    ev = result["final_eval"]
    log(f"done: {result['steps']} steps, held-out MLM loss {ev.get('mlm_loss', float('nan')):.4f}, "
        f"accuracy {ev.get('mlm_accuracy', float('nan')):.4f} -> {run.path}")  # fmt: skip
    return run
