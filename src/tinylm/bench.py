"""`tinylm bench`: throughput benchmarks against the transformers reference, measured in one process.

`tinylm bench pretrain` times full MLM training steps (forward, loss, backward, AdamW step) of
tinylm and of transformers' `BertForMaskedLM` with the same architecture, batch, sequence length,
masking and optimizer settings, alternating between the two so that machine noise hits both, and
reports medians, their ratio, tinylm's achieved FLOP/s next to the machine's matmul FLOP/s, and the
peak resident memory of a tinylm BERT-6 step (in a child process).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tinylm.config import ModelConfig
from tinylm.machine import cpu_name, write_benchmark
from tinylm.model import (
    TinyBertForMaskedLM,
    TinyBertForSequenceClassification,
    stack_members,
    train_flops_per_token,
)
from tinylm.objectives import MLMObjective, cross_entropy
from tinylm.perf import median_seconds, tune_cpu_allocator
from tinylm.predict import autocast
from tinylm.registry import BERT_VOCAB_SIZE, CLS_ID, NAMED_MODELS, PAPER_CORPUS_SEED, SEP_ID
from tinylm.train import bf16_supported, make_optimizer

#: Shapes timed by `bench pretrain` (short name -> registered architecture).
SHAPES = {"bert6": "bert6", "1x256": "tiny-1x256", "2x128": "tiny-2x128"}


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

            hcfg = BertConfig(
                vocab_size=cfg.vocab_size,
                hidden_size=cfg.hidden_size,
                num_hidden_layers=cfg.layers,
                num_attention_heads=cfg.heads,
                intermediate_size=cfg.ffn_size,
                max_position_embeddings=cfg.max_length,
                hidden_dropout_prob=cfg.dropout,
                attention_probs_dropout_prob=cfg.attention_dropout,
            )
            self.model = BertForMaskedLM(hcfg)
        self.model = self.model.to(self.device)  # type: ignore[arg-type]
        self.model.train()
        from tinylm.config import TrainConfig

        tcfg = TrainConfig(lr=5e-5, weight_decay=0.01)
        if impl == "tinylm":
            self.opt = make_optimizer(self.model, tcfg, self.device)
        else:  # the reference: torch AdamW with its defaults, as the paper's code
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=5e-5, weight_decay=0.01)

    def step(self) -> None:
        inputs, positions, targets = self.masker.mask(self.ids, self.gen)
        dev = self.device
        inputs, positions, targets = inputs.to(dev), positions.to(dev), targets.to(dev)
        with autocast(dev, self.precision):
            if self.impl == "tinylm":
                logits = self.model(inputs, None, positions)
                loss = cross_entropy(logits.float(), targets)
            else:
                labels = torch.full(self.ids.shape, -100, dtype=torch.long, device=dev)
                labels.view(-1)[positions] = targets
                loss = self.model(input_ids=inputs, attention_mask=self.attention, labels=labels).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


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
        "import resource,torch;from tinylm.bench import Runner,shape_config,sample_batch;"
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
    log=print,
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


def _cmd_pretrain(args: argparse.Namespace) -> int:
    res = bench_pretrain(
        args.shapes,
        args.precision,
        args.steps,
        args.warmup,
        args.batch,
        args.seq,
        reference=not args.no_reference,
        memory=not args.no_memory,
        device=str(_device(args.device)),
    )
    return write_benchmark(Path(args.out), "pretrain", res, format_table(res))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks against the transformers reference",
        description="Speed benchmarks; each compares implementations inside one process and run.",
    )
    bsub = p.add_subparsers(dest="bench_cmd", required=True, metavar="{pretrain,latency,memory,sweep}")
    q = bsub.add_parser(
        "pretrain",
        help="MLM training tokens/s: tinylm vs transformers BertForMaskedLM",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument(
        "--shapes",
        nargs="+",
        default=["bert6", "1x256"],
        choices=list(SHAPES),
        help="model shapes (default: bert6 1x256)",
    )
    q.add_argument(
        "--precision",
        nargs="+",
        default=["fp32", "bf16"],
        choices=["fp32", "bf16"],
        help="precisions (bf16 where supported)",
    )
    q.add_argument(
        "--steps", type=int, default=10, help="timed steps per implementation (median reported; default 10)"
    )
    q.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default 2)")
    q.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    q.add_argument("--seq", type=int, default=128, help="sequence length (default 128)")
    q.add_argument("--no-reference", action="store_true", help="skip transformers (tinylm only)")
    q.add_argument("--no-memory", action="store_true", help="skip the peak-memory child process (CPU)")
    q.add_argument(
        "--device",
        default="cpu",
        choices=["auto", "cpu", "cuda"],
        help="device (default cpu; auto: CUDA if present)",
    )
    q.add_argument(
        "--out", default="benchmarks", help="where to write pretrain.json / pretrain.md (default benchmarks/)"
    )
    q.set_defaults(handler=_cmd_pretrain)
    add_latency_parser(bsub)
    from tinylm.bench_memory import add_memory_parser

    add_memory_parser(bsub)
    from tinylm.bench_sweep import add_sweep_parser

    add_sweep_parser(bsub)


def add_latency_parser(bsub: argparse._SubParsersAction) -> None:
    la = bsub.add_parser(
        "latency",
        help="inference latency: BERT-6 vs BERT-1 committees (sequential/stacked/parallel)",
        description="ms per input at each batch size for BERT-6 (768/12), one BERT-1 (768/12) and soft "
        "committees of k BERT-1 members evaluated sequentially, stacked (one batched computation) and "
        "in parallel threads (members split in two stacked halves, cores split between them); random "
        "weights, sequence 128, median of repeated calls after warm-up.",
    )
    la.add_argument(
        "--k", nargs="+", type=int, default=[2, 4, 6, 8], help="committee sizes (default 2 4 6 8)"
    )
    la.add_argument("--batch", nargs="+", type=int, default=[1, 32], help="batch sizes (default 1 32)")
    la.add_argument(
        "--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"], help="precisions"
    )
    la.add_argument("--seq", type=int, default=128, help="sequence length (default 128)")
    la.add_argument(
        "--reps", type=int, default=20, help="timed calls at batch 1 (batch > 1: reps/5; default 20)"
    )
    la.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="device (default: CUDA if present)"
    )
    la.add_argument(
        "--out", default="benchmarks", help="where to write latency.json / latency.md (default benchmarks/)"
    )
    la.set_defaults(handler=_cmd_latency)


# ---------------------------------------------------------------- inference latency (claim C4)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _latency_ms(fn, ids: torch.Tensor, precision: str, reps: int) -> float:
    def call() -> None:
        with (
            torch.no_grad(),
            torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"),
        ):
            fn(ids)

    return median_seconds(call, reps) * 1000


def _in_threads(parts: list, ids: torch.Tensor) -> None:
    """Run parts concurrently: CUDA streams on a GPU, threads on a CPU."""
    if ids.is_cuda:
        streams = [torch.cuda.Stream() for _ in parts]
        for st, part in zip(streams, parts, strict=True):
            with torch.cuda.stream(st):
                part(ids)
        return
    threads = [threading.Thread(target=p, args=(ids,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
    dev = _device(device)
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


def format_latency(result: dict[str, Any]) -> str:
    lines = [
        "| model | mode | k | batch | precision | ms per input | ms per batch | critical path |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['k']} | {r['batch']} | {r['precision']} | "
            f"{r['ms_per_input']} | "
            f"{r['ms_per_batch']} | {r['critical_path']} |"
        )
    return "\n".join(lines)


def _cmd_latency(args: argparse.Namespace) -> int:
    res = bench_latency(
        args.k, args.batch, args.precision, args.seq, args.reps, max(1, args.reps // 5), device=args.device
    )
    return write_benchmark(Path(args.out), "latency", res, format_latency(res))
