"""What a preset's grid costs before it runs (`tinylm reproduce --estimate`, and printed at the start of
every `reproduce`): per training job the tokens, optimizer steps and training FLOPs, the projected wall
time on this device from a few timed steps of each architecture, and the same grid on N GPUs.

Token counts use measured mean lengths (WordPieces per sample, capped at max_length) of 500 Wikipedia
leads and 200 examples of each task; the GPU projection assumes a sustained throughput per GPU
(`--gpu-tflops`, a stated assumption, not a measurement) and perfect parallelism across independent jobs,
bounded below by the grid's critical path. Tiny models on a GPU are bound by per-step overhead, not by
FLOPs: every optimizer step costs at least its operator launches (counted on one real training step of
the architecture) × a per-launch cost (`--gpu-launch-us`, stated; a measured step time where a GPU is
present), and each job's GPU time is the larger of the two bounds; the table says which applies.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from tinylm.config import CorpusConfig, ModelConfig, model_shape
from tinylm.device import concrete_precision
from tinylm.machine import cpu_name
from tinylm.model import TinyBertForMaskedLM, TinyBertForSequenceClassification, train_flops_per_token
from tinylm.paper.jobs import Job
from tinylm.predict import autocast
from tinylm.settings import RECIPES, PretrainSettings

MASK_SHARE = 0.15
#: a 1-minute load average above this share of the cores means other work competes with the timed steps
BUSY_LOAD_SHARE = 0.5


def mean_lengths(data_dir: str | None, tasks: list[str], max_length: int) -> dict[str, float]:
    """Mean tokens per sample ([CLS]/[SEP] included, truncated at max_length): 'wiki' and each task (and
    'TASK:labels', its number of labels)."""
    from tinylm.data.corpus import iter_articles, wiki_shards
    from tinylm.data.sources import resolve_source
    from tinylm.data.tasks import load_pool
    from tinylm.data.tokenize import encode_texts, load_tokenizer

    source = resolve_source(data_dir)
    tok = load_tokenizer(source)
    texts = [text for _, _, text in itertools.islice(iter_articles(wiki_shards(source)), 500)]
    out = {"wiki": float(encode_texts(tok, texts, max_length).lengths.mean())}
    for t in tasks:
        pool = load_pool(t, source)
        out[t] = float(encode_texts(tok, [r.text for r in pool.train[:200]], max_length).lengths.mean())
        out[f"{t}:labels"] = float(len(pool.label_names))
    return out


def job_cost(
    job: Job, lengths: dict[str, float], init: Job | None = None, unlabelled_docs: int = 0
) -> dict[str, Any]:
    """Tokens, steps and FLOPs of one training job (its settings built as its command would); a
    fine-tuning job has the architecture of its `init` pre-training job; `unlabelled_docs`: a student's
    extra unlabelled documents (Wikipedia-like articles), learnt every epoch beside the labelled ones."""
    scratch = {"init": "scratch"} if job.kind == "finetune" else {}  # an init job id is no path yet
    built = RECIPES[job.kind].build(job.run_settings() | scratch)
    mcfg: ModelConfig = built.model
    if init is not None:
        mcfg = PretrainSettings.build(init.run_settings()).model
    tc = built.train
    if isinstance(built, PretrainSettings):
        seq = lengths["wiki"]
        tokens = tc.max_tokens or tc.epochs * built.corpus.num_articles * seq
        mlm: float | None = prediction_share(built.corpus, mcfg.vocab_size)
    else:
        task = built.task
        seq = lengths[task.task]
        labels = int(lengths[f"{task.task}:labels"])
        per_label = task.samples_per_label_train
        assert per_label is not None, f"{job.id}: a grid fine-tuning names its sample size"
        n = (per_label - (task.validation_per_label or 0)) * labels
        tokens, mlm = tc.epochs * (n * seq + unlabelled_docs * lengths["wiki"]), None
    flops = train_flops_per_token(mcfg, int(round(seq)), mlm) * tokens
    steps = int(np.ceil(tokens / (seq * tc.batch_size)))
    return {
        "tokens": float(tokens),
        "steps": steps,
        "flops": flops,
        "seq": seq,
        "batch": tc.batch_size,
        "model": mcfg,
        "precision": tc.precision,
        "mask_share": mlm,
    }


def prediction_share(c: CorpusConfig, vocab_size: int | None = None) -> float:
    """The mean share of a pre-training step's tokens whose logits it computes: the masking rate averaged
    over the run's schedule (`mask_prob_start` → `mask_prob`), capped by `predict_prob` where set. With
    `vocab_size`, in units of whole vocabulary rows: a sampled-softmax step's row costs its candidates and
    its target, `(sampled_softmax + 1) / vocab_size` of a row, over the first `sampled_softmax_share`."""
    start = c.mask_prob if c.mask_prob_start is None else c.mask_prob_start
    progress = (np.arange(1000) + 0.5) / 1000  # the midpoints of a thousand equal stretches of the run
    rates = start + (c.mask_prob - start) * progress
    if c.predict_prob is not None:
        rates = np.minimum(rates, c.predict_prob)
    if vocab_size and c.sampled_softmax:
        width = min(1.0, (c.sampled_softmax + 1) / vocab_size)
        rates = np.where(progress < c.sampled_softmax_share, rates * width, rates)
    return float(rates.mean())


class _OpCounter(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Counts the operators dispatched (views excluded): each is a kernel launch on a GPU."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if not func.is_view and func.__name__.split(".")[0] not in ("detach", "alias", "_unsafe_view", "t"):
            self.count += 1
        return func(*args, **(kwargs or {}))


def launches_per_step(kind: str, cfg: ModelConfig) -> int:
    """Operators of one training step (forward, loss, backward, fused AdamW) of the architecture, counted on
    a tiny batch after a warm-up step (the optimizer's state exists): the step's kernel launches on a GPU."""
    small = dataclasses.replace(cfg, vocab_size=min(cfg.vocab_size, 512), dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    model = TinyBertForMaskedLM(small) if kind == "pretrain" else TinyBertForSequenceClassification(small, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(5, small.vocab_size, (2, min(16, small.max_length)))

    def step() -> None:
        out = model(ids, None, torch.arange(3)) if kind == "pretrain" else model(ids)
        out.float().logsumexp(-1).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    with _OpCounter() as counter:
        step()
    return int(counter.count)


#: On a CPU a timed step has at most 8 rows when the whole batch would cost more FLOPs than this (a large
#: model: a few steps stay quick); a tiny model is timed on its real batch (a few rows would understate
#: its tokens/s several-fold: per-step overheads).
CPU_FULL_BATCH_FLOPS = 5e10


def timed_rows(kind: str, cfg: ModelConfig, batch: int, seq: int, device: torch.device) -> int:
    """The rows of a timed step: the run's batch, or at most 8 on a CPU for a large model."""
    mlm = MASK_SHARE if kind == "pretrain" else None
    if device.type == "cpu" and train_flops_per_token(cfg, seq, mlm) * batch * seq > CPU_FULL_BATCH_FLOPS:
        return min(batch, 8)
    return batch


def tokens_per_second(
    kind: str,
    cfg: ModelConfig,
    batch: int,
    seq: float,
    precision: str = "fp32",
    budget_s: float = 3.0,
    mask_share: float | None = None,
) -> float:
    """Training tokens/s of one architecture on this device in `precision` (the run's: bf16 autocast or
    fp32), through the trainer's own loss (pre-training: the fused vocabulary loss at `mask_share` of the
    positions, default 15 %): random ids, `timed_rows` per step, timed steps after one warm-up until
    `budget_s` seconds have passed (at least one)."""
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = TinyBertForMaskedLM(cfg) if kind == "pretrain" else TinyBertForSequenceClassification(cfg, 4)
    model = model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    T = max(4, int(round(seq)))
    rows = timed_rows(kind, cfg, batch, T, dev)
    ids = torch.randint(1000, cfg.vocab_size, (rows, T), device=dev)
    n_mask = max(1, int((mask_share or MASK_SHARE) * rows * T))
    targets = torch.randint(1000, cfg.vocab_size, (n_mask,), device=dev)
    labels = torch.randint(4, (rows,), device=dev)

    def step() -> None:
        with autocast(dev, precision):
            if kind == "pretrain":
                pos = torch.randperm(rows * T, device=dev)[:n_mask]
                loss = model(ids, None, pos, targets=targets)[0] / n_mask
            else:
                loss = nn.functional.cross_entropy(model(ids).float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    step()
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < budget_s and n < 20:
        step()
        n += 1
    return rows * T * n / (time.perf_counter() - t0)


#: Stated cost of one operator launch on a GPU in eager PyTorch (CPU-side dispatch + launch latency;
#: typically 5-20 µs): the per-step floor's assumption where no GPU is present to time steps on.
DEFAULT_LAUNCH_US = 10.0


def gpu_minutes(
    c: dict[str, Any], tflops: float, launch_us: float, measured_tps: float | None
) -> dict[str, Any]:
    """A job's GPU minutes: the larger of FLOPs ÷ sustained TFLOP/s and steps × the per-step floor
    (launches × `launch_us`, or the measured time of a step where a GPU timed it: `measured_tps`)."""
    flop_bound = c["flops"] / (tflops * 1e12) / 60
    if measured_tps:
        floor_s = c["seq"] * c["batch"] / measured_tps
    else:
        floor_s = c["launches_per_step"] * launch_us * 1e-6
    floor = c["steps"] * floor_s / 60
    return {
        "minutes_gpu": max(flop_bound, floor),
        "gpu_step_floor_s": floor_s,
        "gpu_bound": "per-step floor" if floor > flop_bound else "FLOPs",
    }


def _timed_speed(kind: str, c: dict[str, Any]) -> float:
    """`tokens_per_second` of a job's architecture, batch, precision and masking share (its cost `c`)."""
    return tokens_per_second(
        kind, c["model"], c["batch"], c["seq"], c["precision"], mask_share=c["mask_share"]
    )


def estimate(
    jobs: list[Job],
    data_dir: str | None,
    tasks: list[str],
    max_length: int,
    gpus: list[int],
    gpu_tflops: float,
    gpu_launch_us: float = DEFAULT_LAUNCH_US,
) -> dict[str, Any]:
    """Per-job and total cost of the grid, projected on this device and on N GPUs (each job: the larger of
    its FLOP bound and its per-step floor); `busy` records the load the device timings were taken under."""
    lengths = mean_lengths(data_dir, tasks, max_length)
    load, cores = getattr(os, "getloadavg", lambda: (0.0,))()[0], os.cpu_count() or 1
    rows, speed, launches, precisions = [], {}, {}, {}
    by_job = {j.id: j for j in jobs}
    for j in jobs:
        if j.kind not in RECIPES:
            continue
        init = by_job[j.deps[0]] if j.kind == "finetune" and j.deps else None
        c = job_cost(j, lengths, init, _unlabelled_docs(j, by_job))
        if c["precision"] not in precisions:
            dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            precisions[c["precision"]] = concrete_precision(c["precision"], dev, cpu_name())
        c["precision"] = precisions[c["precision"]]
        key = (j.kind, str(c["model"]), c["batch"], c["precision"], c["mask_share"])
        if key not in speed:
            speed[key] = _timed_speed(j.kind, c)
        c["minutes_here"] = c["tokens"] / speed[key] / 60
        if key[:2] not in launches:
            launches[key[:2]] = launches_per_step(j.kind, c["model"])
        c["launches_per_step"] = launches[key[:2]]
        c |= gpu_minutes(c, gpu_tflops, gpu_launch_us, speed[key] if torch.cuda.is_available() else None)
        rows.append({"id": j.id, "kind": j.kind, "role": j.role, "deps": j.deps} | c)
    total_here = sum(r["minutes_here"] for r in rows)
    by_id = {r["id"]: r for r in rows}

    def chain(r: dict[str, Any]) -> float:  # longest dependency path ending at r, in GPU minutes
        return float(r["minutes_gpu"]) + max((chain(by_id[d]) for d in r["deps"] if d in by_id), default=0.0)

    critical = max((chain(r) for r in rows), default=0.0)
    total_gpu = sum(r["minutes_gpu"] for r in rows)
    return {
        "rows": rows,
        "mean_lengths": lengths,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "precisions": sorted(set(precisions.values())),
        "total": {
            "tokens": sum(r["tokens"] for r in rows),
            "steps": sum(r["steps"] for r in rows),
            "flops": sum(r["flops"] for r in rows),
            "minutes_here": total_here,
        },
        "gpu_tflops_assumed": gpu_tflops,
        "gpu_launch_us": gpu_launch_us,
        "gpu_step_floor_measured": torch.cuda.is_available(),
        "overhead_bound_jobs": sum(r["gpu_bound"] == "per-step floor" for r in rows),
        "on_gpus": {n: max(critical, total_gpu / n) for n in gpus},
        "critical_path_gpu_minutes": critical,
        "busy": {"load_average": load, "cores": cores, "busy": load > BUSY_LOAD_SHARE * cores},
    }


def _unlabelled_docs(job: Job, by_job: dict[str, Job]) -> int:
    """Documents of a distilled student's unlabelled text: the articles its `select` dependency writes."""
    if "distill_unlabelled" not in job.settings:
        return 0
    return sum(int(by_job[d].settings["articles"]) for d in job.deps if by_job[d].kind == "select")


def _h(minutes: float) -> str:
    if minutes < 1:
        return f"{minutes * 60:.1f} s"
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def format_estimate(e: dict[str, Any]) -> str:
    """The estimate as a table: one line per kind of job and architecture, then the totals."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in e["rows"]:
        m = r["model"]
        shape = model_shape(dataclasses.asdict(m))
        groups.setdefault((r["kind"], shape), []).append(r)
    lines = [f"{'jobs':>5} {'kind':9} {'model':14} {'tokens':>10} {'steps':>9} {'PFLOP':>9} {'here':>10}"]
    for (kind, shape), rs in groups.items():
        lines.append(
            f"{len(rs):5d} {kind:9} {shape:14} {sum(r['tokens'] for r in rs) / 1e6:9.1f}M "
            f"{sum(r['steps'] for r in rs):9,d} {sum(r['flops'] for r in rs) / 1e15:9.3f} "
            f"{_h(sum(r['minutes_here'] for r in rs)):>10}"
        )
    t = e["total"]
    lines.append(
        f"total: {t['tokens'] / 1e6:,.1f}M training tokens, {t['steps']:,} optimizer steps, "
        f"{t['flops'] / 1e15:,.2f} PFLOP; on this {e['device']} ({torch.get_num_threads()} threads, "
        f"{'/'.join(e.get('precisions', [])) or 'fp32'}): {_h(t['minutes_here'])} one job at a time "
        "(training steps only; fine-tuning counted at every epoch: early stopping ends many sooner)"
    )
    gpus = ", ".join(f"{n} GPU(s): {_h(m)}" for n, m in e["on_gpus"].items())
    floor = (
        "a step's time as measured on this GPU"
        if e["gpu_step_floor_measured"]
        else f"its operator launches × an assumed {e['gpu_launch_us']:g} µs each"
    )
    lines.append(
        f"on GPUs: {gpus} (critical path {_h(e['critical_path_gpu_minutes'])}); each job the larger of "
        f"FLOPs ÷ an assumed {e['gpu_tflops_assumed']:g} TFLOP/s and steps × a per-step floor ({floor}); "
        f"the floor binds for {e['overhead_bound_jobs']} of {len(e['rows'])} jobs"
    )
    busy = e.get("busy", {})
    if busy.get("busy"):
        lines.append(
            f"warning: the 'here' column was timed while the machine was busy (1-minute load average "
            f"{busy['load_average']:.1f} on {busy['cores']} cores): it overstates the time; rerun the "
            "estimate on an idle machine"
        )
    return "\n".join(lines)


def format_left(e: dict[str, Any], finished: set[str], reusable: set[str]) -> str:
    """What is left of the estimate when some training jobs are finished in OUT already or will be copied
    from other grids (`--reuse-from`); "" when none are."""
    done = {r["id"] for r in e["rows"]} & (finished | reusable)
    if not done:
        return ""
    left = [r for r in e["rows"] if r["id"] not in done]
    n_fin = len(done & finished)
    return (
        f"left to run: {len(left)} of {len(e['rows'])} training jobs, "
        f"{sum(r['tokens'] for r in left) / 1e6:,.1f}M tokens, {_h(sum(r['minutes_here'] for r in left))} "
        f"one job at a time ({n_fin} finished in --out, {len(done) - n_fin} to be copied by --reuse-from)"
    )
