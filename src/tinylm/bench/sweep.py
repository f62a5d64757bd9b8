"""`tinylm bench sweep`: which pre-training settings get a tiny model furthest past the unigram stage per
CPU-hour. One base recipe and one-factor variations of it, each pre-trained on the same articles for
the same token budget; held-out MLM loss is recorded against tokens seen *and* wall-clock, next to the
unigram baseline of the same held-out targets.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

#: The base recipe (settings of `tinylm pretrain`) and the variations the sweep tries, one factor each.
#: BASE is the sweep's starting point (BERT-like: lr 1e-3, dropout 0.1), kept so that the recorded sweeps
#: re-run under the same names; its winner, "lr 2e-3, no dropout", is the tiny-pretrain recipe
#: (src/tinylm/configs/tiny-pretrain.yaml; benchmarks/README.md).
BASE: dict[str, Any] = {
    "model": "tiny-2x128",
    "batch_size": 32,
    "lr": 1e-3,
    "warmup_share": 0.05,
    "grad_clip": 1.0,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "precision": "auto",
    "packing": False,
}
VARIATIONS: dict[str, dict[str, Any]] = {
    "base": {},
    "batch 16": {"batch_size": 16},
    "batch 64": {"batch_size": 64},
    "batch 128": {"batch_size": 128},
    "lr 5e-4": {"lr": 5e-4},
    "lr 2e-3": {"lr": 2e-3},
    "lr 3e-3": {"lr": 3e-3},
    "warm-up 1%": {"warmup_share": 0.01},
    "warm-up 10%": {"warmup_share": 0.10},
    "no clipping": {"grad_clip": None},
    "no dropout": {"dropout": 0.0, "attention_dropout": 0.0},
    "fp32": {"precision": "fp32"},
    "packing": {"packing": True},
    "1 layer x 128": {"layers": 1},
    "1 layer x 256": {"model": "tiny-1x256"},
    "lr 2e-3, no dropout": {"lr": 2e-3, "dropout": 0.0, "attention_dropout": 0.0},
    "batch 16, no dropout": {"batch_size": 16, "dropout": 0.0, "attention_dropout": 0.0},
    # more articles at the same token budget: fewer repetitions of each article
    "100K articles": {"num_articles": 100_000},
    "300K articles": {"num_articles": 300_000},
    "100K articles, lr 2e-3": {"num_articles": 100_000, "lr": 2e-3},
    "packing, 100K articles": {"packing": True, "num_articles": 100_000},
}


def run_config(
    name: str,
    changes: dict[str, Any],
    articles: int,
    tokens: int,
    evals: int,
    data_dir: str | None,
    out: Path,
    eval_articles: int = 500,
    threads: int | None = None,
) -> dict[str, Any]:
    """Pre-train one variation for `tokens` training tokens; its held-out curve against tokens and seconds."""
    import torch

    from tinylm.device import concrete_precision
    from tinylm.machine import cpu_name
    from tinylm.pretrain import pretrain
    from tinylm.settings import PretrainSettings

    s = BASE | changes
    precision = concrete_precision(s["precision"], torch.device("cpu"), cpu_name())
    approx_steps = max(10, tokens // (s["batch_size"] * 120))
    settings = {k: v for k, v in s.items() if k not in ("warmup_share", "precision")} | {
        "precision": precision,
        "num_articles": s.get("num_articles", articles),
        "eval_articles": eval_articles,
        "max_tokens": tokens,
        "warmup_steps": int(s["warmup_share"] * approx_steps),
        "eval_every": max(1, approx_steps // evals),
        "checkpoint_every": 10**9,
        "out": str(out),
        "name": name.replace(" ", "_"),
        "progress": False,
        "data_dir": data_dir,
        "threads": threads,
    }
    t0 = time.time()
    run = pretrain(PretrainSettings.build(settings), log=lambda *_: None)
    return row_of_run(run.path, name, settings) | {"minutes": round((time.time() - t0) / 60, 2)}


def row_of_run(path: Path, name: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """A sweep row from a finished pre-training run directory: its held-out curve against tokens seen,
    final loss next to the unigram baseline, throughput over the training steps alone (evaluations excluded;
    a `reproduce` run can be compared this way)."""
    import yaml

    lines = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_s = {m["step"]: m["tokens"] for m in lines if "tokens" in m}
    curve = []
    for m in lines:
        if "eval" in m:
            seen = max((t for s_, t in train_s.items() if s_ <= m["step"]), default=0)
            curve.append({"step": m["step"], "tokens": seen, **m["eval"]})
    result = json.loads((path / "results.json").read_text())
    ev = result["final_eval"]
    eval_seconds = result.get("eval_seconds", 0.0)
    if settings is None:
        settings = yaml.safe_load((path / "config.yaml").read_text())
    return {
        "name": name,
        "settings": settings,
        "minutes": round(result["train_seconds"] / 60, 2),
        "train_seconds": result["train_seconds"],
        "tokens": result["tokens"],
        "eval_seconds": eval_seconds,
        "tokens_per_s": round(result["tokens"] / max(result["train_seconds"] - eval_seconds, 1e-9), 1),
        "mlm_loss": ev["mlm_loss"],
        "unigram_loss": ev["unigram_loss"],
        "below_unigram": ev["unigram_loss"] - ev["mlm_loss"],
        "curve": curve,
    }


def bench_sweep(
    names: list[str],
    articles: int,
    tokens: int,
    evals: int,
    data_dir: str | None,
    eval_articles: int = 500,
    threads: int | None = None,
) -> dict[str, Any]:
    from tinylm.machine import cpu_name

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows.append(
                run_config(
                    name,
                    VARIATIONS[name],
                    articles,
                    tokens,
                    evals,
                    data_dir,
                    Path(tmp),
                    eval_articles,
                    threads,
                )
            )
            print(
                f"{name}: held-out {rows[-1]['mlm_loss']:.3f} (unigram {rows[-1]['unigram_loss']:.3f}), "
                f"{rows[-1]['tokens_per_s']:.0f} tokens/s",
                flush=True,
            )
    return {
        "command": f"tinylm bench sweep --articles {articles} --tokens {tokens}",
        "machine": {"cpu": cpu_name()},
        "base": BASE,
        "rows": rows,
    }


def merge_sweeps(paths: list[Path]) -> dict[str, Any]:
    """One table of several sweep results (e.g. two 1-thread lanes run side by side on 2 cores)."""
    from tinylm.errors import DataError
    from tinylm.fileio import read_json_object

    parts = [read_json_object(p, "(a `tinylm bench sweep` result)", DataError) for p in paths]
    for p, part in zip(paths, parts, strict=True):
        if not isinstance(part.get("rows"), list) or "machine" not in part:
            raise DataError(f"{p}: not a `tinylm bench sweep` result (expected 'rows' and 'machine')")
    cpus = sorted({part["machine"]["cpu"] for part in parts})
    if len(cpus) > 1:
        raise DataError(f"{', '.join(map(str, paths))}: measured on different CPUs ({cpus}); not comparable")
    return {
        "command": " + ".join(part["command"] for part in parts),
        "machine": parts[0]["machine"],
        "base": parts[0]["base"],
        "rows": [row for part in parts for row in part["rows"]],
        "merged_from": [str(p) for p in paths],
    }


def format_sweep(r: dict[str, Any]) -> str:
    lines = [
        "| variation | held-out MLM loss | unigram baseline | below unigram (nats) | tokens | tokens/s | "
        "minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in sorted(r["rows"], key=lambda x: x["mlm_loss"]):
        lines.append(
            f"| {x['name']} | {x['mlm_loss']:.3f} | {x['unigram_loss']:.3f} | {x['below_unigram']:.2f} | "
            f"{x['tokens']:,} | {x['tokens_per_s']:,.0f} | {x['minutes']} |"
        )
    return "\n".join(
        lines
        + [
            "",
            "tokens/s: training steps only (evaluations excluded); minutes: wall time, evaluations included.",
            f"Base recipe: {r['base']}; machine: {r['machine']['cpu']}; `{r['command']}`",
        ]
    )


def plot_sweep(r: dict[str, Any], path: Path) -> None:
    """Held-out MLM loss against tokens seen and against minutes of training, one line per variation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for x in r["rows"]:
        c = x["curve"]
        per_token = x["train_seconds"] / max(1, x["tokens"])
        axes[0].plot([p["tokens"] / 1e6 for p in c], [p["mlm_loss"] for p in c], label=x["name"])
        axes[1].plot([p["tokens"] * per_token / 60 for p in c], [p["mlm_loss"] for p in c], label=x["name"])
    for ax, xl in zip(axes, ("training tokens (millions)", "training minutes (this machine)"), strict=True):
        ax.axhline(r["rows"][0]["unigram_loss"], color="grey", ls="--", lw=0.8, label="unigram baseline")
        ax.set_xlabel(xl)
        ax.set_ylabel("held-out MLM loss (nats)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from tinylm.machine import cpu_name, write_benchmark

    if args.from_runs:
        rows = [row_of_run(Path(p), Path(p).name) for p in args.from_runs]
        res = {
            "command": "tinylm bench sweep --from-runs ...",
            "machine": {"cpu": cpu_name()},
            "base": BASE,
            "rows": rows,
        }
    elif args.merge:
        res = merge_sweeps([Path(p) for p in args.merge])
    else:
        res = bench_sweep(args.configs, args.articles, args.tokens, args.evals, None, threads=args.threads)
    code = write_benchmark(Path(args.out), "pretrain_sweep", res, format_sweep(res))  # the numbers first
    plot_sweep(res, Path(args.out) / "pretrain_sweep.png")
    return code


def add_sweep_parser(bsub: argparse._SubParsersAction[Any]) -> None:
    q = bsub.add_parser(
        "sweep",
        help="pre-training recipe sweep: held-out MLM vs tokens and wall-clock",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument(
        "--configs", nargs="+", default=list(VARIATIONS), choices=list(VARIATIONS), help="variations"
    )
    q.add_argument("--articles", type=int, default=20000, help="Wikipedia articles (default 20000)")
    q.add_argument("--tokens", type=int, default=8_000_000, help="training tokens per variation (default 8M)")
    q.add_argument("--evals", type=int, default=10, help="held-out evaluations per run (default 10)")
    q.add_argument("--out", default="benchmarks", help="where to write pretrain_sweep.{json,md,png}")
    q.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    q.add_argument(
        "--from-runs",
        "--from_runs",
        dest="from_runs",
        nargs="+",
        help="tabulate and plot finished pre-training run directories instead of training",
    )
    q.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="combine pretrain_sweep.json files of sweeps run side by side into one table and figure",
    )
    q.set_defaults(handler=_cmd_sweep)
