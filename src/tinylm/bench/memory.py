"""`tinylm bench memory`: resident memory of a real pre-training run over thousands of steps.

Memory must stay flat over steps: a run samples its resident set size (VmRSS) after every
evaluation and reports the peak (VmHWM) and the growth between the middle and the end of the run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any


def _status_gib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in GiB; 0 where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def rss_gib() -> float:
    return _status_gib("VmRSS")


def bench_memory(
    model: str | dict[str, Any],
    articles: int,
    steps: int,
    batch: int,
    eval_every: int,
    precision: str,
    data_dir: str | None,
    eval_articles: int = 500,
) -> dict[str, Any]:
    """Pre-train `model` (a named architecture or model settings) for `steps` steps with an evaluation
    every `eval_every`, sampling RSS after each."""
    import torch

    from tinylm.device import concrete_precision
    from tinylm.machine import cpu_name
    from tinylm.pretrain import pretrain
    from tinylm.settings import PretrainSettings
    from tinylm.train import Progress

    precision = concrete_precision(precision, torch.device("cpu"), cpu_name())
    samples: list[tuple[int, float]] = []

    def on_step(p: Progress) -> None:
        if p.step % eval_every == 0:  # the step's evaluation has run
            samples.append((p.step, round(rss_gib(), 3)))

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        arch = model if isinstance(model, dict) else {"model": model}
        settings = arch | {
            "num_articles": articles,
            "eval_articles": eval_articles,
            "batch_size": batch,
            "lr": 1e-3,
            "warmup_steps": 100,
            "precision": precision,
            "max_steps": steps,
            "eval_every": eval_every,
            "checkpoint_every": steps,
            "out": tmp,
            "name": "memory",
            "progress": False,
            "data_dir": data_dir,
            "threads": None,
        }
        pretrain(PretrainSettings.build(settings), log=lambda *_: None, on_step=on_step)
    mid = samples[len(samples) // 2][1]
    return {
        "command": f"tinylm bench memory --model {model} --articles {articles} --steps {steps} "
        f"--batch {batch} --eval-every {eval_every} --precision {precision}",
        "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "minutes": round((time.time() - t0) / 60, 1),
        "rss_after_eval_gib": samples,
        "peak_rss_gib": round(_status_gib("VmHWM"), 3),
        "growth_second_half_gib": round(samples[-1][1] - mid, 3),
    }


def format_memory(r: dict[str, Any]) -> str:
    s, m = r["rss_after_eval_gib"], r["machine"]
    picks = [s[0], s[len(s) // 4], s[len(s) // 2], s[3 * len(s) // 4], s[-1]]
    return "\n".join(
        [
            "| step | " + " | ".join(str(step) for step, _ in picks) + " |",
            "|---|" + "---|" * len(picks),
            "| RSS after the evaluation (GiB) | " + " | ".join(f"{v:.2f}" for _, v in picks) + " |",
            "",
            f"Peak RSS {r['peak_rss_gib']:.2f} GiB; growth over the second half "
            f"{r['growth_second_half_gib']:+.3f} GiB; {r['minutes']} min on {m['cpu']} "
            f"({m['threads']} threads, torch {m['torch']}).",
            f"Command: `{r['command']}`",
        ]
    )


def _cmd_memory(args: argparse.Namespace) -> int:
    from tinylm.machine import write_benchmark

    res = bench_memory(
        args.model, args.articles, args.steps, args.batch, args.eval_every, args.precision, None
    )
    return write_benchmark(Path(args.out), "memory", res, format_memory(res))


def add_memory_parser(bsub: argparse._SubParsersAction[Any]) -> None:
    m = bsub.add_parser(
        "memory",
        help="resident memory over a long pre-training run (must stay flat)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("--model", default="tiny-2x128", help="named architecture (default tiny-2x128)")
    m.add_argument("--articles", type=int, default=20000, help="Wikipedia articles (default 20000)")
    m.add_argument("--steps", type=int, default=3000, help="optimizer steps (default 3000)")
    m.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    m.add_argument("--eval-every", dest="eval_every", type=int, default=250, help="steps between evaluations")
    m.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16"], help="default: bf16 if fast"
    )
    m.add_argument("--out", default="benchmarks", help="where to write memory.json / memory.md")
    m.set_defaults(handler=_cmd_memory)
