"""ONNX for deployment: a fine-tuned model, or a whole committee with every member in one graph (members
of one architecture stacked into one batched computation), exported with `torch.onnx` and checked against
the torch logits with onnxruntime. `tinylm predict` runs such a directory; `tinylm bench latency` times it.

An export directory holds `model.onnx`, `onnx.json` (kind, labels, inputs/outputs, the check) and the
tokenizer files, so that it predicts on a machine with neither torch weights nor a data directory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tinylm.committee import Committee
from tinylm.config import ModelConfig
from tinylm.errors import TinylmError
from tinylm.fileio import atomic_dir, write_json
from tinylm.hf import hf_config
from tinylm.logs import quiet_logger
from tinylm.model import TinyBertForSequenceClassification, stack_members
from tinylm.model_dir import TOKENIZER_FILES

#: The largest |onnxruntime − torch| logit difference an export may have (fp32).
TOLERANCE = 1e-4


class CommitteeGraph(nn.Module):
    """A committee as one module: each architecture group stacked; outputs every member's logits
    (members, batch, labels) in member order and the soft committee's probabilities (mean of softmax)."""

    def __init__(self, members: list[TinyBertForSequenceClassification], groups: list[list[int]]):
        super().__init__()
        self.groups = groups
        self.stacked = nn.ModuleList(stack_members([members[i] for i in g]) for g in groups)
        self.size = len(members)

    def forward(self, input_ids: Tensor, attention: Tensor, token_type_ids: Tensor) -> tuple[Tensor, Tensor]:
        out: list[Tensor | None] = [None] * self.size
        for g, model in zip(self.groups, self.stacked, strict=True):
            logits = model(input_ids, attention, token_type_ids=token_type_ids)
            for j, i in enumerate(g):
                out[i] = logits[j]
        member_logits = torch.stack(out)  # type: ignore[arg-type]
        return member_logits, member_logits.softmax(-1).mean(0)


class ClassifierGraph(nn.Module):
    """A classifier with BERT's three inputs (what a tokenizer returns), token types included."""

    def __init__(self, model: TinyBertForSequenceClassification):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention: Tensor, token_type_ids: Tensor) -> Tensor:
        return self.model(input_ids, attention, token_type_ids=token_type_ids)


#: The graph's inputs: a tokenizer's full output (BERT's names).
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def _example(max_length: int, vocab: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000 % vocab, vocab, (3, min(max_length, 24)), generator=g)
    att = torch.ones_like(ids)
    att[1, ids.shape[1] // 2 :] = 0  # one padded row: the graph must keep the mask
    types = torch.zeros_like(ids)
    types[2, ids.shape[1] // 2 :] = 1  # a second segment: the graph must keep the token types
    return ids, att, types


_TORCH_ONNX_REGISTRY = "torch.onnx._internal.exporter._registration"


def export_module(module: nn.Module, path: Path, outputs: list[str], max_length: int, vocab: int) -> float:
    """Export `module` (inputs input_ids, attention_mask, token_type_ids; batch and sequence dynamic; the
    weights inside the file) to `path`, then run it in onnxruntime on a padded batch of another shape;
    returns the largest logit difference to torch."""
    import onnxruntime as ort

    module = module.eval()
    example = _example(max_length, vocab)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=max_length)
    axes = {0: batch, 1: seq}
    # the exporter logs "torchvision is not installed. Skipping torchvision::nms" (4 lines) per export
    with warnings.catch_warnings(), torch.no_grad(), quiet_logger(_TORCH_ONNX_REGISTRY):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=INPUTS,
            output_names=outputs,
            dynamic_shapes={"input_ids": axes, "attention": axes, "token_type_ids": axes},
            dynamo=True,
            external_data=False,  # one file: copying model.onnx alone keeps it working (< 2 GB)
            verbose=False,
        )
    other = tuple(t[:, :-3] for t in example)  # another shape, the padded and two-segment rows kept
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, dict(zip(INPUTS, (t.numpy() for t in other), strict=True)))
    with torch.no_grad():
        want = module(*other)
    want = want if isinstance(want, tuple) else (want,)
    return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want, strict=True))


