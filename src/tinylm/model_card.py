"""Model cards (`README.md`) for the directories tinylm writes, rendered from the run's own records.

The Hub's conventions: YAML front matter (`library_name`, `pipeline_tag`, `license` left for the owner to
fill in, `datasets`, `tags`, and `model-index` with the test metrics), then what the model is
(architecture, parameters), how it was made (pre-training corpus and tokens, held-out MLM loss against the
unigram baseline of the same masked targets; fine-tuning task, sizes and test accuracy; committee members),
how to load it (transformers, onnxruntime, tinylm) and the paper to cite. Every number comes from the
directory's `model.json`, `results.json`, `config.yaml`, `init.json`, or the pre-training run `init.json`
names (when it is still there); what is not recorded is left out, never guessed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinylm.fileio import write_text

CITATION = """@article{gross2025tiny,
  title   = {Tiny language models},
  author  = {Gross, R. D. and Tzach, Y. and Halevi, T. and Koresh, E. and Kanter, I.},
  journal = {arXiv preprint arXiv:2507.14871},
  year    = {2025}
}"""

#: Hub dataset ids of the data tinylm trains on (the cards' `datasets` field).
HUB_DATASETS = {
    "wikipedia": "wikimedia/wikipedia",
    "agnews": "ag_news",
    "dbpedia": "dbpedia_14",
    "fewrel": "few_rel",
}


def _read(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _yaml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def front_matter(meta: dict[str, Any], results: dict[str, Any], fmt: str, datasets: list[str]) -> str:
    """The card's YAML header: library, pipeline tag, empty license, datasets, tags, model-index."""
    classifier = meta.get("kind") in ("classifier", "committee")
    tag = "text-classification" if classifier else ("fill-mask" if fmt != "onnx" else "feature-extraction")
    library = {"transformers": "transformers", "onnx": "onnx", "tinylm": "tinylm"}[fmt]
    lines = [
        "---",
        f"library_name: {library}",
        f"pipeline_tag: {tag}",
        "license: # the owner's choice (the training data's licenses apply: Wikipedia CC BY-SA)",
        f"datasets: {_yaml_list([HUB_DATASETS.get(d, d) for d in datasets])}",
        f"tags: {_yaml_list(['tinylm', 'bert', 'tiny-language-model'])}",
    ]
    test = results.get("test") or results.get("final_epoch")
    if classifier and test and "accuracy" in test:
        task = results.get("task", meta.get("task", "task"))
        lines += [
            "model-index:",
            f"- name: {json.dumps(meta.get('name', 'tinylm model'))}",
            "  results:",
            "  - task: {type: text-classification}",
            f"    dataset: {{name: {json.dumps(task)}, type: {json.dumps(HUB_DATASETS.get(task, task))}}}",
            "    metrics:",
            f"    - {{type: accuracy, value: {round(float(test['accuracy']), 4)}}}",
        ]
        if "macro_f1" in test:
            lines.append(f"    - {{type: f1, name: macro-F1, value: {round(float(test['macro_f1']), 4)}}}")
    return "\n".join([*lines, "---"])


def architecture(model: dict[str, Any], parameters: dict[str, Any] | None) -> str:
    conv = f", a Conv2d front-end of {model['conv_layers']} layer(s)" if model.get("conv_layers") else ""
    text = (
        f"A BERT encoder of {model['layers']} layer(s), hidden size {model['hidden_size']}, "
        f"{model['heads']} attention heads, feed-forward size {model['ffn_size']}{conv}; "
        f"sequences up to {model['max_length']} WordPiece tokens (bert-base-uncased vocabulary, "
        f"{model['vocab_size']:,} entries)."
    )
    if parameters:
        text += f" Backbone parameters: {parameters.get('backbone', 0):,}."
    return text


def pretraining(results: dict[str, Any], config: dict[str, Any]) -> str:
    """The pre-training paragraph of a pre-training run's records (empty when there are none)."""
    ev, data = results.get("final_eval") or {}, results.get("data") or {}
    if not ev:
        return ""
    gap = ev["unigram_loss"] - ev["mlm_loss"]
    relation = (
        f"{gap:.2f} nats below it" if gap >= 0 else f"{-gap:.2f} nats above it: not past the unigram stage"
    )
    corpus = (
        f"the first {data.get('max_length', 128)} WordPiece tokens of {data.get('num_articles', '?'):,} "
        f"Wikipedia articles (seed {data.get('seed', '?')})"
        if data
        else "Wikipedia"
    )
    return (
        f"Pre-trained with masked-language modelling on {corpus}: {results.get('tokens', 0):,} training "
        f"tokens in {results.get('steps', 0):,} steps (batch {config.get('batch_size', '?')}, peak lr "
        f"{config.get('lr', '?')}, seed {config.get('seed', '?')}, {results.get('precision', '?')}). "
        f"Held-out MLM loss **{ev['mlm_loss']:.3f}** nats against **{ev['unigram_loss']:.3f}** for the "
        f"unigram baseline of the same masked targets ({relation}); held-out MLM accuracy "
        f"{ev.get('mlm_accuracy', 0):.3f}."
    )


