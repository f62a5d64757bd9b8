"""Results that cannot silently change: label order and spelling, duplicate grid lists, a member with the
deep model's architecture, memory with many labels, valid files that were refused, a failed start, a
locked grid, and what a finished run keeps on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import yaml

from test_finetune import QUIET, ft, model_settings, pre_run  # noqa: F401 (a fixture)
from tinylm.data.tasks import label_order, load_file_pool
from tinylm.errors import ConfigError, DataError, TinylmError
from tinylm.finetune import finetune
from tinylm.objectives import CONFUSION_MATRIX_MAX_LABELS, classification_metrics
from tinylm.paper.grid import build_grid
from tinylm.paper.jobs import by_role
from tinylm.paper.presets import load_preset


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------- labels


ORDER = """
import sys
from tinylm.data.tasks import load_file_pool
print(load_file_pool(sys.argv[1], label_column="y").label_names)
"""


def test_label_order_is_stated_and_does_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "t.jsonl", [{"text": f"x {i}", "y": y} for i, y in enumerate(["10.0", "2.0", "3.5"] * 3)]
    )
    orders = {
        subprocess.run(
            [sys.executable, "-c", ORDER, str(path)],
            env=os.environ | {"PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in (0, 1, 2, 3)
    }
    assert orders == {"['2.0', '3.5', '10.0']"}  # numbers by value, not "10.0" first
    assert label_order({"b", "B", "a", "10", "9x"}) == ["10", "9x", "B", "a", "b"]  # names: code points
    assert label_order({"-1", "0", "+2", "1e1"}) == ["-1", "0", "+2", "1e1"]


def test_one_number_spelled_two_ways_is_an_error_naming_both_places(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [{"text": "a", "label": "01"}, {"text": "b", "label": 2}, {"text": "c", "label": 1}],
    )
    with pytest.raises(
        DataError, match=r"labels '01' \(.*t.jsonl:1\) and '1' \(.*t.jsonl:3\) are the same number"
    ):
        load_file_pool(path)


def test_bom_and_long_fields_are_read(tmp_path: Path) -> None:
    long = "word " * 40_000  # 200 KB: over Python's default csv field limit of 128 KiB
    csv_path = tmp_path / "t.csv"
    csv_path.write_bytes(("\ufefftext,label\nshort one,a\n" + f'"{long}",b\nthird,a\nfourth,b\n').encode())
    pool = load_file_pool(csv_path, test_share=0.5)
    assert pool.label_names == ["a", "b"] and max(len(r.text) for r in pool.train + pool.test) > 190_000
    jl = tmp_path / "t.jsonl"
    jl.write_bytes("\ufeff".encode() + b'{"text": "x", "label": "a"}\n{"text": "y", "label": "b"}\n')
    assert load_file_pool(jl, test_share=0.5).label_names == ["a", "b"]
    (tmp_path / "c.csv").write_text("sentence,label\nx,a\n")
    with pytest.raises(DataError, match=r"no column 'text' \(columns: 'sentence', 'label'\)"):
        load_file_pool(tmp_path / "c.csv")


# ---------------------------------------------------------------- the grid


def smoke_variant(tmp_path: Path, **changes: object) -> str:
    raw = yaml.safe_load(Path(load_preset("smoke").path).read_text()) | changes
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_duplicate_lists_are_rejected_up_front(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_preset(smoke_variant(tmp_path, corpus_sizes=[200, 400, 400], tasks=["agnews", "agnews"]))
    msg = str(e.value)
    assert "corpus_sizes: 400 listed more than once" in msg and "tasks: 'agnews' listed more than once" in msg


def test_a_member_with_the_deep_architecture_shares_its_pretraining(tmp_path: Path) -> None:
    """A member with the deep model's architecture and seed is the same computation: one run serving both
    roles, and each role still finds its job (the committee its member 0, C1 its deep model)."""
    raw = yaml.safe_load(Path(load_preset("smoke").path).read_text())
    p = load_preset(smoke_variant(tmp_path, shallow=[raw["deep"]], e0=None))
    jobs = build_grid(p, ["agnews"], 1)
    deep = by_role(jobs, "pretrain", deep=True, size=p.main_corpus, pseed=0)
    member = by_role(jobs, "pretrain", member=0)
    assert len(deep) == 1 and len(member) == 1 and deep[0].id == member[0].id
    assert sum(j.id == deep[0].id for j in jobs) == 1 and member[0].role == {"member": 0}
    committee = next(j for j in jobs if j.kind == "committee")
    members = [j for j in by_role(jobs, "finetune", init="member") if j.id in committee.deps]
    assert {j.role["member"] for j in members} == {0, 1} and len(committee.deps) >= 2


# ---------------------------------------------------------------- many labels


def test_metrics_of_many_labels_stay_linear_in_labels() -> None:
    n = 10_000
    rng = np.random.default_rng(0)
    gold = np.arange(n)
    pred = np.where(rng.random(n) < 0.5, gold, rng.integers(0, n, n))
    tracemalloc.start()
    m = classification_metrics(pred, gold, n, matrix=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (
        "confusion_matrix" not in m and len(m["per_class_accuracy"]) == n and len(m["top_confusions"]) == 10
    )
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MiB for {n} labels"  # a dense matrix alone is 800 MB
    small = classification_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), 2, matrix=True)
    assert small["confusion_matrix"] == [[1, 1], [0, 1]]
    assert small["top_confusions"] == [{"gold": 0, "predicted": 1, "count": 1}]


def test_a_run_with_many_labels_writes_no_matrix_per_epoch(data_dir: Path, tmp_path: Path) -> None:
    k = CONFUSION_MATRIX_MAX_LABELS + 20
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [{"text": f"item {i} of {j}", "label": f"c{j}"} for j in range(k) for i in range(2)],
    )
    test = write_jsonl(
        tmp_path / "test.jsonl", [{"text": f"item of {j}", "label": f"c{j}"} for j in range(k)]
    )
    built = ft(
        data_dir,
        tmp_path,
        **model_settings(data_dir),
        task=f"file:{train}",
        test_file=str(test),
        epochs=2,
        batch_size=32,
        samples_per_label_train=-1,
        samples_per_label_test=-1,
        name="many",
    )
    run = finetune(built, **QUIET)
    res = json.loads((run.path / "results.json").read_text())
    assert "confusion_matrix" not in res["final_epoch"] and len(res["final_epoch"]["per_class_accuracy"]) == k
    assert "confusion_matrix" not in (run.path / "metrics.jsonl").read_text()


# ---------------------------------------------------------------- failed starts, locks, disk


def test_a_failed_start_does_not_block_the_retry(data_dir: Path, tmp_path: Path, pre_run: Path) -> None:  # noqa: F811
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in pre_run.iterdir():
        if f.is_file():
            (broken / f.name).write_bytes(f.read_bytes())
    good = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(good[: len(good) // 2])
    settings = ft(data_dir, tmp_path, init=str(broken), name="retry")
    with pytest.raises(TinylmError, match="truncated or corrupt"):
        finetune(settings, **QUIET)
    (broken / "model.safetensors").write_bytes(good)  # the user fixes the file and runs the same command
    assert finetune(settings, **QUIET).is_finished()


def test_a_locked_grid_is_refused_before_the_estimate(
    real_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_robustness import HOLD
    from tinylm.paper import estimate
    from tinylm.paper.reproduce import reproduce

    monkeypatch.setattr(estimate, "estimate", lambda *a, **k: pytest.fail("timed the estimate first"))
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(TinylmError, match="in use by PID"):
            reproduce("smoke", str(out), None, None, 1, str(real_data_dir), **QUIET)
    finally:
        child.kill()
        child.wait()


def test_a_finished_run_keeps_only_what_the_report_needs(
    data_dir: Path,
    tmp_path: Path,
    pre_run: Path,  # noqa: F811 (the fixture)
) -> None:
    assert not (pre_run / "checkpoints").exists()  # pruned: a finished run is reused, never resumed
    for name in ("model.safetensors", "model.json", "results.json", "metrics.jsonl", "config.yaml"):
        assert (pre_run / name).is_file(), name
    kept = finetune(
        ft(data_dir, tmp_path, **model_settings(data_dir), validation_per_label=2, prune=False, name="kept"),
        **QUIET,
    )
    pruned = finetune(
        ft(data_dir, tmp_path, **model_settings(data_dir), validation_per_label=2, name="pruned"), **QUIET
    )
    assert any((kept.path / "checkpoints").iterdir()) and (kept.path / "best.safetensors").is_file()
    assert not (pruned.path / "checkpoints").exists() and not (pruned.path / "best.safetensors").exists()
    assert (pruned.path / "best.json").is_file() and (pruned.path / "test_predictions.npz").is_file()
    a = json.loads((kept.path / "results.json").read_text())
    b = json.loads((pruned.path / "results.json").read_text())
    assert a["test"] == b["test"]  # pruning changes nothing a result depends on


def test_prune_command_frees_a_kept_run_and_refuses_an_unfinished_one(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tinylm.cli import main

    kept = finetune(
        ft(data_dir, tmp_path, **model_settings(data_dir), validation_per_label=2, prune=False, name="k"),
        **QUIET,
    )
    assert (kept.path / "checkpoints").is_dir() and (kept.path / "best.safetensors").is_file()
    assert main(["prune", str(kept.path)]) == 0
    assert "pruned 1 finished run(s)" in capsys.readouterr().out
    assert not (kept.path / "checkpoints").exists() and not (kept.path / "best.safetensors").exists()
    assert (kept.path / "model.safetensors").is_file() and (kept.path / "results.json").is_file()
    # `tinylm prune OUT`: every run under a reproduce-style OUT/runs/
    other = finetune(
        ft(data_dir, tmp_path, **model_settings(data_dir), validation_per_label=2, prune=False, name="k2"),
        **QUIET,
    )
    assert other.path.parent == tmp_path / "runs" and (other.path / "checkpoints").is_dir()
    assert main(["prune", str(tmp_path)]) == 0
    assert "pruned 2 finished run(s)" in capsys.readouterr().out
    assert not (other.path / "checkpoints").exists() and (other.path / "model.safetensors").is_file()
    unfinished = tmp_path / "half"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("lr: 1\n")
    assert main(["prune", str(unfinished)]) == 2
    assert "not a finished run (no results.json)" in capsys.readouterr().err