def export_onnx(source: Path, out: Path) -> dict[str, Any]:
    """Export a fine-tuned run/model directory or a committee directory to `out` (atomically)."""
    if out.exists() and any(out.iterdir()):
        raise TinylmError(f"{out} exists and is not empty; choose a new output directory")
    committee = (
        Committee.load(source) if (source / "manifest.json").is_file() else Committee.from_runs([source])
    )
    members = [m.cpu() for m in committee.members]
    cfg = members[0].cfg
    kind = "committee" if (source / "manifest.json").is_file() else "classifier"
    module: nn.Module = (
        CommitteeGraph(members, committee.groups) if kind == "committee" else ClassifierGraph(members[0])
    )
    outputs = ["member_logits", "probs"] if kind == "committee" else ["logits"]
    if out.exists():
        out.rmdir()
    with atomic_dir(out) as tmp:
        diff = export_module(module, tmp / "model.onnx", outputs, cfg.max_length, cfg.vocab_size)
        if not diff <= TOLERANCE:
            raise TinylmError(f"ONNX export of {source}: onnxruntime differs from torch by {diff:.2e}")
        if committee.tokenizer:
            tok_dir = Path(committee.tokenizer).parent
            for name in {*TOKENIZER_FILES, "tokenizer_config.json", "special_tokens_map.json"}:
                if (tok_dir / name).is_file():
                    shutil.copy(tok_dir / name, tmp / name)
        meta = {
            "kind": kind,
            "format": "onnx",
            "members": len(members),
            "architectures": [members[g[0]].cfg.__dict__ for g in committee.groups],
            "label_names": committee.label_names,
            "max_length": cfg.max_length,
            "tokenizer": Path(committee.tokenizer).name if committee.tokenizer else None,
            "inputs": INPUTS,
            "outputs": outputs,
            "source": str(source),
            "check": {"max_abs_logit_diff_vs_torch": diff, "tolerance": TOLERANCE},
        }
        write_json(tmp / "onnx.json", meta)
        if kind == "classifier":  # what ONNX tooling (optimum, pipelines) reads: model_type and labels
            config = hf_config(cfg, "classifier", committee.label_names, members[0].num_labels)
            write_json(tmp / "config.json", config | {"tinylm_format": "onnx"})
        from tinylm.model_card import write_card

        write_card(tmp, source, "onnx")
    return meta


class OnnxClassifier:
    """An export directory loaded in onnxruntime: class probabilities (mean of the members' softmax for a
    committee) for token ids."""

    def __init__(self, directory: Path):
        import onnxruntime as ort

        self.meta = json.loads((directory / "onnx.json").read_text())
        self.session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
        self.label_names: list[str] = self.meta["label_names"]
        self.max_length: int = self.meta["max_length"]
        tok = self.meta.get("tokenizer")
        self.tokenizer = str(directory / tok) if tok and (directory / tok).is_file() else None

    def probabilities(self, ids: np.ndarray, attention: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids.astype(np.int64), "attention_mask": attention.astype(np.int64)}
        if "token_type_ids" in {i.name for i in self.session.get_inputs()}:  # (exports before 0.2: two)
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        outs = self.session.run(None, feed)
        if self.meta["kind"] == "committee":
            return outs[1]
        e = np.exp(outs[0] - outs[0].max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)


def is_onnx_dir(path: Path) -> bool:
    return (path / "onnx.json").is_file() and (path / "model.onnx").is_file()


def time_onnx(module: nn.Module, ids: Tensor, reps: int, outputs: list[str]) -> float:
    """Median ms of one onnxruntime call of `module` exported to a temporary file, on `ids` (no padding)."""
    import statistics
    import time

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
        first = module.stacked[0] if isinstance(module, CommitteeGraph) else module
        module = module if isinstance(module, CommitteeGraph) else ClassifierGraph(module)  # type: ignore[arg-type]
        cfg: ModelConfig = first.cfg  # type: ignore[assignment]
        export_module(module, path, outputs, max(cfg.max_length, ids.shape[1]), cfg.vocab_size)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        ones = np.ones(tuple(ids.shape), dtype=np.int64)
        feed = {"input_ids": ids.cpu().numpy(), "attention_mask": ones, "token_type_ids": ones * 0}
        for _ in range(2):
            session.run(None, feed)
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            session.run(None, feed)
            ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


__all__ = ["CommitteeGraph", "OnnxClassifier", "export_onnx", "is_onnx_dir", "time_onnx"]
