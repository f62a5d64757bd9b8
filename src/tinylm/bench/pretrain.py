"""`tinylm bench`: throughput benchmarks against the transformers reference, measured in one process.

`tinylm bench pretrain` times full MLM training steps (forward, loss, backward, AdamW step) of
tinylm and of transformers' `BertForMaskedLM` with the same architecture, batch, sequence length,
masking and optimizer settings, alternating between the two so that machine noise hits both, and
reports medians, their ratio, tinylm's achieved FLOP/s next to the machine's matmul FLOP/s, and the
peak resident memory of a tinylm BERT-6 step (in a child process).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tinylm.config import ModelConfig, TrainConfig
from tinylm.device import bf16_supported
from tinylm.hf import hf_config
from tinylm.machine import cpu_name
from tinylm.model import TinyBertForMaskedLM, train_flops_per_token
from tinylm.objectives import MLMObjective
from tinylm.perf import tune_cpu_allocator
from tinylm.predict import autocast
from tinylm.registry import BENCH_SHAPES as SHAPES
from tinylm.registry import BERT_VOCAB_SIZE, CLS_ID, NAMED_MODELS, PAPER_CORPUS_SEED, SEP_ID
from tinylm.train import make_optimizer


def shape_config(shape: str, **overrides: Any) -> ModelConfig:
    return ModelConfig(**NAMED_MODELS[SHAPES.get(shape, shape)] | overrides)


def matmul_flops(dtype: torch.dtype, n: int = 2048, reps: int = 10, device: str = "cpu") -> float:
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    _sync()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync()
    return 2 * n**3 * reps / (time.perf_counter() - t)


def sample_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """Real Wikipedia samples when TINYLM_DATA_DIR is set (full-length ones), else random ids."""
    g = torch.Generator().manual_seed(seed)
    try:
        from tinylm.data.corpus import load_wiki_corpus
        from tinylm.data.sources import resolve_source
        from tinylm.data.tokenize import load_tokenizer

        src = resolve_source(None)
        if src.local_files("wikipedia") is None:
            raise LookupError
        corpus = load_wiki_corpus(src, load_tokenizer(src), 2000, PAPER_CORPUS_SEED, seq, 100)
        full = torch.from_numpy(corpus.train.ids[corpus.train.lengths == seq][:batch].astype("int64"))
        if len(full) == batch:
            return full
    except Exception:  # noqa: BLE001 - the benchmark still runs without data
        pass
    ids = torch.randint(1000, vocab, (batch, seq), generator=g)
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    return ids


class Runner:
    """One training step function per implementation, sharing batch, masking and optimizer settings."""

    def __init__(
        self,
        impl: str,
        cfg: ModelConfig,
        ids: torch.Tensor,
        precision: str,
        seed: int = 0,
        device: str = "cpu",
    ):
        torch.manual_seed(seed)
        self.impl, self.precision, self.ids, self.device = impl, precision, ids, torch.device(device)
        self.masker = MLMObjective(cfg.vocab_size, seed=seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.attention = torch.ones_like(ids, device=self.device)
        self.model: nn.Module
        if impl == "tinylm":
            self.model = TinyBertForMaskedLM(cfg)
        else:
            from transformers import BertConfig, BertForMaskedLM

            self.model = BertForMaskedLM(BertConfig.from_dict(hf_config(cfg, "mlm")))
        self.model = self.model.to(self.device)  # type: ignore[arg-type]
        self.model.train()
        tcfg = TrainConfig(lr=5e-5, weight_decay=0.01)
        if impl == "tinylm":
            self.opt = make_optimizer(self.model, tcfg, self.device)
        else:  # the reference: torch AdamW with its defaults, as the paper's code
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=5e-5, weight_decay=0.01)

    def step(self) -> None:
        """One training step. tinylm: the trainer's own step (`MLMObjective.loss`: masking, logits at the
        masked rows only, the fused loss with its hit count), the summed loss divided by its count."""
        dev = self.device
        if self.impl == "tinylm":
            batch = {"input_ids": self.ids.to(dev), "attention": self.attention}
            with autocast(dev, self.precision):
                total, stats = self.masker.loss(self.model, batch)
            loss = total / max(1, stats["count"])
        else:
            inputs, positions, targets = self.masker.mask(self.ids, self.gen)
            inputs, positions, targets = inputs.to(dev), positions.to(dev), targets.to(dev)
            labels = torch.full(self.ids.shape, -100, dtype=torch.long, device=dev)
            labels.view(-1)[positions] = targets
            with autocast(dev, self.precision):
                loss = self.model(input_ids=inputs, attention_mask=self.attention, labels=labels).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_steps(runners: dict[str, Runner], steps: int, warmup: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in runners}
    for r in runners.values():
        for _ in range(warmup):
            r.step()
    for _ in range(steps):  # alternate so drifts in machine speed hit every implementation alike
        for k, r in runners.items():
            _sync()
            t = time.perf_counter()
            r.step()
            _sync()
            times[k].append(time.perf_counter() - t)
    return times


def peak_memory_child(shape: str, batch: int, seq: int, precision: str, steps: int = 2) -> float:
    """Peak RSS (GiB) of a fresh process doing tinylm training steps on `shape`."""
    code = (
        "import resource,torch;from tinylm.bench.pretrain import Runner,shape_config,sample_batch;"
        "from tinylm.perf import tune_cpu_allocator;tune_cpu_allocator();"
        f"r=Runner('tinylm',shape_config('{shape}'),sample_batch({batch},{seq},{BERT_VOCAB_SIZE}),'{precision}');"
        f"[r.step() for _ in range({steps})];"
        "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"
    )
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child would report the parent's
    # peak
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 2**20  # KiB -> GiB


def _time_shape(
    shape: str,
    precision: str,
    ids: torch.Tensor,
    steps: int,
    warmup: int,
    peak: float,
    reference: bool,
    device: str = "cpu",
) -> dict[str, Any]:
    """One row of `bench pretrain`: median step times of tinylm (and transformers) on one shape."""
    cfg = shape_config(shape)
    runners = {"tinylm": Runner("tinylm", cfg, ids, precision, device=device)}
    if reference:
        runners["transformers"] = Runner("transformers", cfg, ids, precision, device=device)
    times = time_steps(runners, steps, warmup)
    tokens = ids.numel()
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = train_flops_per_token(cfg, ids.shape[1], mlm_fraction=0.15) * tokens / med["tinylm"]
    row = {
        "shape": shape,
        "layers/hidden/heads/ffn": f"{cfg.layers}/{cfg.hidden_size}/{cfg.heads}/{cfg.ffn_size}",
        "precision": precision,
        "tinylm_tokens_per_s": round(tokens / med["tinylm"], 1),
        "tinylm_step_s": round(med["tinylm"], 4),
        "tinylm_gflops": round(flops / 1e9, 1),
        "share_of_matmul_peak": round(flops / peak, 3),
    }
    if reference:
        row["transformers_tokens_per_s"] = round(tokens / med["transformers"], 1)
        row["speedup"] = round(med["transformers"] / med["tinylm"], 2)
    return row


def bench_pretrain(
    shapes: list[str],
    precisions: list[str],
    steps: int,
    warmup: int,
    batch: int,
    seq: int,
    reference: bool = True,
    memory: bool = True,
    log: Callable[[str], None] = print,
    device: str = "cpu",
) -> dict[str, Any]:
    allocator = tune_cpu_allocator() if device == "cpu" else False  # as tinylm training does, for both alike
    peak = {"fp32": matmul_flops(torch.float32, device=device)}
    if bf16_supported(torch.device(device)):
        peak["bf16"] = matmul_flops(torch.bfloat16, device=device)
    ids = sample_batch(batch, seq, BERT_VOCAB_SIZE)
    rows = []
    for shape in shapes:
        for precision in precisions:
            if precision == "bf16" and "bf16" not in peak:
                continue
            log(f"timing {shape} {precision}: {steps} steps after {warmup} warm-up (alternating)")
            rows.append(_time_shape(shape, precision, ids, steps, warmup, peak[precision], reference, device))
            log("  " + json.dumps(rows[-1]))
    mem = {}
    if memory and device == "cpu":
        for precision in precisions:
            if precision in peak:
                mem[f"bert6_{precision}_peak_rss_gib"] = round(
                    peak_memory_child("bert6", batch, seq, precision), 2
                )
    return {
        "command": "tinylm bench pretrain " + " ".join(sys.argv[3:]),
        "machine": {
            "cpu": cpu_name(),
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "matmul_gflops": {k: round(v / 1e9, 1) for k, v in peak.items()},
        },
        "settings": {
            "batch": batch,
            "seq": seq,
            "steps": steps,
            "warmup": warmup,
            "mask_prob": 0.15,
            "dropout": 0.1,
            "optimizer": "AdamW lr 5e-5 wd 0.01 (tinylm: fused, no decay on bias/LN)",
            "glibc_allocator_tuned_for_both": allocator,
        },
        "rows": rows,
        "memory": mem,
    }


def format_table(result: dict[str, Any]) -> str:
    head = (
        "| model | precision | tinylm tok/s | transformers tok/s | speed-up | tinylm GFLOP/s | "
        "share of matmul peak |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['layers/hidden/heads/ffn']} | {r['precision']} | {r['tinylm_tokens_per_s']:,.0f} | "
            f"{r.get('transformers_tokens_per_s', float('nan')):,.0f} | {r.get('speedup', float('nan'))}× | "
            f"{r['tinylm_gflops']} | {r['share_of_matmul_peak']:.0%} |"
        )
    m = result["machine"]
    lines.append("")
    lines.append(
        f"Machine: {m['cpu']}, {m['threads']} threads, torch {m['torch']}; matmul peak (2048², measured): "
        + ", ".join(f"{k} {v} GFLOP/s" for k, v in m["matmul_gflops"].items())
    )
    for k, v in result["memory"].items():
        lines.append(
            f"Peak RSS of a fresh process running tinylm BERT-6 training steps, batch "
            f"{result['settings']['batch']} "
            f"({k.split('_')[1]}): {v} GiB"
        )
    return "\n".join(lines)
