"""Runs that survive kills and concurrency: locks, resume without duplicated records, torn metrics lines,
partial checkpoints, corrupt checkpoints with automatic fallback, no directory left by a failed start, and
file modes that follow the umask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_train import tiny as train_tiny
from tinylm.data.sources import resolve_source
from tinylm.data.tokenize import load_tokenizer
from tinylm.errors import TinylmError
from tinylm.fileio import DirLock, write_text
from tinylm.paper.reproduce import reproduce
from tinylm.pretrain import pretrain
from tinylm.runs import RunDir

QUIET = {"log": lambda *_: None}


def tiny(data_dir: Path, out: Path, **kw) -> dict:
    """test_train's tiny pre-training, evaluated every 2 steps, always resumable."""
    return train_tiny(data_dir, out, **({"eval_every": 2, "resume": True} | kw))


def weights(run: RunDir) -> dict[str, torch.Tensor]:
    return load_file(run.path / "model.safetensors")


def same_weights(a: RunDir, b: RunDir) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def no_duplicates(run: RunDir) -> bool:
    keys = [(("eval" in r), r["step"]) for r in run.read_metrics()]
    return len(keys) == len(set(keys))


def stop_at(step: int):
    def hook(p):
        if p.step == step:
            raise KeyboardInterrupt

    return hook


@pytest.fixture
def full(data_dir: Path, tmp_path: Path) -> RunDir:
    return pretrain(tiny(data_dir, tmp_path / "full"), **QUIET)


def test_killed_after_the_final_checkpoint_resumes_without_repeating_records(
    data_dir: Path, tmp_path: Path, full: RunDir
) -> None:
    run = pretrain(tiny(data_dir, tmp_path / "b"), **QUIET)
    results = json.loads((run.path / "results.json").read_text())
    (run.path / "results.json").unlink()  # as if killed between the final checkpoint and results.json
    resumed = pretrain(tiny(data_dir, tmp_path / "b"), **QUIET)
    assert json.loads((resumed.path / "results.json").read_text())["final_eval"] == results["final_eval"]
    assert no_duplicates(resumed) and same_weights(full, resumed)


def test_torn_metrics_line_and_partial_checkpoint_are_repaired_on_resume(
    data_dir: Path, tmp_path: Path, full: RunDir
) -> None:
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny(data_dir, tmp_path / "b"), **QUIET, on_step=stop_at(7))
    run = RunDir(tmp_path / "b" / "runs" / "r")
    with open(run.metrics, "a") as f:
        f.write('{"step": 8, "loss": 7.1')  # a kill in the middle of a line
    partial = run.checkpoints / ".step-00000009.abc.tmp"  # a kill in the middle of a checkpoint write
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 100)
    resumed = pretrain(tiny(data_dir, tmp_path / "b"), **QUIET)
    assert not partial.exists() and no_duplicates(resumed) and same_weights(full, resumed)
    assert [r["step"] for r in resumed.read_metrics() if "loss" in r] == [
        r["step"] for r in full.read_metrics() if "loss" in r
    ]


def test_restart_without_checkpoint_starts_a_clean_log(data_dir: Path, tmp_path: Path, full: RunDir) -> None:
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny(data_dir, tmp_path / "b"), **QUIET, on_step=stop_at(2))  # before the first checkpoint
    run = RunDir(tmp_path / "b" / "runs" / "r")
    assert run.read_metrics() and not run.checkpoint_candidates()
    resumed = pretrain(tiny(data_dir, tmp_path / "b"), **QUIET)
    assert no_duplicates(resumed) and len(resumed.read_metrics()) == len(full.read_metrics())


def test_corrupt_newest_checkpoint_falls_back_to_an_older_one(
    data_dir: Path, tmp_path: Path, full: RunDir
) -> None:
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny(data_dir, tmp_path / "b"), **QUIET, on_step=stop_at(7))
    run = RunDir(tmp_path / "b" / "runs" / "r")
    newest, older = run.checkpoint_candidates()  # two kept by default
    (newest / "state.pt").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="SHA-256 mismatch.*trying an older checkpoint"):
        resumed = pretrain(tiny(data_dir, tmp_path / "b"), **QUIET)
    assert same_weights(full, resumed) and no_duplicates(resumed) and older.name == "step-00000003"
    # every checkpoint damaged: a clear error, nothing restarted silently
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny(data_dir, tmp_path / "c"), **QUIET, on_step=stop_at(7))
    run = RunDir(tmp_path / "c" / "runs" / "r")
    for c in run.checkpoint_candidates():
        (c / "model.safetensors").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(TinylmError, match="no intact checkpoint.*restart the run"):
        pretrain(tiny(data_dir, tmp_path / "c"), **QUIET)


def test_failed_start_leaves_no_run_directory(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TinylmError):
        pretrain(tiny(data_dir, tmp_path / "b", num_articles=10**7), **QUIET)  # more articles than exist
    assert not (tmp_path / "b" / "runs" / "r").exists()
    pretrain(tiny(data_dir, tmp_path / "b", epochs=1), **QUIET)  # a plain rerun is not blocked


