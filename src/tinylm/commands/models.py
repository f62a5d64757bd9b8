"""`tinylm committee`, `predict`, `export` and `import`: what is done with trained model directories."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _committee(args: argparse.Namespace) -> int:
    from tinylm.committee import evaluate_committee, plot_curve
    from tinylm.errors import TinylmError
    from tinylm.fileio import write_json

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise TinylmError(f"{out} exists and is not empty; choose a new --out")
    result, committee = evaluate_committee(
        args.members, args.task, args.reference, args.rule, args.orderings, args.seed, args.mode
    )
    committee.save(out / "committee", {"task": result["task"], "rule": args.rule})
    write_json(out / "results.json", result)
    plot_curve(result, out / "accuracy_vs_k.png")
    c = result["curve"]
    print("execution: " + committee.execution_plan(64, args.mode))
    print(f"soft committee on {result['task']} ({result['num_test']} test examples), rule {args.rule}:")
    for k, f, m, sd in zip(c["k"], c["first_k"], c["mean"], c["std"], strict=True):
        print(f"  k={k:<2} first-k {f:.4f}   random orderings {m:.4f} ± {sd:.4f}")
    if "reference" in result:
        print(f"  reference {result['reference']['run']}: {result['reference']['accuracy']:.4f}")
    print("  all rules (K members): " + ", ".join(f"{r} {a:.4f}" for r, a in result["all_rules"].items()))
    print(f"wrote {out}/results.json, {out}/accuracy_vs_k.png and the committee artifact {out}/committee/")
    return 0


def add_committee(sub: argparse._SubParsersAction[Any]) -> None:
    from tinylm.registry import RULES

    p = sub.add_parser(
        "committee",
        help="soft committee of fine-tuned runs: accuracy vs size, one artifact",
        description="Build a soft committee from fine-tuned runs (any architectures sharing tokenizer and "
        "labels), evaluate it on their shared test split for k = 1..K members (first k, and mean ± std "
        "over random orderings) next to a --reference run, and save it as one loadable directory.",
    )
    p.add_argument("--members", nargs="*", default=[], required=True, help="fine-tuned run directories")
    p.add_argument("--task", help="task the members were fine-tuned on (checked)")
    p.add_argument("--reference", help="a deep model's fine-tuned run to compare with (e.g. BERT-6)")
    p.add_argument(
        "--rule",
        default="mean_prob",
        choices=list(RULES),
        help="mean_prob (soft committee, default), mean_logit or vote",
    )
    p.add_argument(
        "--orderings", type=int, default=20, help="random member orderings for mean ± std (default 20)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the orderings (default 0)")
    p.add_argument(
        "--mode",
        default="auto",
        choices=["auto", "stacked", "sequential"],
        help="member evaluation: stacked (batched over members), sequential, or auto (stacked for batches "
        "of <= 8)",
    )
    p.add_argument(
        "--out", required=True, help="new output directory (results.json, accuracy_vs_k.png, committee/)"
    )
    p.set_defaults(handler=_committee)


def _predict(args: argparse.Namespace) -> int:
    from tinylm.classify import classify, output_lines, read_lines, texts_of
    from tinylm.errors import ConfigError, DataError

    problems = [f"batch_size: must be positive, got {args.batch_size}"] if args.batch_size < 1 else []
    top_k = None if args.top_k is None else (0 if args.top_k == "all" else _int_or(args.top_k))
    if args.top_k is not None and args.top_k != "all" and top_k is not None and top_k < 1:
        problems.append(f"top_k: expected a positive integer or 'all', got {args.top_k!r}")
    if problems:
        raise ConfigError(problems, "predict")
    where = "standard input" if args.input in (None, "-") else args.input
    lines = read_lines(where, args.input)
    texts = texts_of(lines, args.blank)
    if not texts:
        raise DataError(f"{where}: no texts (expected one text per line)")
    pred = classify(Path(args.model), texts, args.batch_size, args.rule)
    print("\n".join(output_lines(lines, pred, args.json, top_k, args.blank)))
    return 0


def _int_or(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return -1


def add_predict(sub: argparse._SubParsersAction[Any]) -> None:
    from tinylm.registry import RULES

    p = sub.add_parser(
        "predict",
        help="label texts with a fine-tuned model or a committee",
        description="Read one text per line from a file or standard input and print one line per input "
        "line: 'label<TAB>label name<TAB>probability' (probability: the mean of the members' softmax), or "
        'with --json a {"label", "score"} record as transformers\' text-classification pipeline. A blank '
        "line (empty, or only whitespace: spaces, tabs, no-break and other Unicode spaces) gives a blank "
        "output line (null with --json), or with --blank predict a prediction like any other line.",
    )
    p.add_argument(
        "--model", required=True, help="a fine-tuned run / model directory, or a committee directory"
    )
    p.add_argument("--input", default="-", help="text file, one text per line (default: standard input)")
    p.add_argument(
        "--rule", default="mean_prob", choices=list(RULES), help="committee rule (default mean_prob)"
    )
    p.add_argument(
        "--batch-size",
        "--batch_size",
        dest="batch_size",
        type=int,
        default=64,
        help="batch size (default 64)",
    )
    p.add_argument("--json", action="store_true", help="JSON records, one per line")
    p.add_argument(
        "--blank",
        default="null",
        choices=["null", "predict"],
        help="blank or whitespace-only lines: a blank output line / null (default), or predict them as text "
        "(what transformers' pipeline does)",
    )
    p.add_argument(
        "--top-k",
        "--top_k",
        dest="top_k",
        default=None,
        help="print the k most probable labels (or 'all') with their scores, best first",
    )
    p.set_defaults(handler=_predict)


def _export_onnx(args: argparse.Namespace) -> int:
    from tinylm.errors import TinylmError

    try:
        from tinylm.onnx_export import export_onnx
    except ImportError as e:  # pragma: no cover - the extra is part of the dev install
        raise TinylmError(
            f"--format onnx needs onnx and onnxruntime: pip install 'tinylm[onnx]' ({e})"
        ) from e
    meta = export_onnx(Path(args.run), Path(args.out))
    diff = meta["check"]["max_abs_logit_diff_vs_torch"]
    print(
        f"wrote {args.out}/model.onnx ({meta['kind']}, {meta['members']} member(s); onnxruntime vs torch "
        f"logits: max |diff| {diff:.1e}); run it with: tinylm predict --model {args.out}"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    if args.format == "onnx":
        return _export_onnx(args)
    from tinylm.hf import export_model
    from tinylm.model_card import write_card
    from tinylm.model_dir import load_model, model_tokenizer

    model, meta = load_model(Path(args.run))
    tok_file = model_tokenizer(Path(args.run), meta)
    tok = Path(tok_file).parent if tok_file else None
    encoder_only = str(meta.get("mlm_head", "")).startswith("random")
    out = export_model(model, Path(args.out), meta.get("label_names"), tok, encoder_only=encoder_only)
    write_card(out, Path(args.run))
    auto = {"classifier": "ForSequenceClassification", "mlm": "ForMaskedLM"}[meta["kind"]]
    auto = "" if encoder_only else auto
    print(
        f"wrote {out} (config.json + model.safetensors{' + tokenizer files' if tok else ''}"
        f"{'; an encoder without MLM head: its source had none' if encoder_only else ''}); load it with "
        f"transformers.AutoModel{auto}.from_pretrained('{out}')"
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    from tinylm.hf import hf_tokenizer_file, import_model
    from tinylm.model_card import write_card
    from tinylm.model_dir import save_model

    model, report = import_model(Path(args.hf_dir))
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        from tinylm.errors import TinylmError

        raise TinylmError(f"{out} exists and is not empty; choose a new output directory")
    head = {k: report[k] for k in ("mlm_head", "classifier") if k in report}
    labels = {"label_names": report["label_names"]} if report.get("label_names") else {}
    save_model(
        model,
        out,
        tokenizer=hf_tokenizer_file(Path(args.hf_dir)),
        imported_from=str(args.hf_dir),
        **head,
        **labels,
    )
    write_card(out)
    pooler = "kept" if model.bert.pooler is not None else "none in the source"
    heads = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in head.items())
    print(
        f"imported {args.hf_dir} -> {out} ({report['kind']}): {len(report['loaded'])} tensors loaded (pooler "
        f"{pooler}, {heads}), {len(report['ignored'])} ignored ({', '.join(report['ignored'][:4]) or '-'})"
    )
    return 0


def add_export(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "export",
        help="write a transformers-loadable BERT directory",
        description="Export a finished run (or any tinylm model directory) to config.json + "
        "model.safetensors that transformers loads with AutoModelForMaskedLM / "
        "AutoModelForSequenceClassification. Conv front-end models cannot be exported.",
    )
    p.add_argument(
        "run", help="run directory holding model.safetensors + model.json, or a committee directory"
    )
    p.add_argument("out", help="new output directory")
    p.add_argument(
        "--format",
        default="transformers",
        choices=["transformers", "onnx"],
        help="transformers (config.json + model.safetensors) or onnx (model.onnx for onnxruntime: a "
        "fine-tuned model, or a committee with all members in one graph; checked against torch logits)",
    )
    p.set_defaults(handler=_export)
    q = sub.add_parser(
        "import",
        help="turn a transformers BERT directory into a tinylm model directory",
        description="Import config.json + model.safetensors (or pytorch_model.bin) of a transformers "
        "BERT into a tinylm model directory usable as --init for fine-tuning.",
    )
    q.add_argument("hf_dir", help="transformers model directory")
    q.add_argument("out", help="new output directory")
    q.set_defaults(handler=_import)


def _prune(args: argparse.Namespace) -> int:
    from tinylm.errors import TinylmError
    from tinylm.runs import RunDir

    runs: list[Path] = []
    for given in map(Path, args.runs):
        grid = given / "runs"
        runs += _grid_runs(grid) if grid.is_dir() else [given]
    unfinished = [p for p in runs if not RunDir(p).is_finished()]
    if unfinished:
        raise TinylmError(
            f"{unfinished[0]}: not a finished run (no results.json); a run being trained or to be resumed "
            f"keeps its checkpoints ({len(unfinished)} such)"
        )
    freed = 0
    for path in runs:
        before = _size(path)
        RunDir(path).prune()
        freed += before - _size(path)
    print(
        f"pruned {len(runs)} finished run(s): {freed / 2**20:,.1f} MiB freed (checkpoints/, best.safetensors)"
    )
    return 0


def _grid_runs(grid: Path) -> list[Path]:
    """A grid's run directories, the runs set aside below the gate (ID.below-gate/seed-S) included."""
    from tinylm.paper.reseed import SET_ASIDE_SUFFIX

    out: list[Path] = []
    for p in sorted(q for q in grid.iterdir() if q.is_dir()):
        out += sorted(q for q in p.iterdir() if q.is_dir()) if p.name.endswith(SET_ASIDE_SUFFIX) else [p]
    return out


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def add_prune(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "prune",
        help="delete what only a resume needs from finished runs",
        description="Delete checkpoints/ (weights + optimizer state) and best.safetensors from finished runs "
        "(results.json present): what remains is the model (model.safetensors, model.json, tokenizer, "
        "config.json) and the run's records (config.yaml, data.json, metrics.jsonl, results.json, "
        "predictions, snapshots). Runs finish pruned unless trained with --prune false.",
    )
    p.add_argument("runs", nargs="+", help="run directories, or reproduce output directories (OUT/runs/*)")
    p.set_defaults(handler=_prune)
