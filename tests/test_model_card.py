"""Model cards: every directory tinylm writes (pre-training run, fine-tuning run, export, ONNX export,
committee, import) has a README.md rendered from its own records, with the Hub's front matter."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from test_finetune import QUIET, ft, pre_run  # noqa: F401 (pre_run: a fixture)
from tinylm.cli import main
from tinylm.committee import Committee
from tinylm.finetune import finetune


def _card(directory: Path) -> tuple[dict, str]:
    text = (directory / "README.md").read_text()
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_cards_carry_the_runs_own_numbers(data_dir: Path, tmp_path: Path, pre_run: Path) -> None:  # noqa: F811
    pre = json.loads((pre_run / "results.json").read_text())
    front, body = _card(pre_run)
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "fill-mask"
    assert "license" in front and front["license"] is None  # left for the owner
    assert front["datasets"] == ["wikimedia/wikipedia"]
    ev = pre["final_eval"]
    assert f"{ev['mlm_loss']:.3f}" in body and f"{ev['unigram_loss']:.3f}" in body
    assert f"{pre['tokens']:,} training tokens" in body and "arXiv:2507.14871" in body

    run = finetune(ft(data_dir, tmp_path, init=str(pre_run), name="ft"), **QUIET).path
    res = json.loads((run / "results.json").read_text())
    front, body = _card(run)
    assert front["pipeline_tag"] == "text-classification"
    assert front["datasets"] == ["wikimedia/wikipedia", "ag_news"]
    metrics = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert metrics["accuracy"] == round(res["final_epoch"]["accuracy"], 4)
    assert f"{res['final_epoch']['accuracy']:.4f}" in body and f"{ev['mlm_loss']:.3f}" in body  # + its init
    assert "AutoModelForSequenceClassification" in body

    assert main(["export", str(run), str(tmp_path / "hf")]) == 0
    assert (
        _card(tmp_path / "hf")[0]["model-index"][0]["results"][0]["metrics"][0]["value"]
        == metrics["accuracy"]
    )
    assert main(["export", str(run), str(tmp_path / "onnx"), "--format", "onnx"]) == 0
    front, body = _card(tmp_path / "onnx")
    assert front["library_name"] == "onnx" and "onnxruntime" in body
    com = Committee.from_runs([str(run), str(run)]).save(tmp_path / "com")
    front, body = _card(com)
    assert "soft committee of 2 models" in body and "members/01" in body
