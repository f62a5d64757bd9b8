"""Subcommands beyond `data`: pretrain, export, import, bench (each registers its parser here)."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinylm.config import add_config_args, config_from_args, named_config
from tinylm.registry import PAPER_CORPUS_SEED
from tinylm.registry import TASKS as TASK_NAMES


def _resolve_config(args: argparse.Namespace) -> None:
    """`--config NAME` may be a shipped config (paper-pretrain, ...) or a YAML path."""
    if getattr(args, "config", None):
        args.config = str(named_config(args.config))


def _pretrain(args: argparse.Namespace) -> int:
    from tinylm.pretrain import SECTIONS, pretrain

    _resolve_config(args)
    pretrain(config_from_args(SECTIONS, args))
    return 0


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    from tinylm.pretrain import SECTIONS

    p = sub.add_parser(
        "pretrain",
        help="MLM pre-training on a Wikipedia subset",
        description="Pre-train a TinyBert with masked-language modelling on the first N articles of the "
        "seeded "
        "Wikipedia order. Settings come from --config (a YAML file, or a shipped name: paper-pretrain, "
        "tiny-pretrain) and flags; flags win. The run directory holds config.yaml, data.json, metrics.jsonl, "
        "checkpoints/ and the final model.safetensors.",
    )
    add_config_args(p, SECTIONS)
    p.set_defaults(handler=_pretrain)


def _finetune(args: argparse.Namespace) -> int:
    from tinylm.config import read_yaml, section_fields
    from tinylm.finetune import SECTIONS, finetune

    _resolve_config(args)
    explicit = set(read_yaml(args.config)) if args.config else set()
    explicit |= {k for k in vars(args) if k in section_fields(SECTIONS)}
    finetune(config_from_args(SECTIONS, args), explicit)
    return 0


def add_finetune(sub: argparse._SubParsersAction) -> None:
    from tinylm.finetune import SECTIONS

    p = sub.add_parser(
        "finetune",
        help="fine-tune a pre-trained (or scratch) model on a classification task",
        description="Fine-tune a classifier on agnews, dbpedia, fewrel or your own file (--task file:PATH). "
        "--init RUN_DIR transfers embeddings + encoder from a pre-training run, a tinylm model directory or "
        "a "
        "transformers BERT directory; --init scratch is the same architecture from random init (the "
        "control). "
        "The test split is evaluated after every epoch (accuracy, macro-F1, per-class accuracy, confusion "
        "matrix); results.json keeps final-epoch and best-epoch accuracy. Shipped configs: "
        "paper-finetune-agnews, "
        "paper-finetune-dbpedia, paper-finetune-fewrel.",
    )
    add_config_args(p, SECTIONS)
    p.set_defaults(handler=_finetune)


def _check_corpus_specs(specs: list[str]) -> None:
    from tinylm.errors import TinylmError

    bad = [s for s in specs if not re.fullmatch(r"wiki:[0-9]+(,[0-9]+)*|(high|low):[a-z0-9_]+:[0-9]+", s)]
    if bad:
        raise TinylmError(
            f"--corpus {bad[0]!r}: expected wiki:N[,N...], high:TASK:N or low:TASK:N (N: articles)"
        )


def _overlap(args: argparse.Namespace) -> int:
    import json

    from tinylm.data.corpus import load_wiki_corpus
    from tinylm.data.sources import resolve_source
    from tinylm.data.tokenize import load_tokenizer
    from tinylm.errors import TinylmError
    from tinylm.fileio import write_json
    from tinylm.overlap import format_rows, load_selected_corpus, nested_overlap, task_token_counts

    _check_corpus_specs(args.corpus)
    source = resolve_source(args.data_dir)
    tok = load_tokenizer(source)
    thresholds = tuple(sorted(set(args.thresholds) | {1}))
    per_label = (args.samples_per_label_train, args.samples_per_label_test)
    tasks = {t: task_token_counts(t, source, tok, args.max_length, per_label=per_label) for t in args.tasks}
    rows = []
    sizes = []
    for spec in args.corpus:
        kind, _, rest = spec.partition(":")
        if kind == "wiki" and rest:
            sizes += [int(x) for x in rest.split(",")]
        elif kind in ("high", "low") and rest.count(":") == 1:
            task, n = rest.split(":")
            c = load_selected_corpus(
                source,
                tok,
                task,
                kind,
                int(n),
                args.pool,
                args.seed,
                args.max_length,
                args.eval_articles,
                args.cache_dir,
                per_label,
            )
            rows += [
                r | {"corpus": f"{kind}:{task}:{n}", "selection": c.description["selection"]["rule"]}
                for r in nested_overlap(c.train.ids, [int(n)], tasks, tok.vocab_size, thresholds)
            ]
        else:
            raise TinylmError(f"--corpus {spec!r}: expected wiki:N[,N...], high:TASK:N or low:TASK:N")
    if sizes:
        corpus = load_wiki_corpus(
            source, tok, max(sizes), args.seed, args.max_length, args.eval_articles, args.cache_dir
        )
        rows = nested_overlap(corpus.train.ids, sizes, tasks, tok.vocab_size, thresholds) + rows
    print(format_rows(rows, thresholds))
    if args.json:
        write_json(
            args.json,
            {"max_length": args.max_length, "corpus_seed": args.seed, "thresholds": thresholds, "rows": rows},
        )
        print(f"wrote {args.json}")
    elif args.print_json:
        print(json.dumps(rows, indent=2))
    return 0


def _flag(p: argparse.ArgumentParser, name: str, **kw: Any) -> None:
    """--name-with-dashes and --name_with_underscores for one option."""
    names = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
    p.add_argument(*names, dest=name, **kw)


def add_overlap(sub: argparse._SubParsersAction) -> None:
    from tinylm import overlap

    p = sub.add_parser(
        "overlap",
        help="token overlap between pre-training corpora and tasks",
        description=overlap.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--corpus",
        nargs="+",
        default=["wiki:20000,40000,90000"],
        help="corpora: wiki:N[,N...] (nested subsets, counted in one pass), high:TASK:N / low:TASK:N "
        "(overlap-controlled selections); default wiki:20000,40000,90000",
    )
    p.add_argument(
        "--tasks", nargs="+", default=list(TASK_NAMES), choices=list(TASK_NAMES), help="tasks (default: all)"
    )
    p.add_argument(
        "--thresholds", nargs="+", type=int, default=[1, 5, 20], help="k of coverage@k (default 1 5 20)"
    )
    _flag(p, "max_length", type=int, default=128, help="tokens per sample (default 128)")
    p.add_argument("--seed", type=int, default=PAPER_CORPUS_SEED, help="corpus order seed (default 42)")
    _flag(
        p,
        "eval_articles",
        type=int,
        default=1000,
        help="held-out articles at the end of the order (default 1000)",
    )
    for split in ("train", "test"):
        _flag(
            p,
            f"samples_per_label_{split}",
            type=int,
            default=-1,
            help=f"task {split} examples per label (-1: the paper's default)",
        )
    p.add_argument(
        "--pool", type=int, default=100000, help="candidate pool for high/low selections (default 100000)"
    )
    _flag(p, "data_dir", help="local data directory")
    _flag(p, "cache_dir", help="token cache directory")
    p.add_argument("--json", help="write the rows to this JSON file")
    p.add_argument("--print-json", action="store_true", help="print the rows as JSON after the table")
    p.set_defaults(handler=_overlap)


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


def add_committee(sub: argparse._SubParsersAction) -> None:
    from tinylm.committee import RULES

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


def _fallback_tokenizer(model_dir: Path) -> Any:
    """A model directory written by an older tinylm carries no tokenizer: the data directory's."""
    from tinylm.data.sources import resolve_source
    from tinylm.data.tokenize import load_tokenizer
    from tinylm.errors import DataError

    if not os.environ.get("TINYLM_DATA_DIR"):
        raise DataError(
            f"{model_dir}: carries no tokenizer files (written by an older tinylm); set TINYLM_DATA_DIR to a "
            "data directory with tokenizer/bert-base-uncased, or re-export the model with this version"
        )
    return load_tokenizer(resolve_source(None))