def finetuning(results: dict[str, Any], config: dict[str, Any]) -> str:
    """The fine-tuning paragraph of a fine-tuning run's records (empty when there are none)."""
    test = results.get("test") or results.get("final_epoch")
    if not test or "task" not in results:
        return ""
    chosen = "the epoch chosen on validation" if results.get("num_validation") else "the final epoch"
    text = (
        f"Fine-tuned on **{results['task']}** ({len(results.get('label_names') or [])} labels): "
        f"{results.get('num_train', '?'):,} training, {results.get('num_validation', 0):,} validation and "
        f"{results.get('num_test', '?'):,} test examples, {config.get('epochs', '?')} epoch(s), lr "
        f"{config.get('lr', '?')}, seed {config.get('seed', '?')}, pooling {config.get('pooling', 'cls')}. "
        f"Test accuracy ({chosen}, epoch {test.get('epoch', '?')}): **{float(test['accuracy']):.4f}**"
    )
    if "macro_f1" in test:
        text += f", macro-F1 {float(test['macro_f1']):.4f}"
    init = results.get("init")
    return text + (f". Initialised from `{init}`." if init and init != "scratch" else ". Random init.")


def committee(manifest: dict[str, Any]) -> str:
    """The members of a committee directory, each with its architecture and final test accuracy."""
    from tinylm.config import model_shape

    lines = [
        f"A soft committee of {len(manifest['members'])} models: the average of their softmax outputs "
        "(`mean_prob`; the paper's rule). Members:"
    ]
    for m in manifest["members"]:
        acc = (m.get("results") or {}).get("final_accuracy")
        score = f", test accuracy {acc:.4f}" if isinstance(acc, float) else ""
        lines.append(f"- `{m['dir']}`: {model_shape(m['model'], ffn=True)} (layers/hidden/heads/ffn){score}")
    return "\n".join(lines)


def how_to_load(fmt: str, meta: dict[str, Any]) -> str:
    kind = meta.get("kind")
    if fmt == "onnx":
        return (
            "```python\nimport onnxruntime as ort\nfrom transformers import AutoTokenizer\n\n"
            'tok = AutoTokenizer.from_pretrained("DIR")\n'
            'session = ort.InferenceSession("DIR/model.onnx")\n'
            'outputs = session.run(None, dict(tok(["some text"], padding=True, return_tensors="np")))\n```\n'
            "or `tinylm predict --model DIR`."
        )
    if kind == "committee":
        return (
            "`tinylm predict --model DIR` (the soft committee), or `tinylm export DIR OUT --format onnx` "
            "(all members in one ONNX graph); each member `DIR/members/NN` is a model directory of its own."
        )
    if fmt == "tinylm":
        return "`tinylm predict --model DIR` (the conv front-end has no transformers counterpart)."
    remote = meta.get("model", {}).get("pooling") == "mean" and kind == "classifier"
    auto = "AutoModelForSequenceClassification" if kind == "classifier" else "AutoModelForMaskedLM"
    if meta.get("mlm_head", "").startswith("random"):
        auto = "AutoModel"
    trust = ", trust_remote_code=True" if remote else ""
    return (
        f"```python\nfrom transformers import AutoTokenizer, {auto}\n\n"
        f'model = {auto}.from_pretrained("DIR"{trust})\ntok = AutoTokenizer.from_pretrained("DIR")\n```\n'
        "or `tinylm predict --model DIR`"
        + (" (the mean-pooled head ships as `modeling_tinylm.py`)." if remote else ".")
    )


def init_records(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The results and config of the pre-training run a fine-tuning run started from (if it is still
    where `init.json` says)."""
    init = _read(directory / "init.json").get("init")
    if not init or not Path(init).is_dir():
        return {}, {}
    return _read(Path(init) / "results.json"), _config(Path(init))


def _config(directory: Path) -> dict[str, Any]:
    import yaml

    try:
        value = yaml.safe_load((directory / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}


def render_card(directory: Path, fmt: str = "transformers") -> str:
    """The model card of a tinylm model directory (a run, an import) for the given format."""
    meta, results, config = (
        _read(directory / "model.json"),
        _read(directory / "results.json"),
        _config(directory),
    )
    manifest = _read(directory / "manifest.json")
    if manifest.get("kind") == "committee":
        meta = {"kind": "committee", "model": manifest["members"][0]["model"]}
    pre_results, pre_config = (
        (results, config) if results.get("kind") == "pretrain" else init_records(directory)
    )
    datasets = (["wikipedia"] if pre_results else []) + ([results["task"]] if "task" in results else [])
    model = meta.get("model") or {}
    name = meta.get("name") or directory.name
    sections = [
        front_matter(meta | {"name": name}, results, fmt, datasets),
        f"# {name}",
        'A tiny language model made with tinylm, the toolkit that implements and reproduces "Tiny language '
        'models" (Gross et al., arXiv 2507.14871).',
        "## Architecture",
        architecture(model, results.get("parameters")) if model else "Not recorded.",
    ]
    made = [p for p in (pretraining(pre_results, pre_config), finetuning(results, config)) if p]
    if manifest.get("kind") == "committee":
        made.append(committee(manifest))
    if meta.get("imported_from"):
        made.append(
            f"Imported from the transformers directory `{meta['imported_from']}` (not trained by tinylm)."
        )
    sections += ["## Training", "\n\n".join(made) if made else "No training records in this directory."]
    sections += ["## How to load", how_to_load(fmt, meta), "## Citation", f"```bibtex\n{CITATION}\n```"]
    return "\n\n".join(sections) + "\n"


def write_card(target: Path, source: Path | None = None, fmt: str = "transformers") -> None:
    """README.md in `target`, rendered from the records of `source` (default: `target` itself)."""
    write_text(target / "README.md", render_card(source or target, fmt))
