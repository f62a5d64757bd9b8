"""Data-parallel training under torchrun (gloo, 2 CPU processes): the same weights as one process with the
same global batch, resume after kill -9 of the whole job, only rank 0 writes; pre-training and fine-tuning."""

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
import yaml
from safetensors.torch import load_file

from tinylm.data.sources import resolve_source
from tinylm.data.tokenize import load_tokenizer
from tinylm.finetune import finetune
from tinylm.pretrain import pretrain
from tinylm.settings import FinetuneSettings, PretrainSettings

QUIET = {"log": lambda *_: None}
#: weights of the same global batch computed in other parts differ only by floating-point summation order
TOLERANCE = 1e-5


def settings(data_dir: Path, out: Path, **kw) -> dict:
    vocab = load_tokenizer(resolve_source(data_dir)).vocab_size
    return dict(
        layers=1, hidden_size=16, heads=2, ffn_size=32, max_length=24, vocab_size=vocab, num_articles=48,
        eval_articles=8, epochs=3, batch_size=8, lr=1e-3, data_dir=str(data_dir), out=str(out), name="r",
        progress=False, log_every=1, checkpoint_every=4, cache_dir=str(out.parent / "cache"),
    ) | kw  # fmt: skip


def torchrun(command: str, config: dict, cwd: Path, **popen) -> subprocess.Popen:
    path = cwd / f"{command}.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tinylm", command, "--config", str(path)]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def finished(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]