def _read_lines(where: str, path: str | None) -> list[str]:
    """The input's lines (a final newline ends the last line, it does not start a new one)."""
    import sys

    from tinylm.errors import DataError

    try:
        raw = sys.stdin.buffer.read() if path in (None, "-") else Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{where}: cannot read ({e})") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{where}, line {line}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); save it as UTF-8"
        ) from e
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _predict(args: argparse.Namespace) -> int:
    import json

    from tinylm.errors import ConfigError, DataError

    problems = [f"batch_size: must be positive, got {args.batch_size}"] if args.batch_size < 1 else []
    top_k = None if args.top_k is None else (0 if args.top_k == "all" else _int_or(args.top_k))
    if top_k is not None and top_k < 0:
        problems.append(f"top_k: expected a positive integer or 'all', got {args.top_k!r}")
    if problems:
        raise ConfigError(problems, "predict")
    model_dir = Path(args.model)
    where = "standard input" if args.input in (None, "-") else args.input
    lines = _read_lines(where, args.input)
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise DataError(f"{where}: no texts (expected one text per line)")
    names, probs, pred = _classify(model_dir, texts, args)
    k = len(names) if top_k == 0 else top_k
    out, i = [], 0
    for line in lines:  # one output line per input line: a blank input line gives a blank (or null) line
        if not line.strip():
            out.append("null" if args.json else "")
            continue
        if k is not None:
            order = probs[i].argsort()[::-1][:k]
            recs = [{"label": names[j], "score": round(float(probs[i, j]), 6)} for j in order]
            out.append(
                json.dumps(recs) if args.json else "\t".join(f"{r['label']}\t{r['score']:.4f}" for r in recs)
            )
        elif args.json:
            out.append(json.dumps({"label": names[pred[i]], "score": round(float(probs[i, pred[i]]), 6)}))
        else:
            out.append(f"{pred[i]}\t{names[pred[i]]}\t{probs[i, pred[i]]:.4f}")
        i += 1
    print("\n".join(out))
    return 0