def test_files_follow_the_umask(tmp_path: Path) -> None:
    """Every file tinylm writes follows the umask: weights of exports and checkpoints too (safetensors
    writes through a 0600 temporary file)."""
    from tinylm.config import ModelConfig
    from tinylm.hf import export_model
    from tinylm.model import TinyBertForMaskedLM
    from tinylm.model_dir import save_model

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
        model = TinyBertForMaskedLM(
            ModelConfig(layers=1, hidden_size=16, heads=2, ffn_size=32, vocab_size=120)
        )
        save_model(model, tmp_path / "dir")
        with pytest.warns(UserWarning, match="no tokenizer"):
            export_model(model, tmp_path / "hf")
        RunDir(tmp_path / "run").save_checkpoint(1, model, {"step": 1}, keep=1)
        files = [*(tmp_path / "dir").iterdir(), *(tmp_path / "hf").iterdir()]
        files += [p for p in (tmp_path / "run" / "checkpoints").rglob("*") if p.is_file()]
        modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
        assert set(modes.values()) == {"0o644"}, modes
        assert (tmp_path / "run" / "checkpoints" / "step-00000001").stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old)


HOLD = """
import sys, time
from tinylm.fileio import DirLock
with DirLock(sys.argv[1], "test"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_process_on_the_same_out_is_refused(real_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        before = sorted(p.name for p in out.iterdir())
        with pytest.raises(TinylmError, match=f"{out} is in use by PID {child.pid}"):
            reproduce("smoke", str(out), None, None, 1, str(real_data_dir), **QUIET)
        assert sorted(p.name for p in out.iterdir()) == before  # nothing changed
        with pytest.raises(TinylmError, match="in use by PID"), DirLock(out, "test"):
            pass
    finally:
        child.kill()
        child.wait()
    time.sleep(0.1)
    with DirLock(out, "test"):  # released when its owner died (even by SIGKILL)
        pass


def test_full_disk_is_a_clear_error_and_the_last_checkpoint_survives(
    data_dir: Path, tmp_path: Path, full: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    real = safetensors.torch.save_file
    calls = []

    def fill_up(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint: the disk is full (safetensors' own wording)
            raise RuntimeError(
                'IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", fill_up)
    with pytest.raises(TinylmError, match="no space left on the disk of .*rerun with --resume"):
        pretrain(tiny(data_dir, tmp_path / "b"), **QUIET)
    run = RunDir(tmp_path / "b" / "runs" / "r")
    assert [c.name for c in run.checkpoint_candidates()] == ["step-00000003"]
    assert not list(run.checkpoints.glob(".*.tmp"))  # the half-written one is gone
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    resumed = pretrain(tiny(data_dir, tmp_path / "b"), **QUIET)
    assert same_weights(full, resumed) and no_duplicates(resumed)


KILLER = """
import json, os, signal, sys
from pathlib import Path
import tinylm.runs as runs
from tinylm.pretrain import pretrain
from tinylm.settings import PretrainSettings

window, settings = sys.argv[1], json.loads(sys.argv[2])
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if window == "checkpoint":  # inside the atomic write of the second checkpoint
    real = runs.atomic_dir
    def atomic_dir(target):
        if Path(target).name == "step-00000006":
            tmp = Path(target).parent / ".step-00000006.x.tmp"
            tmp.mkdir()
            (tmp / "model.safetensors").write_bytes(b"half")
            die()
        return real(target)
    runs.atomic_dir = atomic_dir
elif window == "results":  # after the final checkpoint, before results.json
    runs.RunDir.finish = lambda self, results: die()
elif window == "metrics":  # in the middle of a metrics line
    real_log = runs.RunDir.log
    def log(self, record):
        if record.get("step") == 8 and "loss" in record:
            with open(self.metrics, "a") as f:
                f.write(json.dumps(record)[:20])
                f.flush()
            die()
        real_log(self, record)
    runs.RunDir.log = log
pretrain(PretrainSettings.build(settings), log=lambda *_: None)
"""


@pytest.mark.parametrize("window", ["checkpoint", "results", "metrics"])
def test_sigkill_at_each_write_window_then_resume(
    window: str, data_dir: Path, tmp_path: Path, full: RunDir
) -> None:
    """A real kill -9 of a child process in each write window; the resumed run gives the uninterrupted
    run's weights and results, with no duplicated records and no partial files."""
    settings = tiny(data_dir, tmp_path / "b").flat()
    proc = subprocess.run([sys.executable, "-c", KILLER, window, json.dumps(settings)], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-500:]
    run = RunDir(tmp_path / "b" / "runs" / "r")
    assert not run.is_finished()
    resumed = pretrain(tiny(data_dir, tmp_path / "b"), **QUIET)
    assert same_weights(full, resumed) and no_duplicates(resumed)
    assert not list(run.checkpoints.glob(".*.tmp")) and not list(run.path.glob(".*.tmp"))
    a = json.loads((full.path / "results.json").read_text())
    b = json.loads((resumed.path / "results.json").read_text())
    assert a["steps"] == b["steps"] and a["tokens"] == b["tokens"]
    # same weights; the held-out loss agrees up to float summation order (oneDNN may block differently)
    assert b["final_eval"] == pytest.approx(a["final_eval"], rel=1e-5)


