"""The GPU paths, exercised (`benchmarks/gpu_check.sh`, ≤ 8 minutes on one H100): CUDA vs CPU logits of
the same weights (fp32 and bf16), `bench pretrain` (BERT-6 and 1/256 in bf16 against transformers),
`bench latency --device cuda` (stacked committees, CUDA-stream parallel mode), 200 pre-training steps of
the `paper` preset's BERT-6 and one fine-tuning epoch of AG News from it. Writes `gpu.md` and `gpu.json`.

On a machine without CUDA it runs everything up to the CUDA parts (CPU logits, the pre-training and
fine-tuning commands for 2 steps) and says what it skipped, so the script itself is tested in CI.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tinylm.config import ModelConfig
from tinylm.machine import cpu_name
from tinylm.model import TinyBertForSequenceClassification
from tinylm.registry import NAMED_MODELS

#: bf16 autocast vs fp32 logits: bf16 keeps 8 bits of mantissa, so BERT-6 logits (|x| ≲ 5) differ by ~1e-2.
BF16_TOLERANCE = 0.1
FP32_TOLERANCE = 1e-4
KS = [2, 4, 6, 8]


def logits_parity(cuda: bool) -> dict[str, Any]:
    """The same BERT-6 classifier weights on CPU (fp32) and CUDA (fp32, bf16): largest logit difference."""
    torch.manual_seed(0)
    cfg = ModelConfig(**NAMED_MODELS["bert6"], dropout=0.0, attention_dropout=0.0)
    model = TinyBertForSequenceClassification(cfg, 4).eval()
    ids = torch.randint(1000, cfg.vocab_size, (4, 128))
    att = torch.ones_like(ids)
    att[1, 70:] = 0
    with torch.no_grad():
        cpu = model(ids, att)
    out: dict[str, Any] = {"cpu_logits_finite": bool(torch.isfinite(cpu).all())}
    if not cuda:
        return out | {"skipped": "no CUDA device: the CUDA side of the comparison did not run"}
    gpu_model = model.to("cuda")
    with torch.no_grad():
        fp32 = gpu_model(ids.cuda(), att.cuda()).cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = gpu_model(ids.cuda(), att.cuda()).float().cpu()
    d32, d16 = float((fp32 - cpu).abs().max()), float((bf16 - cpu).abs().max())
    return out | {
        "fp32_max_abs_diff": d32,
        "fp32_ok": d32 <= FP32_TOLERANCE,
        "bf16_max_abs_diff": d16,
        "bf16_ok": d16 <= BF16_TOLERANCE,
        "tolerances": {"fp32": FP32_TOLERANCE, "bf16": BF16_TOLERANCE},
    }


def train_paths(data_dir: str | None, out: Path, cuda: bool) -> dict[str, Any]:
    """The paper preset's BERT-6: 200 pre-training steps (2 on a CPU), then one fine-tuning epoch of AG News
    (2 steps on a CPU) from it; wall times and throughput."""
    from tinylm.config import named_config, read_yaml
    from tinylm.finetune import finetune
    from tinylm.pretrain import pretrain
    from tinylm.settings import FinetuneSettings, PretrainSettings

    steps = 200 if cuda else 2
    pre = read_yaml(str(named_config("paper-pretrain"))) | {
        "max_steps": steps,
        "precision": "bf16" if cuda else "fp32",
        "out": str(out),
        "name": "pretrain",
        "data_dir": data_dir,
        "progress": False,
        "eval_articles": 200,
    }
    if not cuda:  # the command path only: a small corpus
        pre |= {"num_articles": 300, "eval_articles": 50, "cache_dir": str(out / "cache")}
    t0 = time.time()
    run = pretrain(PretrainSettings.build(pre), log=lambda *_: None)
    res = json.loads((run.path / "results.json").read_text())
    ft = read_yaml(str(named_config("paper-finetune-agnews"))) | {
        "init": str(run.path),
        "epochs": 1,
        "precision": "bf16" if cuda else "fp32",
        "out": str(out),
        "name": "finetune",
        "data_dir": data_dir,
        "progress": False,
    }
    if not cuda:
        ft |= {"max_steps": 2, "samples_per_label_train": 8, "samples_per_label_test": 8}
    t1 = time.time()
    ft_run = finetune(FinetuneSettings.build(ft), log=lambda *_: None)
    ft_res = json.loads((ft_run.path / "results.json").read_text())
    return {
        "pretrain_steps": res["steps"],
        "pretrain_seconds": round(t1 - t0, 1),
        "pretrain_tokens_per_s": round(res["tokens"] / res["train_seconds"], 1),
        "pretrain_final_eval": res["final_eval"],
        "finetune_seconds": round(time.time() - t1, 1),
        "finetune_accuracy": ft_res["final_epoch"]["accuracy"],
        "mode": "CUDA, bf16" if cuda else "CPU mode: 2 steps each (the command paths only)",
    }


def gpu_check(data_dir: str | None, out_dir: Path) -> dict[str, Any]:
    from tinylm.bench.pretrain import bench_pretrain
    from tinylm.latency import bench_latency

    cuda = torch.cuda.is_available()
    result: dict[str, Any] = {
        "machine": {
            "cpu": cpu_name(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if cuda else "no CUDA device",
        },
        "logits": logits_parity(cuda),
    }
    with tempfile.TemporaryDirectory() as tmp:
        result["training"] = train_paths(data_dir, Path(tmp), cuda)
    if cuda:
        result["bench_pretrain"] = bench_pretrain(
            ["bert6", "1x256"], ["bf16"], 10, 3, 32, 128, memory=False, log=lambda *_: None, device="cuda"
        )["rows"]
        result["bench_latency"] = bench_latency(
            [2, 4, 6, 8],
            [1, 32],
            ["fp32", "bf16"],
            128,
            20,
            10,
            log=lambda *_: None,
            device="cuda",
            onnx=False,
        )["rows"]
    else:
        result["skipped"] = "no CUDA device: bench pretrain/latency on CUDA and the CUDA logit comparison"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu.json").write_text(json.dumps(result, indent=2, default=str))
    (out_dir / "gpu.md").write_text(format_check(result))
    return result


def _rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    lg, tr = r["logits"], r["training"]
    rows = []
    if "skipped" in lg:
        rows.append(("CUDA vs CPU logits", f"not run: {lg['skipped']}"))
    else:
        rows.append(
            ("CUDA vs CPU logits, fp32", f"max abs diff {lg['fp32_max_abs_diff']:.2e} (≤ {FP32_TOLERANCE})")
        )
        rows.append(
            (
                "CUDA bf16 vs CPU fp32 logits",
                f"max abs diff {lg['bf16_max_abs_diff']:.2e} (≤ {BF16_TOLERANCE})",
            )
        )
    mlm = tr["pretrain_final_eval"].get("mlm_loss", float("nan"))
    rows.append(
        (
            f"pre-training, paper BERT-6 ({tr['mode']})",
            f"{tr['pretrain_steps']} steps in {tr['pretrain_seconds']} s, "
            f"{tr['pretrain_tokens_per_s']:,.0f} tokens/s, held-out MLM {mlm:.3f}",
        )
    )
    rows.append(
        (
            "fine-tuning AG News, 1 epoch",
            f"{tr['finetune_seconds']} s, accuracy {tr['finetune_accuracy']:.4f}",
        )
    )
    for b in r.get("bench_pretrain", []):
        rows.append(
            (
                f"bench pretrain {b['shape']} {b['precision']}",
                f"tinylm {b['tinylm_tokens_per_s']:,.0f} tok/s, transformers "
                f"{b.get('transformers_tokens_per_s', 0):,.0f} tok/s ({b.get('speedup')}×)",
            )
        )
    for b in r.get("bench_latency", []):
        if b["batch"] == 1:
            rows.append(
                (f"latency {b['model']} {b['mode']} k={b['k']} {b['precision']}", f"{b['ms_per_input']} ms")
            )
    return rows


def format_check(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# GPU check (`benchmarks/gpu_check.sh`)",
        "",
        f"Machine: {m['device']}; CPU {m['cpu']}; torch {m['torch']}.",
        "",
        "| check | result |",
        "|---|---|",
    ] + [f"| {a} | {b} |" for a, b in _rows(r)]
    if "skipped" in r:
        lines += ["", f"Skipped: {r['skipped']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tinylm.gpu_check", description=__doc__)
    p.add_argument("--out", default="benchmarks", help="where to write gpu.md / gpu.json")
    p.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None)
    args = p.parse_args(argv)
    r = gpu_check(args.data_dir, Path(args.out))
    print(format_check(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
