"""Every bad input found by trying tinylm as a new user would: each gives exit code 2 and a one-line
`tinylm: error:` naming the file/line/field and what was expected, and leaves nothing behind."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tinylm.cli import main

Setup = Callable[[Path, Path], list[str]]  # (data dir, scratch dir) -> argv


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def file_task(rows: list[dict]) -> Setup:
    def setup(data: Path, tmp: Path) -> list[str]:
        return ["finetune", "--task", f"file:{jsonl(tmp / 't.jsonl', rows)}", "--epochs", "1"]

    return setup


def agnews_line(line: bytes) -> Setup:
    def setup(data: Path, tmp: Path) -> list[str]:
        path = data / "agnews" / "train_subset_20k.csv.gz"
        with gzip.open(path, "rb") as f:
            rows = f.read().splitlines(keepends=True)
        with gzip.open(path, "wb") as f:
            f.write(b"".join(rows[:3] + [line] + rows[3:]))
        return ["finetune", "--task", "agnews", "--epochs", "1"]

    return setup


def fewrel_edit(edit: Callable[[dict, dict], None]) -> Setup:
    def setup(data: Path, tmp: Path) -> list[str]:
        rel = json.loads((data / "fewrel" / "train_wiki.json").read_text())
        names = json.loads((data / "fewrel" / "pid2name.json").read_text())
        edit(rel, names)
        (data / "fewrel" / "train_wiki.json").write_text(json.dumps(rel))
        (data / "fewrel" / "pid2name.json").write_text(json.dumps(names))
        return ["finetune", "--task", "fewrel", "--epochs", "1"]

    return setup


def flags(*argv: str) -> Setup:
    return lambda data, tmp: list(argv)


def bad_init(data: Path, tmp: Path) -> list[str]:
    (tmp / "hf").mkdir()
    (tmp / "hf" / "config.json").write_text("{not json")
    return ["finetune", "--task", "agnews", "--init", str(tmp / "hf")]


def garbage_resume(data: Path, tmp: Path) -> list[str]:
    from tinylm.data.sources import resolve_source
    from tinylm.data.tokenize import load_tokenizer

    vocab = str(load_tokenizer(resolve_source(str(data))).vocab_size)
    (tmp / "out" / "x").mkdir(parents=True)
    (tmp / "out" / "x" / "config.yaml").write_text("{{garbage: [\n")
    model = "--layers 1 --hidden_size 16 --heads 2 --ffn_size 32 --max_length 24".split()
    run = "--num_articles 20 --eval_articles 4 --name x --resume true".split()
    return ["pretrain", *model, *run, "--vocab_size", vocab]


def preset_file(**changes: object) -> Setup:
    def setup(data: Path, tmp: Path) -> list[str]:
        import yaml

        from tinylm.paper.presets import load_preset

        raw = yaml.safe_load(Path(load_preset("smoke").path).read_text()) | changes
        (tmp / "p.yaml").write_text(yaml.safe_dump(raw))
        return ["reproduce", "--preset", str(tmp / "p.yaml")]

    return setup


def non_utf8(data: Path, tmp: Path) -> list[str]:
    (tmp / "t.jsonl").write_bytes(b'{"text": "fine", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n')
    return ["finetune", "--task", f"file:{tmp / 't.jsonl'}"]


def predict_batch_zero(data: Path, tmp: Path) -> list[str]:
    (tmp / "in.txt").write_text("hello\n")
    return ["predict", "--model", str(tmp), "--input", str(tmp / "in.txt"), "--batch_size", "0"]


def train_test_spelling(train_labels: list[str], test_labels: list[str]) -> Setup:
    def setup(data: Path, tmp: Path) -> list[str]:
        train = jsonl(
            tmp / "train.jsonl", [{"text": f"a {i}", "label": lbl} for i, lbl in enumerate(train_labels)]
        )
        test = jsonl(
            tmp / "test.jsonl", [{"text": f"b {i}", "label": lbl} for i, lbl in enumerate(test_labels)]
        )
        return ["finetune", "--task", f"file:{train}", "--test_file", str(test), "--epochs", "1"]

    return setup


CASES: dict[str, tuple[Setup, str]] = {
    "one number spelled '1' and '1.0'": (
        file_task(
            [{"text": t, "label": lbl} for t, lbl in [("a", "1"), ("b", "2"), ("c", "1.0"), ("d", "2")]]
        ),
        "labels '1' (",
    ),
    "one number spelled '1' and '01'": (
        file_task(
            [{"text": t, "label": lbl} for t, lbl in [("a", "01"), ("b", "2"), ("c", "1"), ("d", "2")]]
        ),
        "are the same number spelled two ways",
    ),
    "test file spelling a label differently": (
        train_test_spelling(["1", "2", "1", "2"], ["1.0", "2.0"]),
        "label '1.0' does not occur in the training file",
    ),
    "preset with a repeated corpus size": (
        preset_file(corpus_sizes=[200, 400, 400]),
        "corpus_sizes: 400 listed more than once in [200, 400, 400]",
    ),
    "preset with a repeated committee size": (
        preset_file(latency={"k": [2, 2], "batch": [1], "precision": ["fp32"], "reps": 3}),
        "latency.k: 2 listed more than once",
    ),
    "file task row without a label": (
        file_task([{"text": "a", "label": "x"}, {"text": "b", "label": None}]),
        "t.jsonl:2: missing label in column 'label'",
    ),
    "file task with a single label": (
        file_task([{"text": "a", "label": "x"}, {"text": "b", "label": "x"}]),
        "only one label ('x') in column 'label': a classifier needs at least two",
    ),
    "stray quote in an AG News field": (
        agnews_line(b'"2","a title "with" quotes","text"\n'),
        "train_subset_20k.csv.gz:4: malformed CSV",
    ),
    "non-decimal AG News label": (agnews_line('"²","title","text"\n'.encode()), ":4: unknown label '²'"),
    "FewRel null token": (
        fewrel_edit(lambda rel, names: rel["P10"][5]["tokens"].__setitem__(2, None)),
        "['P10'][5]['tokens'][2]: expected a non-empty string, got None",
    ),
    "pid2name entry []": (
        fewrel_edit(lambda rel, names: names.__setitem__("P11", [])),
        "pid2name.json: ['P11']: expected [name, description], got []",
    ),
    "--epochs nan": (
        flags("finetune", "--task", "agnews", "--epochs", "nan"),
        "epochs: must be positive, got nan",
    ),
    "--lr nan": (
        flags("finetune", "--task", "agnews", "--lr", "nan"),
        "lr: must be a positive number, got nan",
    ),
    "preset members as a string": (preset_file(members="2"), "members: expected an integer, got '2'"),
    "preset with a file task": (
        preset_file(tasks=["agnews", "file:x.csv"]),
        "'file:x.csv' is not a registered task",
    ),
    "preset finetune typo": (
        preset_file(finetune={"epochs": 1, "learnin_rate": 1}),
        "learnin_rate: unknown setting",
    ),
    "reproduce --seeds -1": (
        flags("reproduce", "--preset", "smoke", "--seeds", "-1"),
        "seeds: must be at least 1",
    ),
    "reproduce --seeds 0": (
        flags("reproduce", "--preset", "smoke", "--seeds", "0"),
        "seeds: must be at least 1, got 0",
    ),
    "overlap --corpus wiki:abc": (
        flags("overlap", "--corpus", "wiki:abc", "--tasks", "agnews"),
        "--corpus 'wiki:abc': expected wiki:N[,N...]",
    ),
    "--init with invalid config.json": (bad_init, "config.json: not valid JSON"),
    "garbage config.yaml on --resume": (garbage_resume, "config.yaml: not a readable run configuration"),
    "predict --batch_size 0": (predict_batch_zero, "batch_size: must be positive, got 0"),
    "predict with a missing model directory": (
        lambda data, tmp: [
            "predict",
            "--model",
            str(tmp / "nope"),
            "--input",
            str(predict_batch_zero(data, tmp)[4]),
        ],
        "error: model ",  # one --model: not called a member
    ),
    "predict --top_k 0": (
        lambda data, tmp: [*predict_batch_zero(data, tmp)[:-2], "--top_k", "0"],
        "top_k: expected a positive integer or 'all', got '0'",
    ),
    "non-UTF-8 byte in a task file": (non_utf8, "t.jsonl:2: not valid UTF-8 (byte 0xe9)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(
    case: str, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    setup, expected = CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("TINYLM_DATA_DIR", str(data_dir))
    monkeypatch.chdir(work)
    argv = setup(data_dir, work)
    out = work / "out"
    if "--out" not in argv and argv[0] in ("finetune", "pretrain", "reproduce"):
        argv += ["--out", str(out)]
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (case, err)
    # one line; several problems found at once: a header line and one "  - " line each
    assert err[0].startswith("tinylm: error:") and all(line.startswith("  - ") for line in err[1:]), (
        case,
        err,
    )
    assert (len(err) == 1) == ("problems in" not in err[0]) and expected in "\n".join(err), (case, err)
    assert not any("Traceback" in line for line in err)
    after = sorted(p.relative_to(work) for p in work.rglob("*"))
    assert after == before, f"{case}: left behind {sorted(set(after) - set(before))}"