def test_finetune_killed_before_results_resumes_without_duplicate_epochs(
    data_dir: Path, tmp_path: Path
) -> None:
    from tinylm.finetune import finetune
    from tinylm.settings import FinetuneSettings

    vocab = load_tokenizer(resolve_source(data_dir)).vocab_size
    model = dict(layers=1, hidden_size=16, heads=2, ffn_size=32, max_length=24, vocab_size=vocab)
    task = dict(task="agnews", samples_per_label_train=6, samples_per_label_test=4, validation_per_label=2)
    # prune=False: a kill before results.json comes before the finished run's pruning too
    run_settings = dict(out=str(tmp_path / "runs"), name="ft", progress=False, resume=True, prune=False)
    settings = model | task | run_settings | dict(init="scratch", epochs=3, batch_size=4, lr=1e-3)
    settings["data_dir"] = str(data_dir)
    run = finetune(FinetuneSettings.build(settings), **QUIET)
    before = json.loads((run.path / "results.json").read_text())
    (run.path / "results.json").unlink()  # killed after the final checkpoint, before results.json
    again = finetune(FinetuneSettings.build(settings), **QUIET)
    after = json.loads((again.path / "results.json").read_text())
    assert [e["epoch"] for e in after["per_epoch"]] == [1, 2, 3] and after["per_epoch"] == before["per_epoch"]
    assert after["test"] == before["test"]


def test_a_resume_with_the_init_spelled_another_way_continues_the_run(
    data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """`reproduce --out ../x` resuming what `--out /abs/x` started (a real `cpu` grid stopped on this:
    "settings differ (init: '/work/x/runs/pretrain-...' -> '../x/runs/pretrain-...')"): one place, one
    setting; another pre-training run is still another setting."""
    from tinylm.finetune import finetune
    from tinylm.settings import FinetuneSettings, PretrainSettings

    pre = {"cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / "pre"), "progress": False}
    pre |= {"data_dir": str(data_dir), "num_articles": 24, "eval_articles": 4, "max_steps": 2}
    vocab = load_tokenizer(resolve_source(data_dir)).vocab_size
    model = dict(layers=1, hidden_size=16, heads=2, ffn_size=32, max_length=24, batch_size=4)
    model["vocab_size"] = vocab
    init = pretrain(PretrainSettings.build(pre | model | {"name": "a"}), **QUIET).path
    other = pretrain(PretrainSettings.build(pre | model | {"name": "b"}), **QUIET).path
    task = dict(task="agnews", samples_per_label_train=6, samples_per_label_test=4, validation_per_label=2)
    run = dict(out=str(tmp_path / "runs"), name="ft", progress=False, resume=True, prune=False)
    settings = model | task | run | dict(epochs=2, lr=1e-3, data_dir=str(data_dir), init=str(init.resolve()))
    first = finetune(FinetuneSettings.build(settings), **QUIET)
    before = json.loads((first.path / "results.json").read_text())
    (first.path / "results.json").unlink()  # killed before results.json: the next start resumes
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TinylmError, match=r"settings differ from the original run \(init: "):
        finetune(FinetuneSettings.build(settings | {"init": os.path.relpath(other)}), **QUIET)
    again = finetune(FinetuneSettings.build(settings | {"init": os.path.relpath(init)}), **QUIET)
    after = json.loads((again.path / "results.json").read_text())
    assert os.path.relpath(init) == "pre/a" and after["per_epoch"] == before["per_epoch"]


def test_grid_workers_stop_when_the_grid_process_is_killed(tmp_path: Path) -> None:
    """`kill PID` of a reproduce (SIGTERM to the parent only) must not leave its workers training on."""
    script = tmp_path / "grid.py"
    script.write_text(
        "import concurrent.futures as cf, multiprocessing as mp, os, time\n"
        "from tinylm.paper.executor import _worker_init\n"
        "if __name__ == '__main__':\n"
        "    ctx = mp.get_context('spawn')\n"
        "    with cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=_worker_init,\n"
        "                                initargs=(1, os.getpid())) as pool:\n"
        "        print(pool.submit(os.getpid).result(), flush=True)\n"
        "        pool.submit(time.sleep, 120)\n"
        "        time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        parent.terminate()
        parent.wait(timeout=30)
        deadline = time.time() + 30
        while time.time() < deadline and _alive(worker):
            time.sleep(0.2)
        if not _alive(worker):
            return
        os.kill(worker, signal.SIGKILL)
        raise AssertionError(f"worker {worker} outlived its killed grid process")
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped by whoever adopted it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
