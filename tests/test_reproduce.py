"""`tinylm reproduce`: the smoke preset end to end on the real data, resume, the paper preset's dry run."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tinylm.errors import ConfigError
from tinylm.paper import reproduce as reproduce_module
from tinylm.paper import steps
from tinylm.paper.grid import build_grid
from tinylm.paper.invocations import InvocationClock
from tinylm.paper.presets import load_preset
from tinylm.paper.reproduce import reproduce, write_report

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="session")
def smoke(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return reproduce(
        "smoke", str(tmp_path_factory.mktemp("smoke")), None, None, 1, str(real_data_dir), **QUIET
    )


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def test_smoke_artifacts(smoke: Path) -> None:
    results = json.loads((smoke / "results.json").read_text())
    claims = ("C1", "C2", "C3", "C4", "C1-mean", "C2-epochs")
    assert set(results["verdicts"]) == set(claims)
    # smoke's models see a few thousand tokens: none passes the adequacy gate, so no claim gets a verdict
    assert results["verdicts"] == {c: "not tested" for c in claims}
    gate = results["gate"]
    assert (
        gate["threshold_nats"] == 1.5
        # 2 deep replicates + 2 more sizes × 2 + 2 sizes × 2 by epochs (C2-epochs; the main size's arm
        # is the main run) + 2×2 controlled + 2 members of E4 and 2 more of E6's pool + E5's 3 corpora
        # × 2 budgets
        and len(gate["models"]) == 24
        and not any(m["passed"] for m in gate["models"])
    )
    # C2: every size pre-trained twice (size_seeds 2), replicate r paired with the main corpus's pre-training
    # r and fine-tuned with r's seed: two gaps per size (with a spread), one slope per (task, replicate)
    e2 = results["E2"]
    assert all(d["gap_n"] == [2, 2, 2] and len(d["slope_per_decade"]) == 2 for d in e2["tasks"].values())
    assert e2["pooled_test"]["n"] == 6 and "2 pre-training(s) per size" in results["decisions"]["C2"]["test"]
    c2_section = (smoke / "report.md").read_text().split("## C2 — ")[1].split("## C3")[0]
    rows = [line for line in c2_section.splitlines() if line.startswith("| agnews")]
    assert (
        len(rows) == 2 and [row.count("±") for row in rows] == [3, 3] and "@ 400" in c2_section
    )  # 2 designs
    assert "2 pre-training(s) per size (seeds 0 … 1" in c2_section
    # C2 the paper's way at the main run's epochs (c2_epochs_of_main): size n trains for max_tokens × n / 400
    # tokens, so the larger subsets saw more tokens; the main size's arm is the main run itself; judged on its
    # own (C2-epochs), the report naming each design and each size's epochs
    by_epochs = {m["role"]["size"]: m["tokens"] for m in gate["models"] if m["role"].get("deep_epochs")}
    main0 = {"deep": True, "size": 400, "pseed": 0}
    main_tokens = [m["tokens"] for m in gate["models"] if m["role"] == main0]
    assert sorted(by_epochs) == [200, 800] and by_epochs[200] < main_tokens[0] < by_epochs[800]
    e2e = results["E2-epochs"]
    assert e2e["design"] == "epochs" and all(d["gap_n"] == [2, 2, 2] for d in e2e["tasks"].values())
    epochs = {n: e2e["pretraining_mlm"][str(n)]["epochs"] for n in (200, 400, 800)}
    assert e2e["pretraining_mlm"]["400"]["n"] == 2 and max(epochs.values()) < 1.25 * min(epochs.values())
    main_mlm = e2["pretraining_mlm"]["400"]["mlm_loss"]
    assert e2e["pretraining_mlm"]["400"]["mlm_loss"] == pytest.approx(main_mlm)
    assert "400 articles: " in c2_section and " epochs, held-out MLM " in c2_section
    assert e2e["pooled_test"]["n"] == 6 and results["E2"]["design"] == "tokens"
    assert "### C2-epochs: the paper's design" in c2_section and "Design: equal training tokens" in c2_section
    for size in (200, 400, 800):
        reps = [
            m["mlm_loss"] for m in gate["models"] if m["role"] == {"deep": True, "size": size, "pseed": 0}
        ]
        reps += [
            m["mlm_loss"] for m in gate["models"] if m["role"] == {"deep": True, "size": size, "pseed": 1}
        ]
        mlm = e2["pretraining_mlm"][str(size)]
        assert len(reps) == 2 and mlm["n"] == 2 and mlm["mlm_loss"] == pytest.approx(sum(reps) / 2)
    # C1's replication unit is the pre-training run: 2 replicates × 3 tasks, tasks as fixed effects
    c1 = results["E1"]["pooled_test"]
    assert c1["n"] == 6 and c1["df"] == 3 and "fixed effects" in results["decisions"]["C1"]["test"]
    assert set(results["E1"]["heads"]) == {"cls", "mean"}
    e0 = summary_e0 = json.loads((smoke / "summary.json").read_text())["e0"]
    assert [r["tokens"] for r in e0 if r["pooling"] == "cls"][0] == 0 and len(e0) == 2 * 4  # 0, B/4, B/2, B
    assert {"tokens", "mlm_loss", "task", "pooling", "gap_pp"} <= set(summary_e0[0])
    # E0 with 2 fine-tuning seeds: the gap is the mean of the per-seed gaps, each paired with its scratch run
    assert all(r["seeds"] == 2 and r["gap_pp"] == pytest.approx(sum(r["gap_pp_per_seed"]) / 2) for r in e0)
    e0_section = (smoke / "report.md").read_text().split("## E0")[1].split("## C2")[0]
    e0_rows = [
        line for line in e0_section.splitlines() if line.startswith("| ") and "tokens seen" not in line
    ]
    assert "seed(s) 0 … 1" in e0_section and [row.count("±") for row in e0_rows] == [2] * 4
    tokens = [r["tokens"] for r in e0 if r["pooling"] == "cls"]
    assert tokens == sorted(tokens) and e0[0]["mlm_loss"] > e0[3]["mlm_loss"]
    assert all(m["unigram_loss"] > 0 and m["mlm_loss"] > 0 and m["tokens"] > 0 for m in gate["models"])
    # pre-trained without dropout (the recipe), fine-tuned with BERT's 0.1 in both arms alike
    configs = {
        d.name: yaml.safe_load((d / "config.yaml").read_text())
        for d in (smoke / "runs").iterdir()
        if d.name.startswith(("pretrain-", "finetune-"))
    }
    pre = [c for n, c in configs.items() if n.startswith("pretrain-")]
    ft = [c for n, c in configs.items() if n.startswith("finetune-")]
    assert pre and all(c["dropout"] == 0.0 and c["attention_dropout"] == 0.0 for c in pre)
    assert any(c["init"] == "scratch" for c in ft) and any(c["init"] != "scratch" for c in ft)
    assert all(c["dropout"] == 0.1 and c["attention_dropout"] == 0.1 for c in ft)
    summary = json.loads((smoke / "summary.json").read_text())
    assert summary["preset"] == "smoke" and summary["wall_minutes"] > 0
    # lane time: the runs' training seconds summed per kind (what interruptions do not inflate)
    # (evaluations excluded), and their CPU time (which a paused or crowded machine does not inflate)
    lanes = json.loads((smoke / "timings.json").read_text())["train_seconds"]
    pre = [json.loads((smoke / "runs" / m["run"] / "results.json").read_text()) for m in gate["models"]]
    assert all(0 < r["eval_seconds"] < r["train_seconds"] and r["cpu_seconds"] > 0 for r in pre)
    assert lanes["pretrain"] == pytest.approx(
        sum(r["train_seconds"] - r["eval_seconds"] for r in pre), abs=0.1
    )
    assert lanes["pretrain_cpu"] == pytest.approx(sum(r["cpu_seconds"] for r in pre), abs=0.1)
    assert lanes["pretrain_cpu_runs"] == len(pre) and lanes["finetune"] > 0 and lanes["finetune_cpu"] > 0
    report = (smoke / "report.md").read_text()
    assert "training time summed over the runs: pre-training " in report and "their CPU time" in report
    assert set(summary["verdicts"]["C1"]) == {"verdict", "test", "p", "effect_pp"}
    assert {m["run"] for m in summary["gate"]["models"]} == {m["run"] for m in gate["models"]}
    for task in ("agnews", "dbpedia", "fewrel"):
        paired = results["E4"]["tasks"][task]["paired"]
        lo, hi = paired["ci95_pp"]
        assert lo <= 100 * results["E4"]["tasks"][task]["difference"] <= hi and 0 <= paired["mcnemar_p"] <= 1
        # C4's cost: both sides' training and forward FLOPs and these models' measured latency
        cost = results["E4"]["tasks"][task]["cost"]
        lat = json.loads((smoke / "timings.json").read_text())["committee_latency"][task]
        deep_tokens = cost["reference"]["pretrain_tokens"]
        assert cost["committee"]["pretrain_tokens"] == pytest.approx(2 * deep_tokens, rel=0.1)  # 2 members
        assert all(v > 0 for side in cost.values() for v in side.values())
        assert lat["batch"] == 1 and lat["committee_ms"] > 0 and lat["reference_ms"] > 0
        members = results["E4"]["tasks"][task]["members"]
        assert [m["model"] for m in members] == ["1/32/2", "1/32/2+conv1"]  # the conv front-end is named
    fwd = [
        c["committee"]["inference_flops"] / c["reference"]["inference_flops"]
        for c in (results["E4"]["tasks"][t]["cost"] for t in ("agnews", "dbpedia", "fewrel"))
    ]
    ratios = (smoke / "report.md").read_text().split("Committee ÷ deep model over the tasks: ")[1]
    span = "–".join(sorted({f"{min(fwd):.1f}", f"{max(fwd):.1f}"}, key=float))  # "1.7×", or "1.6–1.7×"
    assert f" {span}× forward FLOPs" in ratios.split("\n")[0] and "× latency" in ratios
    for task in ("agnews", "dbpedia", "fewrel"):
        e1 = results["E1"]["tasks"][task]
        assert (
            len(e1["gaps"]) == 2
            and e1["pretrain_seeds"] == [0, 1]
            and all(0 <= a <= 1 for a in e1["pretrained"] + e1["scratch"])
        )
        assert len(results["E2"]["tasks"][task]["gap_mean"]) == 3
        assert results["E4"]["tasks"][task]["curve"]["k"] == [1, 2]
    assert {r["corpus"] for r in results["E3"]["rows"]} == {"wiki:200", "wiki:400", "wiki:800"}
    assert (
        results["E3"]["controlled"]["selection"]["high"]["mean_score"]
        > results["E3"]["controlled"]["selection"]["low"]["mean_score"]
    )
    # C3's replication unit: each controlled corpus pre-trained twice, paired high/low per replicate
    ctl = results["E3"]["controlled"]
    assert ctl["test"]["n"] == 2 and len(ctl["high"]) == len(ctl["low"]) == 2
    assert ctl["pretraining_seeds"] == 2
    assert "pre-training replicates" in results["decisions"]["C3"]["test"]
    assert "latency" not in json.dumps(results)  # wall-clock numbers live in timings.json
    figures = sorted(p.name for p in (smoke / "figures").glob("*.png"))
    assert figures == sorted(
        [
            "e0_gap_vs_tokens.png",
            "e1_accuracy_per_epoch.png",
            "e2_gap_vs_size.png",
            "e3_gap_vs_overlap.png",
            "e4_latency.png",
            "e4_committee_agnews.png",
            "e4_committee_dbpedia.png",
            "e4_committee_fewrel.png",
            "e5_gaps.png",
            "e6_pareto_agnews.png",
        ]
    )
    for f in figures:
        w, h = png_size(smoke / "figures" / f)
        assert w >= 400 and h >= 300
    report = (smoke / "report.md").read_text()
    for section in (
        "## Verdicts",
        "## C1",
        "## E0",
        "## C2",
        "## C3",
        "## C4",
        "## Deviations from the paper",
        "## Preset",
        "Cost of each side",
    ):
        assert section in report
    tables = [line for line in report.splitlines() if line.startswith("|")]
    assert tables and all(line.count("|") == tables[0].count("|") or line.count("|") >= 4 for line in tables)
    for claim in ("C1", "C2", "C3", "C4"):
        assert f"**{results['verdicts'][claim]}**" in report
    timings = json.loads((smoke / "timings.json").read_text())
    assert timings["latency"]["rows"] and timings["wall_seconds"] > 0
    assert "DBpedia test rows come from an 11,891-row" in report


def test_smoke_future_work(smoke: Path) -> None:
    """E5, E6 and the distillation end to end, and their numbers consistent with E4's on the same models."""
    results = json.loads((smoke / "results.json").read_text())
    e5 = results["E5"]
    cells = {(c, f) for c in ("generic", "agnews", "dbpedia") for f in (1.0, 0.25)}
    for task, t in e5["tasks"].items():
        assert {(c["corpus"], c["fraction"]) for c in t["cells"]} == cells and all(
            c["n"] == 1 for c in t["cells"]
        )
        other = "dbpedia" if task == "agnews" else "agnews"
        assert [c["a"][0] for c in t["cross_vs_generic"]] == [other, other]
    assert e5["answer"].startswith("Does a small task-specific corpus") and "on agnews, " in e5["answer"]
    for task, m in e5["selections"].items():
        assert m["task"] == task and m["articles"] == 200 and m["metric"] == "weighted"
        assert m["scores"]["chosen_mean"] > m["scores"]["pool_mean"]
    # C3 on E5's corpora: 3 corpora × 2 tasks at the full budget, each metric's correlation with the gap
    mc = e5["metric_correlations"]
    assert mc["n"] == 6 and mc["corpora"] == ["agnews", "dbpedia", "generic"]
    assert (
        "weighted_overlap" in mc["metrics"]
        and "Which overlap metric predicts the gap" in (smoke / "report.md").read_text().split("## E5")[1]
    )
    plan = json.loads((smoke / "plan.json").read_text())["jobs"]
    # each gap is paired with a scratch E5 model (e5.model, not the deep model) of the same seed
    e5_model = load_preset("smoke").e5.model  # type: ignore[union-attr]
    scratch = [j for j in plan if j["role"].get("init") == "scratch-e5" and j["role"]["task"] == "agnews"]
    assert len(scratch) == 1 and all(scratch[0]["settings"][k] == v for k, v in e5_model.items())
    wanted = {"init": "e5", "task": "agnews", "corpus": "agnews", "fraction": 1.0}
    own = next(j for j in plan if all(j["role"].get(k) == v for k, v in wanted.items()))
    acc = {
        j["id"]: (lambda r: r.get("test", r["final_epoch"])["accuracy"])(
            json.loads((smoke / "runs" / j["id"] / "results.json").read_text())
        )
        for j in (own, scratch[0])
    }
    cell = next(c for c in e5["tasks"]["agnews"]["cells"] if (c["corpus"], c["fraction"]) == ("agnews", 1.0))
    assert cell["gap_pp"] == pytest.approx(100 * (acc[own["id"]] - acc[scratch[0]["id"]]))
    for job in [j for j in plan if j["role"].get("e5") in ("agnews", "dbpedia")]:
        res = json.loads((smoke / "runs" / job["id"] / "results.json").read_text())
        corpus = smoke / "runs" / job["deps"][0] / "corpus"
        assert [Path(f).resolve() for f in res["data"]["files"]] == [
            (corpus / "documents.jsonl.gz").resolve()
        ]
    e4, e6 = results["E4"]["tasks"]["agnews"], results["E6"]["tasks"]["agnews"]
    points = {(p["committee"], p["k"]): p for p in e6["points"]}
    assert sorted(points) == sorted(
        [("arch0", 1), ("arch0", 2), ("arch1", 1), ("arch1", 2)] + [("mixed", k) for k in range(1, 5)]
    )
    # the pool's first members are E4's: the same models give the same accuracies
    assert points[("mixed", 1)]["accuracy"] == pytest.approx(e4["members"][0]["accuracy"])
    assert points[("mixed", 2)]["accuracy"] == pytest.approx(e4["committee_accuracy"])
    assert e6["reference"]["accuracy"] == pytest.approx(e4["reference"]["accuracy"])
    # training FLOPs of a committee point: the sum of its members'
    flops = {k: p["cost"]["pretrain_flops"] + p["cost"]["finetune_flops"] for k, p in points.items()}
    assert flops[("arch0", 1)] > 0 and flops[("mixed", 2)] == pytest.approx(
        flops[("arch0", 1)] + flops[("arch1", 1)]
    )
    # the pool: member i has architecture i mod 2 and seed i
    shallow = load_preset("smoke").shallow
    for j in [j for j in plan if j["kind"] == "pretrain" and "member" in j["role"]]:
        i = j["role"]["member"]
        assert j["settings"]["seed"] == i and all(j["settings"][k] == v for k, v in shallow[i % 2].items())
    d = results["distill"]["tasks"]["agnews"]
    assert d["students"] == ["student", "student+text"]
    # the best member is the one with the best validation score
    from tinylm.finetune import validation_score

    scores = {
        m: validation_score(json.loads((smoke / m / "results.json").read_text()))
        for m in d["runs"]["members"]
    }
    assert scores[d["best_member"]] == max(scores.values())
    assert d["accuracy"]["committee"] == pytest.approx(points[("mixed", 4)]["accuracy"])
    assert d["accuracy"]["deep"] == pytest.approx(e4["reference"]["accuracy"])
    assert d["accuracy"]["member0"] == pytest.approx(e4["members"][0]["accuracy"])
    students = {
        n: json.loads((smoke / r / "results.json").read_text()) for n, r in d["runs"]["students"].items()
    }
    for name, res in students.items():
        assert d["accuracy"][name] == pytest.approx(res.get("test", res["final_epoch"])["accuracy"])
        assert d["distill"][name]["teacher_test_accuracy"] == pytest.approx(d["accuracy"]["committee"])
        assert set(d["paired"][name]) == {"committee", "best_member", "member0", "deep"}
    # student+text also learnt the 300 documents (200 + 100 held out) E5 selected for agnews, every epoch
    assert (
        d["distill"]["student+text"]["unlabelled"].startswith("file:runs/select-")
        and d["distill"]["student+text"]["unlabelled"].endswith("/corpus")
        and d["distill"]["student"]["unlabelled"] is None
    )
    epochs = students["student"]["training"]["epochs_completed"]
    assert (
        students["student+text"]["training"]["examples"]
        == students["student"]["training"]["examples"] + 300 * epochs
    )
    summary = json.loads((smoke / "summary.json").read_text())
    assert {"e5", "e6", "distill", "c2"} <= set(summary)
    # summary.json's E5 cells keep the per-(replicate/seed) gaps their mean and std come from
    for c in summary["e5"]["cells"]:
        assert len(c["units"]) == c["n"] and c["gap_pp"] == pytest.approx(np.mean(list(c["units"].values())))
        assert 0 < c["scratch_accuracy"] <= 1
    assert set(summary["c2"]) == {"equal_tokens", "equal_epochs"}
    # each design's record: its decision, the gap per task and size, each size's epochs and losses
    c2e = summary["c2"]["equal_epochs"]
    assert c2e["decision"]["verdict"] == summary["verdicts"]["C2-epochs"]["verdict"]
    assert c2e["sizes"] == [200, 400, 800] and len(c2e["gap_pp"]["agnews"]) == 3
    assert set(c2e["pretraining"]) == {"200", "400", "800"} and c2e["pretraining"]["400"]["epochs"] > 0
    timings = json.loads((smoke / "timings.json").read_text())["future_latency"]
    assert set(timings) == {"ensemble:agnews", "distill:agnews"}
    assert set(timings["ensemble:agnews"]["ms"]) == {"deep"} | {f"{c}:{k}" for c, k in points}
    assert all(v["1"] > 0 and v["4"] > 0 for v in timings["ensemble:agnews"]["ms"].values())
    report = (smoke / "report.md").read_text()
    for section in (
        "## E5 — ",
        "## E6 — ",
        "## Distillation — ",
        "Best shallow configuration per latency budget",
    ):
        assert section in report


