"""Inference latency of the deep model, one shallow member and committees of members (claim C4): ms per
input at each batch size, run sequentially, stacked (one batched computation) and in parallel, and the
same models exported to ONNX under onnxruntime. Used by `tinylm bench latency` and the paper's grid."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from tinylm.config import ModelConfig
from tinylm.device import bf16_supported, pick_device
from tinylm.machine import cpu_name
from tinylm.model import TinyBertForSequenceClassification, stack_members
from tinylm.perf import median_seconds, parallel_groups, tune_cpu_allocator
from tinylm.predict import autocast
from tinylm.registry import BERT_VOCAB_SIZE, NAMED_MODELS


def _latency_ms(fn: Callable[[torch.Tensor], Any], ids: torch.Tensor, precision: str, reps: int) -> float:
    def call() -> None:
        with torch.no_grad(), autocast(ids.device, precision):
            fn(ids)

    return median_seconds(call, reps) * 1000


def _in_threads(parts: Sequence[Callable[[torch.Tensor], Any]], ids: torch.Tensor) -> None:
    """Run parts concurrently: CUDA streams on a GPU, threads on a CPU."""
    if ids.is_cuda:
        streams = [torch.cuda.Stream() for _ in parts]
        for st, part in zip(streams, parts, strict=True):
            with torch.cuda.stream(st):
                part(ids)
        return
    parallel_groups(lambda g: parts[g](ids), len(parts))


Case = tuple[str, str, int, Callable[[torch.Tensor], Any], str]  # model, mode, k, fn, critical path


def _one_after_another(models: Sequence[nn.Module]) -> Callable[[torch.Tensor], Any]:
    return lambda x: [m(x) for m in models]


def _concurrently(models: Sequence[nn.Module]) -> Callable[[torch.Tensor], Any]:
    return lambda x: _in_threads(list(models), x)


def latency_cases(ks: list[int], dev: torch.device) -> list[Case]:
    """BERT-6, one BERT-1 and committees of k BERT-1 members run sequentially, stacked and in two parallel
    stacked halves (random weights, dropout off), all on `dev`."""
    no_dropout = {"dropout": 0.0, "attention_dropout": 0.0}
    torch.manual_seed(0)
    deep = (
        TinyBertForSequenceClassification(ModelConfig(**NAMED_MODELS["bert6"] | no_dropout), 4).to(dev).eval()
    )
    shallow_cfg = ModelConfig(**NAMED_MODELS["bert1-h12"] | no_dropout)
    members = [TinyBertForSequenceClassification(shallow_cfg, 4).to(dev).eval() for _ in range(max(ks))]
    cases: list[Case] = [
        ("BERT-6 768/12", "single", 1, deep, "6 blocks"),
        ("BERT-1 768/12", "single", 1, members[0], "1 block"),
    ]
    for k in ks:
        group = members[:k]
        cases.append(
            ("committee of BERT-1", "sequential", k, _one_after_another(group), f"{k} blocks in series")
        )
        cases.append(
            ("committee of BERT-1", "stacked", k, stack_members(group), "1 block (batched over members)")
        )
        if k > 1:
            halves = [stack_members(group[: (k + 1) // 2]), stack_members(group[(k + 1) // 2 :])]
            cases.append(("committee of BERT-1", "parallel", k, _concurrently(halves), "1 block (2 threads)"))
    return cases


def _time_case(case: Case, ids: torch.Tensor, precision: str, reps: int, cores: int) -> dict[str, Any]:
    model, mode, k, fn, depth = case
    if mode == "parallel" and ids.device.type == "cpu":  # two threads, each with half of the cores
        torch.set_num_threads(max(1, cores // 2))
    try:
        ms = _latency_ms(fn, ids, precision, reps)
    finally:
        torch.set_num_threads(cores)
    batch = ids.shape[0]
    return {
        "model": model,
        "mode": mode,
        "k": k,
        "batch": batch,
        "precision": precision,
        "ms_per_batch": round(ms, 2),
        "ms_per_input": round(ms / batch, 3),
        "critical_path": depth,
    }


def onnx_rows(ks: list[int], batches: list[int], seq: int, reps1: int, reps32: int) -> list[dict[str, Any]]:
    """The same models (seed 0 random weights) exported to ONNX and run by onnxruntime (fp32, CPU): what a
    user would deploy. Empty when onnxruntime is not installed."""
    try:
        from tinylm.onnx_export import CommitteeGraph, time_onnx
    except ImportError:
        return []
    no_dropout = {"dropout": 0.0, "attention_dropout": 0.0}
    torch.manual_seed(0)
    deep = TinyBertForSequenceClassification(ModelConfig(**NAMED_MODELS["bert6"] | no_dropout), 4).eval()
    shallow_cfg = ModelConfig(**NAMED_MODELS["bert1-h12"] | no_dropout)
    members = [TinyBertForSequenceClassification(shallow_cfg, 4).eval() for _ in range(max(ks))]
    committee_outputs = ["member_logits", "probs"]
    cases: list[tuple[str, int, nn.Module, list[str], str]] = [
        ("BERT-6 768/12", 1, deep, ["logits"], "6 blocks"),
        ("BERT-1 768/12", 1, members[0], ["logits"], "1 block"),
    ]
    for k in ks:
        graph = CommitteeGraph(members[:k], [list(range(k))])
        cases.append(("committee of BERT-1", k, graph, committee_outputs, "1 block (batched over members)"))
    rows = []
    for batch in batches:
        ids = torch.randint(1000, BERT_VOCAB_SIZE, (batch, seq))
        for model, k, module, outputs, depth in cases:
            ms = time_onnx(module, ids, reps1 if batch == 1 else reps32, outputs)
            rows.append(
                {
                    "model": model,
                    "mode": "onnxruntime",
                    "k": k,
                    "batch": batch,
                    "precision": "fp32",
                    "ms_per_batch": round(ms, 2),
                    "ms_per_input": round(ms / batch, 3),
                    "critical_path": depth,
                }
            )
    return rows


def bench_latency(
    ks: list[int],
    batches: list[int],
    precisions: list[str],
    seq: int = 128,
    reps1: int = 20,
    reps32: int = 3,
    log: Callable[[str], None] = print,
    device: str = "auto",
    onnx: bool = True,
) -> dict[str, Any]:
    """ms per input of BERT-6, one BERT-1 member and committees of k BERT-1 members (sequential / stacked /
    parallel), and the same exported to ONNX under onnxruntime when it is installed."""
    dev = pick_device(device)
    if dev.type == "cpu":
        tune_cpu_allocator()
    cores = torch.get_num_threads()
    cases = latency_cases(ks, dev)
    rows: list[dict[str, Any]] = []
    for precision in precisions:
        if precision == "bf16" and not bf16_supported(dev):
            continue
        for batch in batches:
            ids = torch.randint(1000, BERT_VOCAB_SIZE, (batch, seq), device=dev)
            for case in cases:
                rows.append(_time_case(case, ids, precision, reps1 if batch == 1 else reps32, cores))
                log("  " + json.dumps(rows[-1]))
    if onnx and dev.type == "cpu" and "fp32" in precisions:
        rows += onnx_rows(ks, batches, seq, reps1, reps32)
    return {
        "command": "tinylm bench latency " + " ".join(sys.argv[3:]),
        "seq": seq,
        "threads": cores,
        "machine": {
            "cpu": cpu_name(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        },
        "rows": rows,
    }