def _classify(model_dir: Path, texts: list[str], args: argparse.Namespace) -> tuple[list[str], Any, Any]:
    """Label names, class probabilities (N, labels) and predicted labels, from torch weights or from an
    ONNX export (onnxruntime)."""
    import numpy as np
    import torch

    from tinylm.committee import Committee, combine, committee_logits, softmax
    from tinylm.data.tokenize import encode_texts, tokenizer_from_file
    from tinylm.errors import ConfigError
    from tinylm.predict import TokenData

    if (model_dir / "onnx.json").is_file():
        from tinylm.onnx_export import OnnxClassifier

        if args.rule != "mean_prob":
            raise ConfigError([f"rule: an ONNX export computes mean_prob only, got {args.rule}"], "predict")
        onnx = OnnxClassifier(model_dir)
        tok = tokenizer_from_file(onnx.tokenizer) if onnx.tokenizer else _fallback_tokenizer(model_dir)
        enc = encode_texts(tok, texts, onnx.max_length)
        data = TokenData(enc.ids, enc.lengths)
        chunks = []
        for start in range(0, len(data), args.batch_size):
            b = data.batch(np.arange(start, min(len(data), start + args.batch_size)), torch.device("cpu"))
            chunks.append(onnx.probabilities(b["input_ids"].numpy(), b["attention"].numpy()))
        probs = np.concatenate(chunks)
        return onnx.label_names, probs, probs.argmax(-1)
    committee = (
        Committee.load(model_dir)
        if (model_dir / "manifest.json").is_file()
        else Committee.from_runs([model_dir])
    )
    tok = tokenizer_from_file(committee.tokenizer) if committee.tokenizer else _fallback_tokenizer(model_dir)
    enc = encode_texts(tok, texts, committee.members[0].cfg.max_length)
    member_logits = committee_logits(committee, TokenData(enc.ids, enc.lengths), args.batch_size)
    return committee.label_names, softmax(member_logits).mean(0), combine(member_logits, args.rule)


