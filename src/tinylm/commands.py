"""Subcommands beyond `data`: pretrain, export, import, bench (each registers its parser here)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tinylm.config import add_config_args, config_from_args, named_config


def _pretrain(args: argparse.Namespace) -> int:
    from tinylm.pretrain import SECTIONS, pretrain

    if getattr(args, "config", None):
        args.config = str(named_config(args.config))
    pretrain(config_from_args(SECTIONS, args))
    return 0


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    from tinylm.pretrain import SECTIONS

    p = sub.add_parser(
        "pretrain",
        help="MLM pre-training on a Wikipedia subset",
        description="Pre-train a TinyBert with masked-language modelling on the first N articles of the seeded "
        "Wikipedia order. Settings come from --config (a YAML file, or a shipped name: paper-pretrain, "
        "tiny-pretrain) and flags; flags win. The run directory holds config.yaml, data.json, metrics.jsonl, "
        "checkpoints/ and the final model.safetensors.",
    )
    add_config_args(p, SECTIONS)
    p.set_defaults(handler=_pretrain)


def _export(args: argparse.Namespace) -> int:
    from tinylm.hf import export_model
    from tinylm.weights import load_model

    model, meta = load_model(Path(args.run))
    tok = Path(meta["tokenizer"]).parent if meta.get("tokenizer") else None
    out = export_model(model, Path(args.out), meta.get("label_names"), tok)
    print(f"wrote {out} (config.json + model.safetensors); load it with transformers.AutoModelFor"
          f"{'SequenceClassification' if meta['kind'] == 'classifier' else 'MaskedLM'}.from_pretrained('{out}')")  # fmt: skip
    return 0


def _import(args: argparse.Namespace) -> int:
    from tinylm.hf import import_model
    from tinylm.weights import save_model

    model, report = import_model(Path(args.hf_dir))
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        from tinylm.errors import TinylmError

        raise TinylmError(f"{out} exists and is not empty; choose a new output directory")
    save_model(model, out, imported_from=str(args.hf_dir))
    print(f"imported {args.hf_dir} -> {out}: {len(report['loaded'])} tensors loaded, "
          f"{len(report['ignored'])} ignored ({', '.join(report['ignored'][:4])})")  # fmt: skip
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a transformers-loadable BERT directory",
                       description="Export a finished run (or any tinylm model directory) to config.json + "
                       "model.safetensors that transformers loads with AutoModelForMaskedLM / "
                       "AutoModelForSequenceClassification. Conv front-end models cannot be exported.")  # fmt: skip
    p.add_argument("run", help="run directory holding model.safetensors + model.json")
    p.add_argument("out", help="new output directory")
    p.set_defaults(handler=_export)
    q = sub.add_parser("import", help="turn a transformers BERT directory into a tinylm model directory",
                       description="Import config.json + model.safetensors (or pytorch_model.bin) of a transformers "
                       "BERT into a tinylm model directory usable as --init for fine-tuning.")  # fmt: skip
    q.add_argument("hf_dir", help="transformers model directory")
    q.add_argument("out", help="new output directory")
    q.set_defaults(handler=_import)


def add_bench(sub: argparse._SubParsersAction) -> None:
    from tinylm import bench

    bench.add_parser(sub)


REGISTER = [add_pretrain, add_export, add_bench]
