"""`tinylm bench unpad`: training steps with the blocks' per-token work on the real tokens only (`Packed`)
vs on the padded batch, on real data, in one process.

Fine-tuning batches of short texts are mostly padding (AG News: half of a batch of 32 trimmed to its
longest row), pre-training batches of Wikipedia leads about a quarter. Each case times the trainer's
own step (objective loss, backward, AdamW; per-row randomness active as in training: same dropout masks
in both arms) on the same batches, with two copies of one initial model, the arms alternated so that
machine noise hits both; it reports real tokens per second, the ratio, and the padding share, with the
CPU named. The arms compute the same numbers (tests/test_model.py checks logits and gradients).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and numpy load when a case runs, not when the CLI builds its parser
    from tinylm.data.tokens import TokenData
    from tinylm.model import TinyBertForMaskedLM, TinyBertForSequenceClassification

#: the cases: name → (data, model settings over the 2/128 model)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "finetune agnews 2/128": ("agnews", {}),
    "finetune dbpedia 2/128": ("dbpedia", {}),
    "finetune agnews 1/128+conv": ("agnews", {"layers": 1, "conv_layers": 2, "conv_channels": 8}),
    "pretrain wikipedia 2/128": ("wikipedia", {"dropout": 0.0, "attention_dropout": 0.0}),
}
BASE = {
    "layers": 2,
    "hidden_size": 128,
    "heads": 2,
    "ffn_size": 512,
    "dropout": 0.1,
    "attention_dropout": 0.1,
}


@dataclass
class Case:
    name: str
    model: TinyBertForMaskedLM | TinyBertForSequenceClassification
    objective: Any
    data: TokenData


def load_case(name: str, samples: int = 300) -> Case:
    """A case's model (fresh init, seed 0), objective and real token data."""
    import numpy as np
    import torch

    from tinylm.config import ModelConfig
    from tinylm.data.corpus import load_wiki_corpus
    from tinylm.data.sources import resolve_source
    from tinylm.data.tasks import load_task
    from tinylm.data.tokenize import encode_texts, load_tokenizer
    from tinylm.data.tokens import TokenData
    from tinylm.model import TinyBertForMaskedLM, TinyBertForSequenceClassification
    from tinylm.objectives import ClassificationObjective, MLMObjective
    from tinylm.registry import PAPER_CORPUS_SEED

    task, extra = CASES[name]
    cfg = ModelConfig(**BASE | extra)
    src = resolve_source(None)
    tok = load_tokenizer(src)
    torch.manual_seed(0)
    if task == "wikipedia":
        corpus = load_wiki_corpus(src, tok, 2000, PAPER_CORPUS_SEED, cfg.max_length, 100)
        data = TokenData(corpus.train.ids, corpus.train.lengths)
        return Case(name, TinyBertForMaskedLM(cfg), MLMObjective(cfg.vocab_size, seed=0), data)
    t = load_task(task, src, samples_per_label_train=samples, samples_per_label_test=1)
    enc = encode_texts(tok, [r.text for r in t.train], cfg.max_length)
    data = TokenData(enc.ids, enc.lengths, np.array([r.label for r in t.train], dtype=np.int64))
    model = TinyBertForSequenceClassification(cfg, len(t.label_names))
    return Case(name, model, ClassificationObjective(len(t.label_names)), data)


def time_case(case: Case, steps: int, warmup: int, batch: int) -> dict[str, Any]:
    """Median step seconds of the padded and the packed arm on the same batches, alternated."""
    import numpy as np
    import torch

    from tinylm.config import TrainConfig
    from tinylm.randomness import activate, rows_of
    from tinylm.train import make_optimizer

    arms = {}
    for unpad in (False, True):
        model = copy.deepcopy(case.model).train()
        model.bert.unpad = unpad
        arms[unpad] = (model, make_optimizer(model, TrainConfig(lr=1e-3), torch.device("cpu")))
    rng = np.random.default_rng(0)
    idx = [rng.choice(len(case.data), batch, replace=False) for _ in range(steps + warmup)]
    times: dict[bool, list[float]] = {False: [], True: []}
    for i, rows in enumerate(idx):
        b = case.data.batch(rows, torch.device("cpu"))
        for unpad, (model, opt) in arms.items():
            t = time.perf_counter()
            with activate(rows_of(0, i, range(batch), case.data.ids.shape[1])):
                loss, stats = case.objective.loss(model, b)
            (loss / max(1, float(stats["count"]))).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= warmup:
                times[unpad].append(time.perf_counter() - t)
    lengths = [case.data.lengths[r] for r in idx[warmup:]]
    real = float(np.mean([ls.sum() for ls in lengths]))
    padded = float(np.mean([ls.max() * len(ls) for ls in lengths]))
    padded_s, packed_s = statistics.median(times[False]), statistics.median(times[True])
    return {
        "case": case.name,
        "real_tokens_per_batch": real,
        "padding_share": 1 - real / padded,
        "padded_tokens_per_s": real / padded_s,
        "packed_tokens_per_s": real / packed_s,
        "speedup": padded_s / packed_s,
    }


def bench_unpad(cases: list[str], steps: int, warmup: int, batch: int) -> dict[str, Any]:
    import torch

    from tinylm.machine import cpu_name
    from tinylm.perf import tune_cpu_allocator

    allocator = tune_cpu_allocator()  # as the trainer does: both arms' tokens/s are the trainer's
    rows = [time_case(load_case(c), steps, warmup, batch) for c in cases]
    return {
        "cpu": cpu_name(),
        "allocator_tuned": allocator,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": batch,
        "steps": steps,
        "cases": rows,
    }


def format_table(res: dict[str, Any]) -> str:
    lines = [
        "| case | real tokens per batch | padding share | padded tokens/s | packed tokens/s "
        "| packed ÷ padded |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["cases"]:
        lines.append(
            f"| {r['case']} | {r['real_tokens_per_batch']:,.0f} | {100 * r['padding_share']:.0f} % | "
            f"{r['padded_tokens_per_s']:,.0f} | {r['packed_tokens_per_s']:,.0f} | {r['speedup']:.2f}× |"
        )
    lines += [
        "",
        f"Batch {res['batch']}, median of {res['steps']} alternated steps per arm (forward, loss, backward, "
        f"AdamW; fp32), {res['threads']} thread(s) on {res['cpu']} (torch {res['torch']}). Tokens/s count "
        f"real tokens only; glibc allocator tuned as in training: "
        f"{'yes' if res.get('allocator_tuned') else 'no'}.",
    ]
    return "\n".join(lines)


def _cmd(args: argparse.Namespace) -> int:
    import torch

    from tinylm.machine import write_benchmark

    if args.threads:
        torch.set_num_threads(args.threads)
    res = bench_unpad(args.cases, args.steps, args.warmup, args.batch)
    return write_benchmark(Path(args.out), "unpad", res, format_table(res))


def add_unpad_parser(bsub: argparse._SubParsersAction[Any]) -> None:
    q = bsub.add_parser(
        "unpad",
        help="training steps on the real tokens only vs on the padded batch (real data)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES), help="cases (default all)")
    q.add_argument("--steps", type=int, default=20, help="timed steps per arm (median; default 20)")
    q.add_argument("--warmup", type=int, default=3, help="untimed steps per arm (default 3)")
    q.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    q.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    q.add_argument("--out", default="benchmarks", help="where to write unpad.{json,md} (default benchmarks/)")
    q.set_defaults(handler=_cmd)