def _int_or(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return -1


def add_predict(sub: argparse._SubParsersAction) -> None:
    from tinylm.committee import RULES

    p = sub.add_parser(
        "predict",
        help="label texts with a fine-tuned model or a committee",
        description="Read one text per line from a file or standard input and print one line per input "
        "line: 'label<TAB>label name<TAB>probability' (probability: the mean of the members' softmax), or "
        'with --json a {"label", "score"} record as transformers\' text-classification pipeline; a '
        "blank input line gives a blank output line (null with --json).",
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
        "--top-k",
        "--top_k",
        dest="top_k",
        default=None,
        help="print the k most probable labels (or 'all') with their scores, best first",
    )
    p.set_defaults(handler=_predict)


def _reproduce(args: argparse.Namespace) -> int:
    from tinylm.paper.reproduce import reproduce

    reproduce(
        args.preset,
        args.out or f"reproduce-{Path(args.preset).stem}",
        args.seeds,
        args.tasks,
        args.jobs,
        args.data_dir,
        dry_run=args.dry_run,
        estimate_only=args.estimate,
        gpus=args.gpus,
        gpu_tflops=args.gpu_tflops,
        executor=args.executor,
        ray_address=args.ray_address,
    )
    return 0


def _add_scale_args(p: argparse.ArgumentParser) -> None:
    """reproduce's cost estimate and executor flags."""
    p.add_argument(
        "--estimate",
        action="store_true",
        help="print the grid's cost (tokens, steps, FLOPs, projected time here and on N GPUs) and stop; "
        "every reproduce prints it before starting",
    )
    p.add_argument("--gpus", nargs="+", type=int, default=[1, 8], help="GPU counts to project (default 1 8)")
    p.add_argument(
        "--executor",
        default="local",
        choices=["local", "ray"],
        help="local (default: this machine, --jobs worker processes) or ray (each job a Ray task; needs "
        "pip install 'tinylm[ray]'; --out must be on a filesystem every node sees)",
    )
    p.add_argument(
        "--ray-address",
        "--ray_address",
        dest="ray_address",
        default=None,
        help="join this Ray cluster (e.g. auto, or HOST:6379 after `ray start --head`); default: a local Ray "
        "with --jobs CPUs",
    )
    p.add_argument(
        "--gpu-tflops",
        "--gpu_tflops",
        dest="gpu_tflops",
        type=float,
        default=100.0,
        help="assumed sustained TFLOP/s per GPU for the projection (default 100: an H100 in bf16 at ~10-25%% "
        "of peak for these small models)",
    )


def add_reproduce(sub: argparse._SubParsersAction) -> None:
    from tinylm.paper import grid

    p = sub.add_parser(
        "reproduce",
        help="the paper's experiments E1-E4 end to end, with a report",
        description=grid.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        default="quick",
        help="smoke, quick (default), cpu, paper, or a YAML file of the same keys",
    )
    p.add_argument(
        "--out", help="output directory (default: reproduce-PRESET); rerun with the same --out to resume"
    )
    p.add_argument("--seeds", type=int, help="fine-tuning seeds (default: the preset's)")
    p.add_argument("--tasks", nargs="+", choices=list(TASK_NAMES), help="tasks (default: the preset's)")
    p.add_argument(
        "--jobs", type=int, default=1, help="worker processes; cores are split between them (default 1)"
    )
    p.add_argument(
        "--data-dir", "--data_dir", dest="data_dir", help="local data directory (default: $TINYLM_DATA_DIR)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the whole grid, then run one pre-training and one "
        "fine-tuning run for 2 steps each (e.g. the paper preset on a CPU)",
    )
    _add_scale_args(p)
    p.set_defaults(handler=_reproduce)


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
    from tinylm.weights import load_model, model_tokenizer

    model, meta = load_model(Path(args.run))
    tok_file = model_tokenizer(Path(args.run), meta)
    tok = Path(tok_file).parent if tok_file else None
    encoder_only = str(meta.get("mlm_head", "")).startswith("random")
    out = export_model(model, Path(args.out), meta.get("label_names"), tok, encoder_only=encoder_only)
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
    from tinylm.weights import save_model

    model, report = import_model(Path(args.hf_dir))
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        from tinylm.errors import TinylmError

        raise TinylmError(f"{out} exists and is not empty; choose a new output directory")
    save_model(
        model,
        out,
        tokenizer=hf_tokenizer_file(Path(args.hf_dir)),
        imported_from=str(args.hf_dir),
        mlm_head=report["mlm_head"],
    )
    pooler = "kept" if model.bert.pooler is not None else "none in the source"
    print(
        f"imported {args.hf_dir} -> {out}: {len(report['loaded'])} tensors loaded (pooler {pooler}, MLM head "
        f"{report['mlm_head']}), {len(report['ignored'])} ignored ({', '.join(report['ignored'][:4]) or '-'})"
    )
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
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


def add_bench(sub: argparse._SubParsersAction) -> None:
    from tinylm import bench

    bench.add_parser(sub)


REGISTER: list[Callable[[argparse._SubParsersAction[Any]], None]] = [
    add_reproduce,
    add_pretrain,
    add_finetune,
    add_overlap,
    add_committee,
    add_predict,
    add_export,
    add_bench,
]