def test_interrupted_grid_resumes_and_gives_the_same_results(
    real_data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    args = dict(seeds=1, tasks=["agnews"], n_jobs=1, data_dir=str(real_data_dir))
    preset = str(smoke_variant(tmp_path, e5=None, distill={"tasks": ["agnews"]}))  # E5 costs CI minutes
    full = reproduce(preset, str(tmp_path / "full"), **args, **QUIET)
    calls = []
    real_run_job = steps.run_job

    def interrupted(job, *a, **k):
        if len(calls) == 6:
            raise KeyboardInterrupt
        calls.append(job.id)
        return real_run_job(job, *a, **k)

    monkeypatch.setattr(steps, "run_job", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reproduce(preset, str(tmp_path / "resumed"), **args, **QUIET)
    first = list(calls)
    assert len(first) == 6 and not (tmp_path / "resumed" / "results.json").exists()
    killed = json.loads((tmp_path / "resumed" / "invocations.json").read_text())
    assert [d["ended"] for d in killed] == ["interrupted"] and killed[0]["seconds"] > 0
    calls.clear()
    monkeypatch.setattr(
        steps, "run_job", lambda job, *a, **k: calls.append(job.id) or real_run_job(job, *a, **k)
    )
    reproduce(preset, str(tmp_path / "resumed"), **args, **QUIET)
    assert not set(first) & set(calls)  # finished runs were reused, not retrained
    total = len(build_grid(load_preset(preset), ["agnews"], 1))
    assert len(first) + len(calls) == total
    a = json.loads((full / "results.json").read_text())
    b = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert a == b
    both = json.loads((tmp_path / "resumed" / "invocations.json").read_text())
    assert [d["ended"] for d in both] == ["interrupted", "finished"]
    timings = json.loads((tmp_path / "resumed" / "timings.json").read_text())
    assert timings["wall_seconds"] == pytest.approx(sum(d["seconds"] for d in both), abs=0.11)
    ran = {k: v for k, v in timings["run_seconds"].items() if k in calls}
    assert len(ran) == len(calls) and all(v > 0 for v in ran.values())
    reproduce(preset, str(tmp_path / "resumed"), **args, **QUIET)  # all finished: the report again
    again = json.loads((tmp_path / "resumed" / "timings.json").read_text())["run_seconds"]
    assert again == timings["run_seconds"]  # the jobs' own seconds are kept, not zeroed
    # every job finished but the report fails (as it did once for a missing module): not "finished"
    monkeypatch.setattr(reproduce_module, "write_report", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        reproduce(preset, str(tmp_path / "resumed"), **args, **QUIET)
    third = json.loads((tmp_path / "resumed" / "invocations.json").read_text())[-1]["ended"]
    assert third == "interrupted while writing the report"


def test_a_killed_invocation_keeps_its_wall_time(tmp_path: Path) -> None:
    """The clock rewrites its entry while the grid runs: what a SIGKILL leaves behind counts the time."""
    (tmp_path / "invocations.json").write_text('[{"seconds": 100.0, "jobs": 2, "ended": "finished"}]')
    clock = InvocationClock(tmp_path, 2, every=0.05).start()
    time.sleep(0.4)
    on_disk = json.loads((tmp_path / "invocations.json").read_text())  # as a kill would leave it
    assert len(on_disk) == 2 and on_disk[1]["ended"].startswith("running (or killed)")
    assert on_disk[1]["seconds"] >= 0.2
    assert clock.stop("finished") >= 100.4


def test_paper_preset_dry_run(real_data_dir: Path, tmp_path: Path) -> None:
    p = load_preset("paper")
    assert p.deep == {"model": "bert6"} and sorted(p.corpus_sizes) == [20000, 40000, 90000]
    assert p.pretrain["epochs"] == 50 and p.pretrain["lr"] == 5e-5 and p.samples["fewrel"] == [630, 70]
    jobs = build_grid(p, p.tasks, p.seeds)
    assert sum(j.kind == "pretrain" for j in jobs) == 3 + 2 + 5
    out = reproduce(
        "paper", str(tmp_path / "paper"), None, None, 1, str(real_data_dir), dry_run=True, **QUIET
    )
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 2 and all((r / "results.json").is_file() for r in runs)
    pre = (
        json.loads((runs[1] / "results.json").read_text())
        if runs[1].name.startswith("pretrain")
        else json.loads((runs[0] / "results.json").read_text())
    )
    assert pre["steps"] == 2 and pre["parameters"]["backbone"] == 66_660_096


def test_figures_do_not_print_font_fallback_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """matplotlib logs "findfont: Font family [...] not found" per missing family (a report printed ~20 of
    them here); the report's figures are written without them, and still written."""
    from tinylm.paper.figures import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots()
    ax.set_title("x", fontfamily="no-such-font-family-tinylm")
    _save(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
    assert not [r for r in caplog.records if "findfont" in r.getMessage()]


def test_bad_preset(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("tasks: [agnews]\nseeds: 1\nmembers: 1\nbogus: 3\n")
    with pytest.raises(ConfigError) as e:
        load_preset(str(bad))
    assert "bogus: unknown preset key" in str(e.value) and "deep: missing" in str(e.value)
    with pytest.raises(ConfigError, match="no preset 'huge'"):
        load_preset("huge")


def smoke_variant(tmp_path: Path, **changes: object) -> Path:
    """The smoke preset with some keys replaced, as a YAML file."""
    import yaml

    raw = yaml.safe_load((Path(load_preset("smoke").path)).read_text())
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(raw | changes))
    return path


def test_preset_types_are_checked_with_their_place(tmp_path: Path) -> None:
    bad = smoke_variant(
        tmp_path,
        members="2",
        samples={"agnews": [20, "x"], "dbpedia": [5, 5], "fewrel": [5, 3]},
        latency={"k": [2], "batch": [1], "precision": ["fp32"]},
        tasks=["agnews", "file:x.csv"],
    )
    with pytest.raises(ConfigError) as e:
        load_preset(str(bad))
    text = str(e.value)
    for part in (
        "members: expected an integer, got '2'",
        "samples.agnews[1]: expected an integer, got 'x'",
        "latency.reps: missing",
    ):
        assert part in text
    with pytest.raises(ConfigError, match="'file:x.csv' is not a registered task"):
        load_preset(str(smoke_variant(tmp_path, tasks=["agnews", "file:x.csv"])))
    bad = smoke_variant(
        tmp_path,
        pretrain={"epochs": 1},
        poolings=["cls", "max"],
        pretrain_seeds=0,
        size_seeds=3,
        e0={"tasks": ["sst2"], "points": 2, "seeds": 0, "poolings": ["mean"]},
    )
    with pytest.raises(ConfigError) as e:
        load_preset(str(bad))
    for part in (
        "e0: needs pretrain.max_tokens",
        "e0.tasks: 'sst2' is not one of the preset's tasks",
        "poolings: 'max' is not a head",
        "pretrain_seeds: must be positive",
        "size_seeds: must be between 1 and pretrain_seeds (0",
        "e0.seeds: must be positive, got 0",
        "e0.poolings: 'mean' is not one of the preset's poolings ['cls', 'max']",
    ):
        assert part in str(e.value)
    assert load_preset(str(smoke_variant(tmp_path, controlled=None, e0=None))).controlled is None


def test_cpu_preset_members_are_the_ones_its_description_names() -> None:
    """The cpu preset's description: three 1-layer/128 members — 2 heads, 4 heads, 2 heads with the Conv2d
    front-end — on 12M tokens each with the masking schedule, re-seeded at most twice below the gate."""
    p = load_preset("cpu")
    members = [j for j in build_grid(p, p.tasks, p.seeds) if j.kind == "pretrain" and "member" in j.role]
    shapes = [
        (s["layers"], s["hidden_size"], s["heads"], s.get("conv_layers", 0), s["max_tokens"])
        for s in (j.settings for j in members)
    ]
    assert shapes == [(1, 128, 2, 0, 12_000_000), (1, 128, 4, 0, 12_000_000), (1, 128, 2, 2, 12_000_000)]
    assert "2 heads, 4 heads, 2 heads with the Conv2d" in " ".join(p.description.split())
    assert "12M tokens each with the same 40% -> 15% masking schedule" in " ".join(p.description.split())
    assert {j.settings["mask_prob_start"] for j in members} == {0.4}
    # "a member that ends below the gate is pre-trained again with the next seed, at most twice"
    assert p.member_reseeds == 2 and all(j.settings["gate_reseeds"] == 2 for j in members)
    assert "pre-trained again with the next seed, at most twice" in " ".join(p.description.split())


def test_quick_preset_runs_what_its_description_names() -> None:
    """The quick preset's description: two conv members (2 and 4 heads) on 4M tokens, both heads in C1,
    E0 with 2 fine-tuning seeds on the [CLS] head only (`e0.poolings`)."""
    p = load_preset("quick")
    grid = build_grid(p, p.tasks, p.seeds)
    members = [j.settings for j in grid if j.kind == "pretrain" and "member" in j.role]
    assert [(s["heads"], s["conv_layers"], s["max_tokens"]) for s in members] == [
        (2, 2, 4_000_000),
        (4, 2, 4_000_000),
    ]
    finetunes = [j for j in grid if j.kind == "finetune"]
    e0 = [j for j in finetunes if j.role.get("e0")]
    snapshot_runs = [j for j in e0 if j.role["init"] == "snapshot"]
    assert {j.role["pooling"] for j in e0} == {"cls"} and len(snapshot_runs) == 2 * 2 * 4  # tasks, seeds
    assert {j.role["pooling"] for j in finetunes if not j.role.get("e0")} == {"cls", "mean"}
    text = " ".join(p.description.split())
    assert "on 4M tokens" in text and "E0 with 2 fine-tuning seeds on the [CLS] head" in text


def test_controlled_corpora_get_their_own_pretraining_budget(tmp_path: Path) -> None:
    """`controlled_pretrain` changes the high/low-overlap pre-trainings only (their full-length articles
    buy fewer steps per token); set without controlled corpora it is an error."""
    p = load_preset("cpu")
    assert p.controlled is not None and p.controlled_pretrain["max_tokens"] > p.pretrain["max_tokens"]
    budgets = {
        ("selection" in j.role, "member" in j.role): j.settings["max_tokens"]
        for j in build_grid(p, p.tasks, p.seeds)
        if j.kind == "pretrain"
    }
    assert budgets == {
        (True, False): p.controlled_pretrain["max_tokens"],
        (False, False): p.pretrain["max_tokens"],
        (False, True): p.member_pretrain["max_tokens"],
    }
    bad = smoke_variant(tmp_path, controlled=None, e0=None, controlled_pretrain={"max_tokens": 10})
    with pytest.raises(ConfigError, match="controlled_pretrain: set, but the preset has no controlled"):
        load_preset(str(bad))


def test_grid_is_validated_before_the_first_job(real_data_dir: Path, tmp_path: Path) -> None:
    """A typo in the preset's finetune section (used only after every pre-training) stops the grid before
    anything runs, with every problem listed."""
    bad = smoke_variant(
        tmp_path,
        finetune={"epochs": 2, "batch_size": 32, "lr": 1.0e-3, "learning_rate": 1},
        pretrain={"max_tokens": 16000, "batch_size": 32, "lr": 1.0e-3, "warmup_steps": -2},
    )
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as e:
        reproduce(str(bad), str(out), None, None, 1, str(real_data_dir), **QUIET)
    text = str(e.value)
    assert "learning_rate: unknown setting" in text and "warmup_steps: must be >= 0" in text
    assert not (out / "runs").exists()
    with pytest.raises(ConfigError, match="seeds: must be at least 1, got 0"):
        reproduce("smoke", str(out), 0, None, 1, str(real_data_dir), **QUIET)


def test_report_reads_results_only(smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The analysis and report need nothing but the jobs' results: no data, no token cache, no timing."""
    import shutil

    from tinylm.paper.jobs import Job

    before = (smoke / "results.json").read_bytes()
    plan = json.loads((smoke / "plan.json").read_text())
    jobs = [Job(j["kind"], j["settings"], j["deps"], j["role"], j["id"]) for j in plan["jobs"]]
    shutil.rmtree(smoke / "cache")
    monkeypatch.delenv("TINYLM_DATA_DIR", raising=False)
    monkeypatch.setattr(steps, "run_job", lambda *a, **k: pytest.fail("the report ran a job"))
    p = load_preset("smoke")
    write_report(smoke, p, jobs, plan["args"]["tasks"], plan["args"]["seeds"], 1.0, {}, **QUIET)
    assert (smoke / "results.json").read_bytes() == before


def test_grid_in_two_worker_processes(real_data_dir: Path, tmp_path: Path) -> None:
    preset = str(smoke_variant(tmp_path, e5=None, distill={"tasks": ["agnews"]}))
    out = reproduce(preset, str(tmp_path / "jobs2"), 1, ["dbpedia"], 2, str(real_data_dir), **QUIET)
    results = json.loads((out / "results.json").read_text())
    plan = json.loads((out / "plan.json").read_text())
    assert plan["args"]["jobs"] == 2 and all(
        (out / "runs" / j["id"] / "results.json").is_file() for j in plan["jobs"]
    )
    assert (
        results["tasks"] == ["dbpedia"] and results["E3"]["controlled"] is None
    )  # the controlled task was not run
    assert results["verdicts"]["C3"] == "not tested"


def test_learning_rate_sweep_is_chosen_on_validation(real_data_dir: Path, tmp_path: Path) -> None:
    finetune = {"epochs": 2, "batch_size": 32, "lr": 1.0e-3, "validation_per_label": 2}
    variant = smoke_variant(
        tmp_path,
        finetune=finetune,
        finetune_lrs=[1.0e-3, 3.0e-3],
        poolings=["cls"],
        pretrain_seeds=1,
        size_seeds=1,
        c2_epochs_of_main=False,
        e0=None,
        e5=None,
        e6=None,
        distill=None,
    )
    out = reproduce(str(variant), str(tmp_path / "sweep"), 1, ["agnews"], 1, str(real_data_dir), **QUIET)
    plan = json.loads((out / "plan.json").read_text())
    ft = [j for j in plan["jobs"] if j["kind"] == "finetune"]
    # scratch, 3 sizes, high/low × 2 pre-training replicates, 2 members: each at 2 rates
    assert len(ft) == 2 * (1 + 3 + 2 * 2 + 2)
    runs = {j["id"]: json.loads((out / "runs" / j["id"] / "results.json").read_text()) for j in ft}
    scratch = [runs[j["id"]] for j in ft if j["role"]["init"] == "scratch"]
    assert [r["training"]["steps"] > 0 and r["evaluated_each_epoch_on"] == "validation" for r in scratch] == [
        True
    ] * 2
    best = max(scratch, key=lambda r: r["test"]["validation_accuracy"])
    results = json.loads((out / "results.json").read_text())
    assert results["E1"]["tasks"]["agnews"]["scratch"] == [best["test"]["accuracy"]]
    members = results["E4"]["tasks"]["agnews"]["members"]
    for i, m in enumerate(members):  # the committee used each member's better rate
        pair = [j["id"] for j in ft if j["role"]["init"] == "member" and j["role"]["member"] == i]
        scores = [runs[p]["test"]["validation_accuracy"] for p in pair]
        assert m["run"] == f"runs/{pair[scores.index(max(scores))]}"


def test_estimate_warns_when_timed_on_a_busy_machine(
    real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device column times a few steps: under other load it overstates, and the estimate says so."""
    from tinylm.paper import estimate as est

    for load, warned in ((0.0, False), (8.0 * (os.cpu_count() or 1), True)):
        monkeypatch.setattr(est.os, "getloadavg", lambda load=load: (load, load, load))
        e = est.estimate([], str(real_data_dir), ["agnews"], 64, [1], 100.0)
        assert e["busy"]["busy"] is warned and e["busy"]["load_average"] == load
        assert ("timed while the machine was busy" in est.format_estimate(e)) is warned


def test_estimate_times_each_job_in_the_precision_it_trains_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """`precision: auto` jobs (quick) are timed as the trainer will run them (bf16 where `auto_precision`
    picks it here, fp32 where it does not), a stated precision (smoke: fp32) as stated, and the total line
    names the precision; the estimate once timed every job in fp32."""
    from tinylm import device
    from tinylm.paper import estimate as est

    def pair(preset: str) -> list:  # a pre-training and one fine-tuning of it
        grid = build_grid(load_preset(preset), ["agnews"], 1)
        ft = next(j for j in grid if j.kind == "finetune" and j.deps and j.deps[0].startswith("pretrain"))
        return [next(j for j in grid if j.id == ft.deps[0]), ft]

    timed: list[str] = []

    def fake_speed(
        kind: str,
        cfg: object,
        batch: int,
        seq: float,
        precision: str = "fp32",
        mask_share: float | None = None,
    ) -> float:
        timed.append(precision)
        return 1000.0 if precision == "fp32" else 4000.0

    monkeypatch.setattr(est, "tokens_per_second", fake_speed)
    monkeypatch.setattr(est, "mean_lengths", lambda *a: {"wiki": 93.0, "agnews": 50.0, "agnews:labels": 4.0})
    minutes = {}
    for choice in ("fp32", "bf16"):
        monkeypatch.setattr(device, "auto_precision", lambda dev, cpu, c=choice: (c, "stubbed for the test"))
        for preset, expected in (("quick", choice), ("smoke", "fp32")):
            timed.clear()
            e = est.estimate(pair(preset), None, ["agnews"], 64, [1], 100.0)
            assert len(timed) == 2 and set(timed) == {expected} and e["precisions"] == [expected]
            assert [r["precision"] for r in e["rows"]] == [expected, expected]
            assert f"threads, {expected})" in est.format_estimate(e)
            if preset == "quick":
                minutes[choice] = e["total"]["minutes_here"]
    assert minutes["fp32"] == pytest.approx(4 * minutes["bf16"])


def test_the_estimates_timed_step_runs_in_the_precision_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tokens_per_second` runs each timed forward under bf16 autocast when asked for bf16, not otherwise."""
    import torch

    from tinylm.config import ModelConfig
    from tinylm.model import TinyBertForMaskedLM
    from tinylm.paper.estimate import tokens_per_second

    seen: list[torch.dtype | None] = []
    forward = TinyBertForMaskedLM.forward

    def spy(self: TinyBertForMaskedLM, *args: object, **kw: object) -> torch.Tensor:
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return forward(self, *args, **kw)

    monkeypatch.setattr(TinyBertForMaskedLM, "forward", spy)
    cfg = ModelConfig(layers=1, hidden_size=32, heads=2, ffn_size=64, vocab_size=2000, max_length=16)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
        seen.clear()
        assert tokens_per_second("pretrain", cfg, 4, 12.0, precision, budget_s=0.05) > 0
        assert seen and set(seen) == {dtype}


def test_the_estimates_timed_step_is_the_trainers_step_on_the_real_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CPU column timed 8 rows of a tiny model through plain logits: 3x slower than the lanes it
    predicts. Now a tiny model's timed step has the run's batch and the fused loss at the masked rows; a
    large model keeps at most 8 rows on a CPU (its few steps stay quick)."""
    import torch

    from tinylm.config import ModelConfig
    from tinylm.model import TinyBertForMaskedLM
    from tinylm.paper.estimate import timed_rows, tokens_per_second

    calls: list[tuple[int, bool]] = []
    forward = TinyBertForMaskedLM.forward

    def spy(self: TinyBertForMaskedLM, ids: torch.Tensor, *args: object, **kw: object) -> object:
        calls.append((ids.shape[0], kw.get("targets") is not None))
        return forward(self, ids, *args, **kw)

    monkeypatch.setattr(TinyBertForMaskedLM, "forward", spy)
    tiny = ModelConfig(layers=2, hidden_size=128, heads=2, ffn_size=512, vocab_size=30522, max_length=128)
    large = ModelConfig(layers=12, hidden_size=768, heads=12, ffn_size=3072, vocab_size=30522, max_length=128)
    cpu = torch.device("cpu")
    assert timed_rows("pretrain", tiny, 32, 93, cpu) == 32 and timed_rows("finetune", tiny, 32, 50, cpu) == 32
    assert timed_rows("pretrain", large, 32, 128, cpu) == 8
    assert timed_rows("pretrain", large, 32, 128, torch.device("cuda")) == 32
    # a masking schedule's extra rows count: 40 % → 15 % predicts 27.5 % of the tokens on average
    from tinylm.config import CorpusConfig
    from tinylm.paper.estimate import prediction_share

    assert prediction_share(CorpusConfig()) == pytest.approx(0.15)
    assert prediction_share(CorpusConfig(mask_prob_start=0.4)) == pytest.approx(0.275)
    assert prediction_share(CorpusConfig(mask_prob_start=0.3, predict_prob=0.15)) == pytest.approx(0.15)
    # a sampled-softmax step's row costs its candidates and its target, not the vocabulary
    w = 2048 / 30522
    assert prediction_share(CorpusConfig(sampled_softmax=2047), 30522) == pytest.approx(0.15 * w)
    half = CorpusConfig(mask_prob_start=0.4, sampled_softmax=2047, sampled_softmax_share=0.5)
    assert prediction_share(half, 30522) == pytest.approx((0.3375 * w + 0.2125) / 2)
    assert prediction_share(half) == pytest.approx(0.275)  # rows, whatever their width
    small = ModelConfig(layers=1, hidden_size=32, heads=2, ffn_size=64, vocab_size=2000, max_length=16)
    assert tokens_per_second("pretrain", small, 16, 12.0, "fp32", budget_s=0.05) > 0
    assert calls and set(calls) == {(16, True)}


def test_gpu_estimate_of_tiny_models_has_a_per_step_floor() -> None:
    """`--estimate`'s GPU column: each job is the larger of FLOPs ÷ TFLOP/s and steps × (operator launches ×
    µs per launch); the launches are counted on a real step (more layers, more launches), and the bound
    that applies is named."""
    from tinylm.config import ModelConfig
    from tinylm.paper.estimate import gpu_minutes, launches_per_step

    one, two = (launches_per_step("pretrain", ModelConfig(layers=n)) for n in (1, 2))
    assert 30 < one < two < 300
    assert launches_per_step("finetune", ModelConfig(layers=2)) > 30
    tiny = {"flops": 1.75e14, "steps": 10_000, "launches_per_step": two, "seq": 93.0, "batch": 32}
    g = gpu_minutes(tiny, 100.0, 10.0, None)
    assert g["gpu_bound"] == "per-step floor"
    assert g["minutes_gpu"] == pytest.approx(10_000 * two * 10e-6 / 60)
    assert g["minutes_gpu"] > 1.75e14 / 100e12 / 60  # the FLOP bound alone said less
    big = tiny | {"flops": 1e18}
    assert gpu_minutes(big, 100.0, 10.0, None)["gpu_bound"] == "FLOPs"
    measured = gpu_minutes(tiny, 100.0, 10.0, measured_tps=93.0 * 32 / 0.004)  # 4 ms a step, timed
    assert measured["gpu_step_floor_s"] == pytest.approx(0.004)


def test_estimate_counts_a_students_unlabelled_documents() -> None:
    """The distilled student with unlabelled text learns E5's selected articles every epoch beside its
    labelled examples: the estimate counts them (it once counted the labelled examples alone)."""
    from tinylm.paper.estimate import _unlabelled_docs, job_cost
    from tinylm.paper.grid import build_grid
    from tinylm.paper.jobs import by_role

    p = load_preset("future")
    jobs = build_grid(p, p.tasks, p.seeds)
    by_job = {j.id: j for j in jobs}
    lengths = {"wiki": 93.0, "agnews": 50.0, "agnews:labels": 4.0, "dbpedia:labels": 14.0, "dbpedia": 60.0}
    plain, text = (
        by_role(jobs, "finetune", init="distill", unlabelled=u, task="agnews") for u in (None, True)
    )
    assert [_unlabelled_docs(j, by_job) for j in plain] == [0] * len(plain)
    assert {_unlabelled_docs(j, by_job) for j in text} == {p.e5.articles}  # type: ignore[union-attr]
    init = by_job[text[0].deps[0]]
    with_text = job_cost(text[0], lengths, init, _unlabelled_docs(text[0], by_job))["tokens"]
    labelled = job_cost(plain[0], lengths, init)["tokens"]
    epochs = p.finetune["epochs"]
    assert with_text - labelled == pytest.approx(epochs * p.e5.articles * 93.0)  # type: ignore[union-attr]


def test_grid_status_shows_running_jobs_and_a_corrected_eta(tmp_path: Path) -> None:
    """Under the jobs bar: each running training job's steps of total and tokens/s (from its metrics log)
    and the grid's ETA (the estimate scaled by measured ÷ estimated of the finished jobs, over the workers);
    not a terminal: no bars, one line per finished job."""
    from tinylm.paper.status import GridStatus

    run = tmp_path / "runs" / "pretrain-a"
    run.mkdir(parents=True)
    rec = {"step": 250, "total_steps": 1000, "epoch": 0, "loss": 7.1, "tokens_per_s": 4700.0, "tokens": 1}
    (run / "metrics.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps({"step": 250, "eval": {}}) + "\n")
    expected = {"done-1": 100.0, "pretrain-a": 400.0, "later": 200.0}
    lines: list[str] = []
    tty = GridStatus(3, 0, tmp_path / "runs", expected, workers=2, log=lines.append, tty=True)
    tty.finished("done-1", 200.0, ["pretrain-a"], ["later"])  # took twice its estimate
    tty.refresh(["pretrain-a"], ["later"])
    line = tty.lines["pretrain-a"]
    assert (line.n, line.total) == (250, 1000) and "4,700 tok/s" in str(line)
    # left: 200 (later) + 400 × 0.75 (pretrain-a) = 500 expected seconds × 2 (measured/expected) ÷ 2 workers
    assert tty.eta(["pretrain-a"], ["later"], {"pretrain-a": 0.25}) == pytest.approx(500.0)
    assert "grid ETA 8m20s" in str(tty.bar)
    tty.close()
    assert not lines
    plain = GridStatus(3, 0, tmp_path / "runs", expected, workers=2, log=lines.append, tty=False)
    plain.refresh(["pretrain-a"], ["later"])
    plain.finished("done-1", 200.0, ["pretrain-a"], ["later"])
    plain.close()
    assert lines == ["[1/3] done-1 finished in 200s; grid ETA 10m00s"]


def test_epoch_figure_takes_runs_stopped_early(tmp_path: Path) -> None:
    """With `patience` in a preset's fine-tuning, runs stop at different epochs: E1's figure averages each
    epoch over the runs that reached it instead of failing on a ragged array."""
    from tinylm.paper.figures import fig_epochs

    curves = {"agnews": {"pre-trained": [[0.5, 0.6, 0.7], [0.5, 0.6]], "scratch": [[0.4, 0.5]]}}
    fig_epochs(curves, tmp_path / "e1.png")
    width, height = png_size(tmp_path / "e1.png")
    assert width > 200 and height > 200


def test_overlap_metric_correlations_name_the_best_predictor() -> None:
    """E3's question "which overlap metric predicts the gap": Pearson r and p per metric over the (task,
    corpus) points; a metric that does not vary gets none, and the best is the largest r."""
    from scipy import stats

    from tinylm.paper.analyse import OVERLAP_METRICS, metric_correlations

    gaps = [0.01, 0.02, 0.04, 0.03, 0.05]
    points = [
        {"corpus": f"wiki:{i}", "gap_mean": g}
        | {m: 0.5 for m in OVERLAP_METRICS}
        | {"weighted_overlap": 0.1 * g + 0.001 * i, "coverage@5": [0.3, 0.1, 0.2, 0.5, 0.4][i]}
        for i, g in enumerate(gaps)
    ]
    mc = metric_correlations(points)
    assert mc["n"] == 5 and mc["best"] == "weighted_overlap" and mc["metrics"]["type_coverage"] is None
    r, p = stats.pearsonr([pt["coverage@5"] for pt in points], gaps)
    assert mc["metrics"]["coverage@5"] == pytest.approx({"r": r, "p": p})
    assert mc["metrics"]["weighted_overlap"]["r"] > mc["metrics"]["coverage@5"]["r"]
    assert metric_correlations(points[:2])["best"] is None  # fewer than 3 points: no correlation
    from tinylm.paper.render import metric_correlation_lines

    text = "\n".join(metric_correlation_lines(mc))
    assert "| weighted_overlap | +" in text and "Best predictor here: **weighted_overlap**" in text


def test_finished_pretrainings_of_another_grid_are_reused(
    smoke: Path, real_data_dir: Path, tmp_path: Path
) -> None:
    """`--reuse-from`: a finished pre-training of another grid with the same settings is copied in (without
    what only a resume needs) and the grid does not train it again; one with other settings (another
    grid's `file:` corpus, a dry run's 2 steps), an unfinished one, or a run already here is not taken; the
    report lists the copies and leaves their time out of the lane time."""
    import shutil

    from tinylm.paper.analyse import Results
    from tinylm.paper.context import Context
    from tinylm.paper.executor import run_local
    from tinylm.paper.render import _lane_time
    from tinylm.paper.reproduce import train_seconds
    from tinylm.paper.reuse import reuse_runs, reused_runs, source_runs_dirs

    p = load_preset("smoke")
    jobs = build_grid(p, p.tasks, p.seeds)
    pre = [j for j in jobs if j.kind == "pretrain"]
    wiki = [j for j in pre if not j.settings.get("corpus", "wikipedia").startswith("file:")]
    assert 0 < len(wiki) < len(pre)  # the smoke grid has both kinds
    # a second source: one run as a bare runs directory, with a checkpoint and a lock left in it
    other = tmp_path / "other-runs"
    shutil.copytree(smoke / "runs" / wiki[0].id, other / wiki[0].id)
    (other / wiki[0].id / "checkpoints" / "step-00000001").mkdir(parents=True)
    (other / wiki[0].id / ".lock").write_text("1\n")
    shutil.copytree(smoke / "runs" / wiki[2].id, other / wiki[2].id)
    (other / wiki[2].id / "results.json").unlink()  # unfinished there: taken from the next source
    sources, problems = source_runs_dirs([str(other), str(smoke)])
    assert problems == [] and sources == [other, smoke / "runs"]

    # --estimate says what is left when they are copied, and copies nothing
    logs: list[str] = []
    reproduce(
        "smoke",
        str(tmp_path / "grid"),
        None,
        None,
        1,
        str(real_data_dir),
        estimate_only=True,
        reuse_from=[str(other), str(smoke)],
        log=logs.append,
    )
    left = [line for line in logs if line.startswith("left to run: ")]
    assert len(left) == 1 and f"0 finished in --out, {len(wiki)} to be copied by --reuse-from" in left[0]
    assert not (tmp_path / "grid").exists()

    ctx, logs = Context(tmp_path / "grid", str(real_data_dir)), []
    (ctx.runs_dir / wiki[1].id).mkdir(parents=True)  # in progress here: resumed, not replaced
    copied = reuse_runs(jobs, ctx, sources, logs.append)
    assert set(copied) == {j.id for j in wiki[2:]} | {wiki[0].id}
    assert copied[wiki[0].id] == str((other / wiki[0].id).resolve())  # the first source that has it
    assert copied[wiki[2].id] == str((smoke / "runs" / wiki[2].id).resolve())
    refused = [line for line in logs if "not reused" in line]
    assert len(refused) == len(pre) - len(wiki) and all("corpus: 'file:" in line for line in refused)
    first = ctx.runs_dir / wiki[0].id
    assert not (first / "checkpoints").exists() and not (first / ".lock").exists()
    assert (first / "model.safetensors").read_bytes() == (
        smoke / "runs" / wiki[0].id / "model.safetensors"
    ).read_bytes()
    assert json.loads((first / "reused_from.json").read_text())["source"] == copied[wiki[0].id]
    assert not [f for f in ctx.runs_dir.iterdir() if f.name.startswith(".")]  # no temporary directory left

    # the grid finds them finished and trains none of them again
    before = {i: (ctx.runs_dir / i / "results.json").stat().st_mtime_ns for i in copied}
    done = [j for j in wiki if j.id in copied]
    assert set(run_local(done, ctx, 1, lambda *_: None).values()) == {0.0}
    assert before == {i: (ctx.runs_dir / i / "results.json").stat().st_mtime_ns for i in copied}
    assert reuse_runs(jobs, ctx, sources, logs.append) == {}  # nothing more to copy
    # and --estimate on this grid counts them as finished in --out
    logs = []
    reproduce("smoke", str(ctx.out), None, None, 1, str(real_data_dir), estimate_only=True, log=logs.append)
    left = [line for line in logs if line.startswith("left to run: ")]
    assert len(left) == 1 and f"({len(copied)} finished in --out, 0 to be copied by --reuse-from)" in left[0]

    # the report: listed with their source, their training time not in this grid's lane time
    assert reused_runs(ctx, jobs) == copied
    assert train_seconds(Results(ctx.out, done), copied)["pretrain"] == 0.0
    assert train_seconds(Results(ctx.out, done), {})["pretrain"] > 0.0
    line = _lane_time({"train_seconds": {"pretrain": 60.0, "finetune": 60.0}, "reused_runs": copied})
    assert f"{len(copied)} finished pre-training(s)" in line and all(f"`{i}` from" in line for i in copied)

    # a dry run trains 2 steps: no finished run of a real grid has its settings
    dry_logs: list[str] = []
    assert (
        reuse_runs(
            wiki, Context(tmp_path / "dry", str(real_data_dir), dry_run=True), sources, dry_logs.append
        )
        == {}
    )
    assert all("max_steps" in line for line in dry_logs)

    # a source that is not there: one clear error, before anything is created
    with pytest.raises(ConfigError, match=r"reuse-from: .*nope: no such directory"):
        reproduce(
            "smoke",
            str(tmp_path / "x"),
            None,
            None,
            1,
            str(real_data_dir),
            reuse_from=[str(tmp_path / "nope")],
            **QUIET,
        )
    assert not (tmp_path / "x").exists()


def test_a_finished_run_is_reused_under_another_id_when_only_grid_keys_differ(
    smoke: Path, real_data_dir: Path, tmp_path: Path
) -> None:
    """`--reuse-from` finds a finished run by its settings when the job's id differs only in what steers
    the grid (a member's `gate_reseeds`): the smoke grid's members serve the same preset with re-seeds."""
    from tinylm.paper.context import Context
    from tinylm.paper.reuse import reuse_runs

    plain = load_preset("smoke")
    old = {
        j.role["member"]: j
        for j in build_grid(plain, plain.tasks, 1)
        if j.kind == "pretrain" and "member" in j.role
    }
    p = load_preset(str(smoke_variant(tmp_path, member_reseeds=1)))
    jobs = build_grid(p, p.tasks, p.seeds)
    new = {j.role["member"]: j for j in jobs if j.kind == "pretrain" and "member" in j.role}
    assert new and all(new[i].id != old[i].id for i in new)
    ctx = Context(tmp_path / "grid", str(real_data_dir))
    copied = reuse_runs(jobs, ctx, [smoke / "runs"], lambda *_: None)
    for i, j in new.items():
        assert copied[j.id] == str((smoke / "runs" / old[i].id).resolve())
        assert (ctx.runs_dir / j.id / "model.safetensors").read_bytes() == (
            smoke / "runs" / old[i].id / "model.safetensors"
        ).read_bytes()


def test_the_cpu_grid_pretrains_with_tiny_pretrain_and_quick_with_v2() -> None:
    """README and the presets' descriptions: `cpu`'s deep models train with today's `tiny-pretrain` recipe
    (40 % → 15 % masking, 9M tokens; its controlled corpora on 12M: about the same optimizer steps on
    full-length articles) and its committee members with the same schedule on 12M; `quick` keeps
    `tiny-pretrain-v2` (its committed report ran on it)."""
    from tinylm.config import named_config, read_yaml

    recipe = read_yaml(named_config("tiny-pretrain"))
    v2 = read_yaml(named_config("tiny-pretrain-v2"))

    def pretrainings(name: str) -> list[dict]:
        p = load_preset(name)
        return [j.settings | j.role for j in build_grid(p, p.tasks, p.seeds) if j.kind == "pretrain"]

    cpu, quick = pretrainings("cpu"), pretrainings("quick")
    keys = ("max_tokens", "batch_size", "lr", "warmup_steps", "weight_decay", "dropout", "mask_prob_start")

    def same(s: dict, ref: dict) -> bool:
        return {k: s.get(k) for k in keys} == {k: ref.get(k) for k in keys}

    nested = [s for s in cpu if s.get("deep") and "selection" not in s]
    assert len(nested) == 7 and all(same(s, recipe) for s in nested)
    controlled = [s for s in cpu if "selection" in s]
    assert len(controlled) == 6
    assert {(s["max_tokens"], s["mask_prob_start"]) for s in controlled} == {(12_000_000, 0.4)}
    members = [s for s in cpu if "member" in s]
    assert len(members) == 3 and {(s["max_tokens"], s["mask_prob_start"]) for s in members} == {
        (12_000_000, 0.4)
    }
    deep_quick = [s for s in quick if s.get("deep")]
    assert len(deep_quick) == 2 and all(same(s, v2) for s in deep_quick)


def test_the_report_labels_every_recipe_setting_that_is_not_the_papers() -> None:
    """Issue 21: a recipe change that deviates from the paper's setting is a labelled deviation."""
    import dataclasses

    from tinylm.paper.render import deviations

    def recipe_lines(p) -> list[str]:
        lines = deviations(p, ["agnews"], 1)
        return [
            d for d in lines if d.startswith(("Pre-training recipe", "Fine-tuning:")) or "also pre-train" in d
        ]

    cpu = recipe_lines(load_preset("cpu"))
    assert cpu[0].startswith("Pre-training recipe: masking 40% → 15% over the run (mask_prob_start 0.4)")
    assert "dropout 0.0 (the paper: 0.1)" in cpu[0] and "grad_clip 1.0 (the paper: none)" in cpu[0]
    assert cpu[1] == "Fine-tuning: grad_clip 1.0 (the paper: none)."
    quick = recipe_lines(load_preset("quick"))  # tiny-pretrain-v2: 15 % throughout, no masking line
    assert "masking" not in quick[0] and "dropout 0.0" in quick[0]
    assert recipe_lines(load_preset("paper")) == []  # the paper's own recipe deviates in nothing
    members = dataclasses.replace(
        load_preset("quick"), member_pretrain={"mask_prob_start": 0.3, "batch_size": 16}
    )
    extra = [d for d in recipe_lines(members) if d.startswith("The committee members")]
    assert extra == [
        "The committee members also pre-train with: batch_size 16 (the paper: 32); masking 30% → 15% over "
        "the run (mask_prob_start 0.3)."
    ]
    sampled = dataclasses.replace(
        load_preset("quick"), pretrain=load_preset("quick").pretrain | {"sampled_softmax": 2048}
    )
    assert (
        "sampled softmax over 2,048 candidates per step for the first 100% of the steps (the paper: the full "
        "vocabulary)" in recipe_lines(sampled)[0]
    )


def test_the_e0_figure_says_what_its_points_are(tmp_path: Path) -> None:
    """E0's points are means over the fine-tuning seeds (± std as error bars), not seed 0's run."""
    from tinylm.paper.figures import e0_title, fig_e0

    rows = [
        {
            "tokens": t,
            "task": "agnews",
            "pooling": "cls",
            "seeds": 2,
            "gap_pp": g,
            "gap_pp_per_seed": [g - 1, g + 1],
        }
        | {"mlm_loss": 7.0 - t / 1e6, "unigram_loss": 7.0}
        for t, g in ((0, -3.0), (1_000_000, 2.0))
    ]
    assert e0_title(rows).endswith("(one pre-training run; mean ± std over 2 fine-tuning seeds)")
    one = [r | {"seeds": 1, "gap_pp_per_seed": [r["gap_pp"]]} for r in rows]
    assert e0_title(one).endswith("(one pre-training run; fine-tuning seed 0)")
    fig_e0(rows, tmp_path / "e0.png")
    assert (tmp_path / "e0.png").stat().st_size > 1000
