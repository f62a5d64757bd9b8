"""Committee members pre-trained again with the next seed when they end below the adequacy gate
(`member_reseeds`, `tinylm.paper.reseed`): the attempts, resuming at every point, the grid and the report."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from tinylm.paper.context import Context
from tinylm.paper.grid import build_grid
from tinylm.paper.jobs import make_job
from tinylm.paper.presets import load_preset
from tinylm.paper.reproduce import reproduce
from tinylm.paper.reseed import RESEED_STRIDE, needs_another, run_reseeded, set_aside
from tinylm.paper.steps import finished
from tinylm.runs import RunDir

QUIET = {"log": lambda *_: None}


def fake_trainer(ctx: Context, job_id: str, gaps: dict[int, float], calls: list[int]):
    """`train(seed)` as the grid's (a finished run in OUT/runs/ID is reused as it is), ending `gaps[seed]`
    nats below a unigram loss of 7."""

    def train(seed: int) -> None:
        run = RunDir(ctx.runs_dir / job_id)
        if run.is_finished():
            return
        calls.append(seed)
        run.path.mkdir(parents=True)
        (run.path / "config.yaml").write_text(yaml.safe_dump({"seed": seed}))
        ev = {"mlm_loss": 7.0 - gaps[seed], "unigram_loss": 7.0}
        (run.path / "results.json").write_text(json.dumps({"tokens": 100, "final_eval": ev}))

    return train


@pytest.fixture
def member(tmp_path: Path):
    ctx = Context(tmp_path, None, progress=False)
    ctx.runs_dir.mkdir(parents=True)
    job = make_job("pretrain", {"seed": 3, "gate_reseeds": 2, "gate_nats": 1.5}, {"member": 3})
    return ctx, job


def seed_of(run: Path) -> int:
    return yaml.safe_load((run / "config.yaml").read_text())["seed"]


def test_a_member_past_the_gate_is_trained_once(member) -> None:
    ctx, job = member
    calls: list[int] = []
    run_reseeded(job, ctx, fake_trainer(ctx, job.id, {3: 1.6}, calls))
    assert calls == [3] and set_aside(ctx.runs_dir, job.id) == [] and finished(job, ctx)


def test_a_member_below_the_gate_is_set_aside_and_trained_with_the_next_seed(member) -> None:
    ctx, job = member
    calls: list[int] = []
    gaps = {3: 0.9, 3 + RESEED_STRIDE: 2.0, 3 + 2 * RESEED_STRIDE: 2.5}
    run_reseeded(job, ctx, fake_trainer(ctx, job.id, gaps, calls))
    assert calls == [3, 1003]  # the second attempt passed: no third
    (aside,) = set_aside(ctx.runs_dir, job.id)
    assert aside == ctx.runs_dir / f"{job.id}.below-gate" / "seed-3" and seed_of(aside) == 3
    assert seed_of(ctx.runs_dir / job.id) == 1003 and finished(job, ctx)


def test_the_last_attempt_is_kept_below_the_gate(member) -> None:
    ctx, job = member
    calls: list[int] = []
    run_reseeded(job, ctx, fake_trainer(ctx, job.id, {3: 0.1, 1003: 0.2, 2003: 0.3}, calls))
    assert calls == [3, 1003, 2003]  # gate_reseeds 2: three attempts in all
    assert [seed_of(p) for p in set_aside(ctx.runs_dir, job.id)] == [3, 1003]
    assert seed_of(ctx.runs_dir / job.id) == 2003 and finished(job, ctx) and not needs_another(job, ctx)


def test_a_stopped_job_resumes_with_the_attempt_it_was_on(member) -> None:
    ctx, job = member
    gaps = {3: 0.1, 1003: 0.2, 2003: 1.7}
    # stopped after the first attempt finished, before it was set aside: not done, and not trained again
    calls: list[int] = []
    fake_trainer(ctx, job.id, gaps, calls)(3)
    assert not finished(job, ctx) and needs_another(job, ctx)
    calls.clear()
    # stopped right after the first attempt was set aside: the second one starts
    os.replace(ctx.runs_dir / job.id, ctx.runs_dir / "parked")
    (ctx.runs_dir / f"{job.id}.below-gate").mkdir()
    os.replace(ctx.runs_dir / "parked", ctx.runs_dir / f"{job.id}.below-gate" / "seed-3")
    assert not finished(job, ctx)
    run_reseeded(job, ctx, fake_trainer(ctx, job.id, gaps, calls))
    assert calls == [1003, 2003] and seed_of(ctx.runs_dir / job.id) == 2003 and finished(job, ctx)
    # and a finished job is left alone
    run_reseeded(job, ctx, fake_trainer(ctx, job.id, gaps, calls))
    assert calls == [1003, 2003]


def test_member_reseeds_is_validated_and_hashed_only_when_set(tmp_path: Path) -> None:
    from tinylm.errors import ConfigError

    raw = yaml.safe_load(Path(load_preset("smoke").path).read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw | {"member_reseeds": -1, "members": 1}))
    with pytest.raises(ConfigError) as e:
        load_preset(str(bad))
    assert "member_reseeds: must be 0 or more, got -1" in str(e.value) and "members:" in str(e.value)
    p = load_preset("smoke")
    assert p.member_reseeds == 0
    plain = {j.id for j in build_grid(p, p.tasks, p.seeds)}
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(raw | {"member_reseeds": 2}))
    q = load_preset(str(ok))
    jobs = build_grid(q, q.tasks, q.seeds)
    members = [j for j in jobs if j.kind == "pretrain" and "member" in j.role]
    assert members and all(
        j.settings["gate_reseeds"] == 2 and j.settings["gate_nats"] == q.gate_nats for j in members
    )
    assert all("gate_reseeds" not in j.run_settings() for j in members)
    others = [j for j in jobs if j.kind == "pretrain" and "member" not in j.role and "select" not in j.role]
    assert others and {j.id for j in others} <= plain  # only the members' ids (and what uses them) change
    assert not {j.id for j in members} & plain


def test_the_grid_re_seeds_members_below_the_gate_and_the_report_says_so(
    real_data_dir: Path, tmp_path: Path
) -> None:
    """The smoke grid with a gate no model can pass and one re-seed per member: every member is trained
    twice (seeds i and i + 1000, real pre-trainings), the first attempt set aside, both in the report and
    the summary; a resumed grid trains nothing again, and one stopped between the two attempts trains
    only the second, to the same model; `tinylm prune` takes the runs set aside in its stride."""
    raw = yaml.safe_load(Path(load_preset("smoke").path).read_text())
    variant = raw | {"member_reseeds": 1, "gate_nats": 50.0, "e5": None, "e6": None, "distill": None}
    variant |= {"e0": None, "controlled": None, "pretrain_seeds": 1, "size_seeds": 1, "poolings": ["cls"]}
    variant |= {"corpus_sizes": [200, 400], "c2_epochs_of_main": False}
    preset = tmp_path / "reseed.yaml"
    preset.write_text(yaml.safe_dump(variant))
    out = reproduce(str(preset), str(tmp_path / "grid"), 1, ["agnews"], 1, str(real_data_dir), **QUIET)
    plan = json.loads((out / "plan.json").read_text())
    members = [j for j in plan["jobs"] if j["kind"] == "pretrain" and "member" in j["role"]]
    assert len(members) == 2
    for j in members:
        i = j["role"]["member"]
        (aside,) = set_aside(out / "runs", j["id"])
        assert seed_of(aside) == i and seed_of(out / "runs" / j["id"]) == i + RESEED_STRIDE
    results = json.loads((out / "results.json").read_text())
    rows = {m["run"]: m for m in results["gate"]["models"]}
    first = rows[members[0]["id"]]
    assert [a["seed"] for a in first["set_aside"]] == [0]
    assert first["set_aside"][0]["run"] == f"runs/{members[0]['id']}.below-gate/seed-0"
    assert results["verdicts"]["C4"] == "not tested"
    summary = json.loads((out / "summary.json").read_text())
    assert [m.get("set_aside", []) != [] for m in summary["gate"]["models"]].count(True) == 2
    report = (out / "report.md").read_text()
    assert f"| runs/{members[0]['id']}.below-gate/seed-0 |" in report and "*Set aside*" in report

    kept = out / "runs" / members[0]["id"]
    before = json.loads((kept / "results.json").read_text())["final_eval"]
    mtime = (kept / "results.json").stat().st_mtime_ns
    reproduce(str(preset), str(out), 1, ["agnews"], 1, str(real_data_dir), **QUIET)
    assert (kept / "results.json").stat().st_mtime_ns == mtime  # nothing trained again

    # stopped after the first attempt finished, before it was set aside
    shutil.rmtree(kept)
    os.replace(out / "runs" / f"{members[0]['id']}.below-gate" / "seed-0", kept)
    reproduce(str(preset), str(out), 1, ["agnews"], 1, str(real_data_dir), **QUIET)
    assert (
        seed_of(kept) == RESEED_STRIDE
        and json.loads((kept / "results.json").read_text())["final_eval"] == before
    )
    assert [seed_of(p) for p in set_aside(out / "runs", members[0]["id"])] == [0]

    # `tinylm prune OUT` takes the runs set aside as runs of the grid (not as an unfinished run)
    from tinylm.cli import main

    assert main(["prune", str(out)]) == 0
    assert (set_aside(out / "runs", members[0]["id"])[0] / "model.safetensors").is_file()
