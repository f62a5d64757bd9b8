"""Held-out MLM loss of saved pre-training models, evaluated afresh, next to what their runs recorded.

    TINYLM_DATA_DIR=../shared/data python benchmarks/heldout_mlm.py RUN [RUN/snapshots/tokens-N ...]

Each RUN is a `tinylm pretrain` run directory (or one of its snapshots); the corpus settings come from
the run's config.yaml, so the held-out articles, masks (seed 1234) and unigram baseline are the run's
own. This is how the stale Q/K/V cache was measured (benchmarks/README.md, "Pre-training recipe").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import yaml

from tinylm.data.corpus import load_wiki_corpus
from tinylm.data.sources import resolve_source
from tinylm.data.tokenize import load_tokenizer
from tinylm.data.tokens import TokenData
from tinylm.machine import cpu_name
from tinylm.model_dir import load_model
from tinylm.objectives import MLMObjective, unigram_log_probs


def run_dir(model_dir: Path) -> Path:
    return model_dir.parent.parent if model_dir.parent.name == "snapshots" else model_dir


def recorded(model_dir: Path) -> float:
    meta = json.loads((model_dir / "model.json").read_text())
    if "snapshot" in meta:
        return float(meta["snapshot"]["eval"]["mlm_loss"])
    return float(json.loads((model_dir / "results.json").read_text())["final_eval"]["mlm_loss"])


def main(paths: list[str]) -> None:
    print(f"machine: {cpu_name()}, torch {torch.__version__}")
    for arg in paths:
        model_dir = Path(arg)
        c = yaml.safe_load((run_dir(model_dir) / "config.yaml").read_text())
        source = resolve_source(c["data_dir"])
        tok = load_tokenizer(source)
        corpus = load_wiki_corpus(
            source,
            tok,
            c["num_articles"],
            c["corpus_seed"],
            c["max_length"],
            c["eval_articles"],
            c["cache_dir"],
        )
        objective = MLMObjective(tok.vocab_size, unigram=unigram_log_probs(corpus.train.ids, tok.vocab_size))
        model, _ = load_model(model_dir)
        ev = objective.evaluate(
            model, TokenData(corpus.eval.ids, corpus.eval.lengths), 64, torch.device("cpu"), "fp32"
        )
        print(
            f"{model_dir}: recorded {recorded(model_dir):.3f}, evaluated afresh {ev['mlm_loss']:.3f} "
            f"(accuracy {ev['mlm_accuracy']:.3f}), unigram {ev['unigram_loss']:.3f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