def kill_job(job: subprocess.Popen, cwd: Path) -> None:
    """kill -9 of the launcher's process group, then wait until its workers (SIGTERM on their parent's
    death) are gone too."""
    workers = _alive_workers(str(cwd / "pretrain.yaml"), job.pid)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    deadline = time.time() + 60
    while any(_running(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)


def _running(pid: int) -> bool:
    """Whether any thread of a process has not finished exiting: its leader may be a zombie while other
    threads (torch's) still hold the process's files, the run directory's lock among them."""
    states = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        except OSError:
            continue
    return any(state not in ("Z", "X") for state in states)


def max_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def test_results_depend_on_the_global_batch_only(data_dir: Path, tmp_path: Path) -> None:
    """1, 2 and 4 parts (processes × accumulation steps) of the same global batch: the same weights."""
    one = pretrain(PretrainSettings.build(settings(data_dir, tmp_path / "1x1")), **QUIET).path
    diffs = {}
    for accum in (2, 4):
        run = pretrain(
            PretrainSettings.build(settings(data_dir, tmp_path / f"1x{accum}", grad_accum=accum)), **QUIET
        )
        diffs[f"1x{accum}"] = max_diff(one, run.path)
    for accum in (1, 2):
        finished(
            torchrun("pretrain", settings(data_dir, tmp_path / f"2x{accum}", grad_accum=accum), tmp_path)
        )
        diffs[f"2x{accum}"] = max_diff(one, tmp_path / f"2x{accum}" / "r")
    print("max |weight difference| vs 1 process × 1:", diffs)
    assert all(d <= TOLERANCE for d in diffs.values()), diffs
    seg = json.loads((tmp_path / "2x2" / "r" / "results.json").read_text())["segments"]
    assert seg == [{"step": 0, "world": 2, "grad_accum": 2}]  # the run records how it was computed


def test_sampled_softmax_results_depend_on_the_global_batch_only(data_dir: Path, tmp_path: Path) -> None:
    """The sampled softmax's candidates are drawn once per step (`Rows.step_generator`): 1 process × 1,
    1 × 2 accumulation steps and 2 processes give the same weights, and not those of the full softmax."""
    sampled = {"sampled_softmax": 64, "mask_prob_start": 0.4}
    one = pretrain(PretrainSettings.build(settings(data_dir, tmp_path / "1x1", **sampled)), **QUIET).path
    accum = pretrain(
        PretrainSettings.build(settings(data_dir, tmp_path / "1x2", grad_accum=2, **sampled)), **QUIET
    ).path
    finished(torchrun("pretrain", settings(data_dir, tmp_path / "2x1", **sampled), tmp_path))
    diffs = {"1x2": max_diff(one, accum), "2x1": max_diff(one, tmp_path / "2x1" / "r")}
    print("sampled softmax: max |weight difference| vs 1 process × 1:", diffs)
    assert all(d <= TOLERANCE for d in diffs.values()), diffs
    full = settings(data_dir, tmp_path / "full", mask_prob_start=0.4)
    assert max_diff(one, pretrain(PretrainSettings.build(full), **QUIET).path) > 100 * TOLERANCE


def test_a_resume_may_change_the_process_count(data_dir: Path, tmp_path: Path) -> None:
    """2 processes killed mid-run, resumed by one process (plain `tinylm pretrain --resume true`): the
    weights of the uninterrupted 2-process run."""
    finished(torchrun("pretrain", settings(data_dir, tmp_path / "two"), tmp_path))
    job = torchrun("pretrain", settings(data_dir, tmp_path / "killed"), tmp_path, start_new_session=True)
    ckpt = tmp_path / "killed" / "r" / "checkpoints"
    deadline = time.time() + 300
    while not any(ckpt.glob("step-*")) and time.time() < deadline and job.poll() is None:
        time.sleep(0.05)
    kill_job(job, tmp_path)
    assert not (tmp_path / "killed" / "r" / "results.json").exists()
    lines: list[str] = []
    resumed = pretrain(
        PretrainSettings.build(settings(data_dir, tmp_path / "killed", resume=True)), log=lines.append
    )
    assert any("computed so far by 2 process(es)" in line for line in lines), lines
    diff = max_diff(tmp_path / "two" / "r", resumed.path)
    print(f"2 -> 1 resume vs uninterrupted 2 processes: max |weight difference| {diff:.2e}")
    assert diff <= TOLERANCE
    segments = json.loads((resumed.path / "results.json").read_text())["segments"]
    assert [(s["world"], s["grad_accum"]) for s in segments] == [(2, 1), (1, 1)] and segments[1]["step"] > 0


def test_two_processes_equal_one_and_resume_after_kill(data_dir: Path, tmp_path: Path) -> None:
    single = pretrain(PretrainSettings.build(settings(data_dir, tmp_path / "one")), **QUIET)
    finished(torchrun("pretrain", settings(data_dir, tmp_path / "two"), tmp_path))
    two = tmp_path / "two" / "r"
    assert max_diff(single.path, two) <= 1e-5  # the global batch is what batch_size means
    a = json.loads((single.path / "results.json").read_text())
    b = json.loads((two / "results.json").read_text())
    assert a["steps"] == b["steps"] and a["tokens"] == b["tokens"]  # tokens summed over ranks
    lines = (two / "metrics.jsonl").read_text().splitlines()  # one writer: no line twice
    assert len(lines) == len(set(lines)) == len((single.path / "metrics.jsonl").read_text().splitlines())
    # kill -9 of the whole job once a checkpoint exists, then resume under torchrun
    job = torchrun("pretrain", settings(data_dir, tmp_path / "killed"), tmp_path, start_new_session=True)
    ckpt = tmp_path / "killed" / "r" / "checkpoints"
    deadline = time.time() + 300
    while not any(ckpt.glob("step-*")) and time.time() < deadline and job.poll() is None:
        time.sleep(0.05)
    kill_job(job, tmp_path)
    assert not (tmp_path / "killed" / "r" / "results.json").exists()  # killed mid-run, not after
    resumed = settings(data_dir, tmp_path / "killed", resume=True)
    finished(torchrun("pretrain", resumed, tmp_path))
    assert max_diff(two, tmp_path / "killed" / "r") <= 1e-6


def test_two_process_finetuning_equals_one(data_dir: Path, tmp_path: Path) -> None:
    base = dict(
        task="agnews", init="scratch", layers=1, hidden_size=16, heads=2, ffn_size=32, max_length=24,
        vocab_size=load_tokenizer(resolve_source(data_dir)).vocab_size, samples_per_label_train=8,
        samples_per_label_test=4, epochs=1, batch_size=8, lr=1e-3, data_dir=str(data_dir), name="ft",
        progress=False, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    one = finetune(FinetuneSettings.build(base | {"out": str(tmp_path / "one")}), **QUIET)
    finished(torchrun("finetune", base | {"out": str(tmp_path / "two")}, tmp_path))
    assert max_diff(one.path, tmp_path / "two" / "ft") <= 1e-5
    r1 = json.loads((one.path / "results.json").read_text())
    r2 = json.loads((tmp_path / "two" / "ft" / "results.json").read_text())
    assert r1["final_epoch"]["accuracy"] == pytest.approx(r2["final_epoch"]["accuracy"])
    assert torch.distributed.is_available()


def _alive_workers(marker: str, launcher: int) -> list[int]:
    """PIDs of running processes other than the launcher whose command line names `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == launcher:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "torch.distributed.run" not in cmdline and _running(int(proc.name)):
            found.append(int(proc.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux only")
def test_workers_die_with_a_killed_launcher(data_dir: Path, tmp_path: Path) -> None:
    """kill -9 of torchrun's process group: its workers (in process groups of their own) stop too."""
    job = torchrun(
        "pretrain", settings(data_dir, tmp_path / "long", epochs=500), tmp_path, start_new_session=True
    )
    metrics = tmp_path / "long" / "r" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.is_file() and metrics.read_text().strip()) and time.time() < deadline:
        assert job.poll() is None, job.communicate()[1].decode()[:3000]
        time.sleep(0.1)
    marker = str(tmp_path / "pretrain.yaml")
    workers = _alive_workers(marker, job.pid)
    assert len(workers) == 2, workers  # both ranks are training
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    deadline = time.time() + 30
    while _alive_workers(marker, job.pid) and time.time() < deadline:
        time.sleep(0.2)
    left = _alive_workers(marker, job.pid)
    for pid in left:  # do not leave them running if the assertion fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers still training after their launcher was killed: {left}"
    assert not (tmp_path / "long" / "r" / "results.json").exists()


def test_a_rank_destroys_its_process_group_before_the_interpreter_ends(monkeypatch) -> None:
    """A gloo group left to interpreter teardown can abort a rank at exit ("terminate called without an
    active exception": a 2-rank CI run failed so once); `init` registers its destruction at exit."""
    import atexit

    import torch.distributed as dist

    from tinylm import distributed

    calls: list[str] = []
    registered: list = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(calls))
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(f"init {backend}"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # gloo, as on this CPU machine
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    d = distributed.init()
    assert (d.rank, d.world) == (1, 2) and calls == ["init gloo"] and registered == [distributed._leave]
    registered[0]()  # what the interpreter runs at exit
    assert calls == ["init gloo", "destroy"]
