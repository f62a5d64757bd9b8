"""The paper's future work in `tinylm reproduce`: E5's selections and cross-task cells, E6's committee
points and Pareto front, the distillation jobs, and the presets' new sections."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from tinylm.errors import ConfigError
from tinylm.paper.analyse import claim_uses
from tinylm.paper.analyse_future import e5_answer, pareto_front, saturation
from tinylm.paper.future_steps import ensemble_points
from tinylm.paper.grid import build_grid
from tinylm.paper.jobs import by_role
from tinylm.paper.presets import load_preset


def variant(tmp_path: Path, **changes: object) -> str:
    raw = yaml.safe_load(Path(load_preset("smoke").path).read_text()) | changes
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def one_hot_logits(predictions: list[list[int]], labels: int = 3) -> np.ndarray:
    """(members, N, labels) logits whose argmax (and softmax peak) is each prediction."""
    return np.stack([np.eye(labels)[p] * 5.0 for p in predictions])


def test_ensemble_points_on_known_predictions() -> None:
    labels = np.array([0, 1, 2, 0])
    # pool order alternates architectures: 0 → arch0, 1 → arch1, 2 → arch0, 3 → arch1; last row: deep model
    logits = one_hot_logits(
        [
            [0, 1, 2, 1],  # member 0: 3/4 right
            [0, 0, 2, 0],  # member 1: 3/4 right
            [0, 1, 1, 0],  # member 2: 3/4 right
            [1, 1, 2, 0],  # member 3: 3/4 right
            [0, 1, 0, 0],  # deep: 3/4 right
        ]
    )
    points = ensemble_points(logits, labels, architectures=2, orderings=5, seed=0)
    got = {(p["committee"], p["k"]): p for p in points}
    assert sorted(got) == sorted(
        [("arch0", 1), ("arch0", 2), ("arch1", 1), ("arch1", 2)] + [("mixed", k) for k in range(1, 5)]
    )
    assert got[("arch0", 2)]["members"] == [0, 2] and got[("arch1", 2)]["members"] == [1, 3]
    assert got[("mixed", 4)]["members"] == [0, 1, 2, 3]
    # members 0 and 2 (one-hot, equal confidence): items 0 and 1 agree (right); item 2: 2 vs 1, a tie
    # broken towards the lower label (1, wrong); item 3: 1 vs 0 → 0 (right)
    assert got[("arch0", 2)]["accuracy"] == pytest.approx(3 / 4)
    # all four: item 0: 0,0,0,1 → 0 ✓; item 1: 1,0,1,1 → 1 ✓; item 2: 2,2,1,2 → 2 ✓; item 3: 1,0,0,0 → 0 ✓
    assert got[("mixed", 4)]["accuracy"] == 1.0
    assert got[("mixed", 1)]["accuracy"] == pytest.approx(3 / 4)
    # paired with the deep model (items 0, 1, 3 right): the 4-member committee alone gets item 2
    assert got[("mixed", 4)]["paired_counts"] == {
        "only_committee": 1,
        "only_reference": 0,
        "both": 3,
        "neither": 0,
    }
    # every ordering of all members is the same committee
    assert got[("mixed", 4)]["random_order_std"] == 0.0


def test_pareto_front_keeps_what_nothing_faster_beats() -> None:
    points = [
        {"committee": "arch0", "k": 1, "accuracy": 0.70},
        {"committee": "arch0", "k": 2, "accuracy": 0.74},
        {"committee": "arch1", "k": 1, "accuracy": 0.69},  # slower than arch0:1 and worse: dominated
        {"committee": "mixed", "k": 2, "accuracy": 0.78},
        {"committee": "mixed", "k": 4, "accuracy": 0.77},  # slower and worse than mixed:2
    ]
    ms = {"arch0:1": 1.0, "arch0:2": 2.0, "arch1:1": 1.5, "mixed:2": 2.5, "mixed:4": 5.0}
    front = pareto_front(points, {k: {"1": v} for k, v in ms.items()}, "1")
    assert [(f["committee"], f["k"]) for f in front] == [("arch0", 1), ("arch0", 2), ("mixed", 2)]
    curve = [
        {"committee": "mixed", "k": k, "random_order_mean": a}
        for k, a in [(1, 0.70), (2, 0.75), (3, 0.792), (4, 0.80)]
    ]
    assert saturation(curve, "mixed") == 3  # 0.792 is within 1 pp of the best, 0.75 is not
    assert saturation(curve, "arch9") is None


def test_e5_answer_names_the_smallest_winning_budget() -> None:
    def cmp(f: float, diff: float) -> dict[str, object]:
        return {"a": ("agnews", f), "b": ("generic", 1.0), "diff_pp": diff, "p": 0.03, "n": 4}

    e5 = {
        "tasks": {
            "agnews": {"own_vs_generic_full": [cmp(1.0, 2.0), cmp(0.25, 0.5)]},
            "dbpedia": {"own_vs_generic_full": [cmp(1.0, -1.0), cmp(0.25, -3.0)]},
        }
    }
    answer = e5_answer(e5)
    assert "on agnews, yes at 0.25× the tokens (+0.5 pp" in answer
    assert "on dbpedia, no (best -1.0 pp at 1× the tokens)" in answer


def test_future_sections_are_validated_all_at_once(tmp_path: Path) -> None:
    raw = yaml.safe_load(Path(load_preset("smoke").path).read_text())
    bad = variant(
        tmp_path,
        e5=raw["e5"] | {"tasks": ["agnews", "imdb"], "fractions": [1.0, 1.5], "metric": "bm25", "pool": 10},
        e6={"tasks": ["agnews"], "per_arch": 0},
        distill={"tasks": ["agnews", "fewrel"], "temperature": 0, "alpha": 2, "unlabelled": True},
    )
    with pytest.raises(ConfigError) as e:
        load_preset(bad)
    text = str(e.value)
    for expected in (
        "e5.tasks: 'imdb' is not one of the preset's tasks",
        "e5.fractions: 1.5 is not in (0, 1]",
        "e5.metric: expected one of coverage, weighted, ced, got 'bm25'",
        "e5.pool: must hold e5.articles + eval_articles documents",
        "e6.per_arch: must be positive, got 0",
        "distill.temperature: must be positive, got 0",
        "distill.alpha: must be in [0, 1], got 2",
        "distill.unlabelled: the text is E5's selected corpus; e5 selects none for ['fewrel']",
    ):
        assert expected in text
    with pytest.raises(ConfigError, match="e6: unknown key|e6.size: unknown key"):
        load_preset(variant(tmp_path, e6={"tasks": ["agnews"], "per_arch": 2, "size": 3}))
    raw_pretrain = {k: v for k, v in raw["pretrain"].items() if k != "max_tokens"} | {"epochs": 2}
    with pytest.raises(ConfigError) as e:
        load_preset(variant(tmp_path, c2_epochs=2, pretrain=raw_pretrain))
    assert "c2_epochs_of_main: set together with c2_epochs" in str(e.value)
    assert "c2_epochs_of_main: needs pretrain.max_tokens" in str(e.value)


def test_future_grid_wires_corpora_teachers_and_the_member_pool() -> None:
    p = load_preset("smoke")
    jobs = build_grid(p, p.tasks, p.seeds)
    by_id = {j.id: j for j in jobs}
    kinds = Counter(j.kind for j in jobs)
    assert kinds["select"] == 2 and kinds["ensemble"] == 1 and kinds["teacher"] == 1 and kinds["distill"] == 1
    # E5: every selected-corpus pre-training reads its select job's corpus, at each budget fraction
    for task in ("agnews", "dbpedia"):
        sel = by_role(jobs, "select", e5_select=task)[0]
        pres = by_role(jobs, "pretrain", e5=task)
        assert sorted(j.settings["max_tokens"] for j in pres) == [4000, 16000]
        assert all(j.deps == [sel.id] and j.settings["corpus"] == f"file:{sel.id}/corpus" for j in pres)
        assert all(j.settings["num_articles"] == p.e5.articles for j in pres)  # type: ignore[union-attr]
    generic = by_role(jobs, "pretrain", e5="generic")
    assert all("corpus" not in j.settings and j.settings["num_articles"] == p.main_corpus for j in generic)
    # the cross-task cells: the corpus selected for dbpedia, fine-tuned on agnews
    assert by_role(jobs, "finetune", task="agnews", init="e5", corpus="dbpedia")
    assert len(by_role(jobs, "finetune", init="scratch-e5")) == 2
    # E6's pool: 2 architectures × 2 members; E4 keeps its 2; the C4 gate looks at E4's members only
    members = by_role(jobs, "pretrain", member=0) + [
        j for j in jobs if j.kind == "pretrain" and "member" in j.role
    ]
    assert sorted({j.role["member"] for j in members}) == [0, 1, 2, 3]
    assert claim_uses("C4", {"member": 1}, p) and not claim_uses("C4", {"member": 2}, p)
    assert not any(
        claim_uses(c, {"e5": "agnews", "fraction": 1.0, "pseed": 0}, p) for c in ("C1", "C2", "C3", "C4")
    )
    # distillation: the student starts from member 0's pre-training and learns from the teacher's committee
    student, with_text = (
        by_role(jobs, "finetune", init="distill", unlabelled=None),
        by_role(jobs, "finetune", unlabelled=True),
    )
    teacher = by_role(jobs, "teacher", task="agnews")[0]
    member0 = by_role(jobs, "pretrain", member=0)[0].id
    assert [j.deps for j in student] == [[member0, teacher.id]]
    assert student[0].settings["teacher"] == f"{teacher.id}/committee"
    # the second student also learns the corpus E5 selected for agnews, as unlabelled text
    select = by_role(jobs, "select", e5_select="agnews")[0]
    assert [j.deps for j in with_text] == [[member0, teacher.id, select.id]]
    assert with_text[0].settings["distill_unlabelled"] == f"file:{select.id}/corpus"
    assert len(teacher.deps) == 4 and all(by_id[d].role["init"] == "member" for d in teacher.deps)
    ens = by_role(jobs, "ensemble", task="agnews")[0]
    assert ens.exclusive and ens.settings["group_sizes"] == [1] * 5


def test_future_preset_runs_what_the_issue_asks() -> None:
    """The shipped `future` preset: E5 with replicates at full and ¼ budget and the cross-task cells, E6 up
    to k = 8 over two architectures, the distillation on both tasks, C2 under both designs with 2
    pre-trainings per size; every training job valid."""
    from tinylm.paper.grid import validate_jobs

    p = load_preset("future")
    jobs = build_grid(p, p.tasks, p.seeds)
    validate_jobs(jobs)
    kinds = Counter(j.kind for j in jobs)
    assert kinds["select"] == 2 and kinds["ensemble"] == 2 and kinds["teacher"] == 2 and kinds["distill"] == 2
    e5 = by_role(jobs, "pretrain", e5="generic") + by_role(jobs, "pretrain", e5="agnews")
    e5 += by_role(jobs, "pretrain", e5="dbpedia")  # generic seed 0 is member 0: found by its E5 role
    assert len(e5) == 3 * 2 * 2 and {j.role["fraction"] for j in e5} == {1.0, 0.25}
    assert {j.settings["max_tokens"] for j in e5} == {p.e5.tokens, p.e5.tokens // 4}  # type: ignore[union-attr]
    assert p.member_pool == 8 and max(pt.role["member"] for pt in jobs if "member" in pt.role) == 7
    epochs = [j for j in jobs if j.kind == "pretrain" and j.role.get("deep_epochs")]
    sizes = [j for j in jobs if j.kind == "pretrain" and j.role.get("deep") and "selection" not in j.role]
    # the paper's equal epochs at the main run's: 5K trains for a quarter of the main budget, and the 20K
    # arm is the main run itself (no second pre-training of the largest cost)
    assert sorted(j.role["size"] for j in epochs) == [5000, 5000]
    assert sorted(j.role["size"] for j in sizes) == [5000, 5000, 20000, 20000]
    assert all(j.settings["max_tokens"] == p.pretrain["max_tokens"] // 4 for j in epochs)
    assert all("epochs" not in j.settings for j in epochs)
    # the gate of C2-epochs holds the main size's arm (the main runs of C2's replicates) to adequacy, not the
    # smaller arms, which train for fewer tokens by design
    assert claim_uses("C2-epochs", {"deep": True, "size": 20000, "pseed": 1}, p)
    assert not claim_uses("C2-epochs", {"deep": True, "size": 20000, "pseed": 2}, p)
    assert not claim_uses("C2-epochs", epochs[0].role, p)
    assert claim_uses("C2-epochs", {"deep_epochs": True, "size": 40000, "pseed": 0}, p)  # a larger arm
    # fine-tuning at lr 1e-3 only (no sweep), as the preset's description says
    assert {j.settings["lr"] for j in jobs if j.kind == "finetune"} == {1e-3} and not p.finetune_lrs
    # the explicit design: every size pre-trained for c2_epochs epochs, the main size too
    explicit = dataclasses.replace(p, c2_epochs=3, c2_epochs_of_main=False)
    jobs3 = [j for j in build_grid(explicit, p.tasks, p.seeds) if j.role.get("deep_epochs")]
    assert sorted(j.role["size"] for j in jobs3 if j.kind == "pretrain") == [5000, 5000, 20000, 20000]
    pre3 = [j for j in jobs3 if j.kind == "pretrain"]
    assert all(j.settings["epochs"] == 3 and j.settings["max_tokens"] is None for j in pre3)


def test_pareto_figure_labels_latencies_within_one_decade(monkeypatch: pytest.MonkeyPatch) -> None:
    """Committee latencies of 1.3–8.5 ms lie between two decades: the log axis still gets numbered ticks."""
    from tinylm.paper import figures

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig))
    points = [{"committee": "arch0", "k": k, "accuracy": 0.7 + 0.02 * k} for k in (1, 2, 3, 4)]
    ms = {f"arch0:{k}": {"1": 1.3 * 1.8 ** (k - 1)} for k in (1, 2, 3, 4)} | {"deep": {"1": 3.1}}
    task = {"task": "agnews", "points": points, "reference": {"accuracy": 0.75}}
    figures.fig_e6_pareto(task, ms, "1", Path("unused.png"))
    ax = drawn[0].axes[0]
    drawn[0].canvas.draw()
    lo, hi = ax.get_xlim()
    shown = [t for t in ax.xaxis.get_major_ticks() if lo <= t.get_loc() <= hi and t.label1.get_text()]
    assert [float(t.label1.get_text()) for t in shown] == [2.0, 3.0, 5.0]


def test_a_run_asked_for_in_two_roles_is_one_job() -> None:
    """The `future` preset's E5 generic model of seed 0 has committee member 0's settings: one run serves
    both roles (it was trained twice), and the analysis finds it by either role, with that role's fields."""
    import json

    p = load_preset("future")
    jobs = build_grid(p, p.tasks, p.seeds)
    keys = [(j.kind, json.dumps(j.settings, sort_keys=True), tuple(j.deps)) for j in jobs]
    assert len(keys) == len(set(keys))  # no two jobs would train the same thing
    member0 = by_role(jobs, "pretrain", member=0)[0]
    generic0 = by_role(jobs, "pretrain", e5="generic", fraction=1.0, pseed=0)[0]
    assert generic0.id == member0.id and sum(j.id == member0.id for j in jobs) == 1
    assert member0.role == {"member": 0} and generic0.role == {"e5": "generic", "fraction": 1.0, "pseed": 0}
    assert generic0.also == [member0.role] and member0.also == [generic0.role]
    for task in p.tasks:
        (ft,) = by_role(jobs, "finetune", init="e5", corpus="generic", fraction=1.0, pseed=0, task=task)
        (own,) = by_role(jobs, "finetune", init="member", member=0, task=task)
        assert ft.id == own.id and ft.deps == [member0.id]
        assert ft.role["pseed"] == 0 and own.role["member"] == 0
    # the other seed's generic model is not a member's (member 1 has the other architecture): its own run
    generic1 = by_role(jobs, "pretrain", e5="generic", fraction=1.0, pseed=1)[0]
    assert generic1.id not in {j.id for j in jobs if "member" in j.role}


def test_e3_figure_plots_the_gap_against_the_frequency_weighted_overlap_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The E3 figure gains a panel for `weighted_overlap` beside the coverage metric, each with its r."""
    from tinylm.paper import figures

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig))
    rows = [
        {"task": t, "coverage@5": c, "weighted_overlap": w, "gap_mean": g}
        for t, c, w, g in [
            ("agnews", 0.86, 0.55, -0.005),
            ("agnews", 0.96, 0.56, -0.02),
            ("dbpedia", 0.91, 0.75, 0.04),
        ]
    ]
    corr = {"metrics": {"coverage@5": {"r": 0.33}, "weighted_overlap": {"r": 0.97}}}
    e3 = {"metric_for_plot": "coverage@5", "rows": rows, "metric_correlations": corr}
    figures.fig_e3(e3, ["agnews", "dbpedia"], Path("unused.png"))
    axes = drawn[0].axes
    assert [ax.get_title() for ax in axes] == [
        "coverage@5 (Pearson r = +0.33)",
        "weighted_overlap (Pearson r = +0.97)",
    ]
    # each panel: one line per task, the gap in pp at the metric's x
    xs, ys = axes[1].lines[0].get_data()
    assert list(xs) == [0.55, 0.56] and list(ys) == pytest.approx([-0.5, -2.0])
    # a correlation that could not be computed (under 3 points, or nothing varies) is None: no r in the title
    drawn.clear()
    e3["metric_correlations"] = {"metrics": {"coverage@5": None, "weighted_overlap": None}}
    figures.fig_e3(e3, ["agnews", "dbpedia"], Path("unused.png"))
    assert [ax.get_title() for ax in drawn[0].axes] == ["coverage@5", "weighted_overlap"]
    # a grid without the weighted metric (an older results.json) keeps the single panel
    drawn.clear()
    older = [{k: v for k, v in r.items() if k != "weighted_overlap"} for r in rows]
    figures.fig_e3({"metric_for_plot": "coverage@5", "rows": older}, ["agnews", "dbpedia"], Path("x.png"))
    assert len(drawn[0].axes) == 1
