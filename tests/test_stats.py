"""Statistics behind the report's verdicts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tinylm.paper.analyse import Results, apply_gate, decision, gate_models, verdict_from_test
from tinylm.paper.jobs import Job
from tinylm.paper.presets import Preset, load_preset
from tinylm.paper.stats import (
    betainc,
    fixed_effects_test,
    mcnemar_exact,
    paired_bootstrap_ci,
    paired_test,
    pearson,
    t_two_sided_p,
)


def test_student_t_against_tables() -> None:
    assert t_two_sided_p(12.706, 1) == pytest.approx(0.05, abs=1e-4)
    assert t_two_sided_p(2.262, 9) == pytest.approx(0.05, abs=1e-4)
    assert t_two_sided_p(2.0, 10) == pytest.approx(0.0734, abs=1e-4)
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-4)


def test_paired_test_and_symmetric_verdicts() -> None:
    up = paired_test([0.01, 0.02, 0.015, 0.03])
    assert up["mean"] == pytest.approx(0.01875) and up["p_greater"] < 0.05
    assert verdict_from_test(up, [0.01, 0.02]) == "holds"
    assert verdict_from_test(up, [0.03, -0.01]) == "inconclusive"  # one task goes the other way
    down = paired_test([-0.01, -0.02, -0.015, -0.03])
    assert down["p_less"] == pytest.approx(up["p_greater"])  # mirror image: the same strength of evidence
    assert verdict_from_test(down, [-0.01, -0.02]) == "does not hold"
    assert verdict_from_test(down, [-0.03, 0.01]) == "inconclusive"  # the rule is symmetric
    noisy = paired_test([0.05, -0.04, 0.01])
    assert verdict_from_test(noisy, [0.05]) == "inconclusive"
    assert (
        paired_test([0.1])["p_greater"] is None
        and verdict_from_test(paired_test([0.1]), [0.1]) == "inconclusive"
    )
    same = paired_test([0.02, 0.02])
    assert same["p_greater"] == 0.0 and verdict_from_test(same, [0.02]) == "holds"
    d = decision(down, [-0.02], "paired t-test")
    assert (
        d["verdict"] == "does not hold"
        and d["p"] == down["p_less"]
        and d["effect_pp"] == pytest.approx(-1.875)
    )
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0) and pearson([1, 2], [1, 2]) is None


def test_mcnemar_and_paired_bootstrap_known_answers() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)  # all 10 discordant items favour B
    assert mcnemar_exact(2, 8) == pytest.approx(0.109375)  # 2 · P(X <= 2), X ~ Bin(10, 1/2) = 2 · 56/1024
    a = [True] * 90 + [False] * 10
    lo, hi = paired_bootstrap_ci(a, a)
    assert lo == hi == 0.0
    b = [True] * 60 + [False] * 40  # A is right on 30 items more
    lo, hi = paired_bootstrap_ci(a, b)
    assert 0.15 < lo < 0.3 < hi < 0.45


def gate_inputs(mlm: float, unigram: float | None) -> tuple[Results, Preset]:
    jobs = [
        Job("pretrain", {}, [], {"deep": True, "size": 10}, id="deep"),
        Job("pretrain", {}, [], {"member": 0}, id="m0"),
        Job("pretrain", {}, [], {"deep": True, "size": 10, "selection": "high"}, id="hi"),
    ]
    r = Results.__new__(Results)
    r.out, r.jobs = Path("no-such-grid"), jobs  # no run set aside below the gate
    ev = {"mlm_loss": mlm, "unigram_loss": unigram}
    r.by_id = {
        "deep": {"final_eval": ev, "tokens": 100},
        "m0": {"final_eval": {"mlm_loss": 5.0, "unigram_loss": 7.2}, "tokens": 100},
        "hi": {"final_eval": {"mlm_loss": 5.0, "unigram_loss": 7.2}, "tokens": 100},
    }
    return r, load_preset("smoke")


def test_gate_decides_what_is_tested() -> None:
    r, p = gate_inputs(mlm=6.9, unigram=7.25)  # 0.35 nats below the unigram model: still at the unigram stage
    p = replace(p, main_corpus=10)
    models = gate_models(r, 1.5)
    assert [m["passed"] for m in models] == [False, True, True]
    decisions = {c: {"verdict": "holds", "test": "t"} for c in ("C1", "C2", "C3", "C4")}
    apply_gate(decisions, models, p)
    assert (
        decisions["C1"]["verdict"] == decisions["C2"]["verdict"] == decisions["C4"]["verdict"] == "not tested"
    )
    assert decisions["C1"]["gate_failed"] == ["deep"] and decisions["C3"]["verdict"] == "holds"
    r, p = gate_inputs(mlm=5.2, unigram=7.25)  # 2.05 nats below: past the gate
    decisions = {c: {"verdict": "does not hold", "test": "t"} for c in ("C1", "C2", "C3", "C4")}
    apply_gate(decisions, gate_models(r, 1.5), replace(p, main_corpus=10))
    assert all(d["verdict"] == "does not hold" for d in decisions.values())
    r, _ = gate_inputs(mlm=5.2, unigram=None)  # a run without a baseline cannot pass
    assert gate_models(r, 1.5)[0]["passed"] is False


def test_a_run_serving_two_roles_is_gated_and_named_under_both() -> None:
    """One run that is E5's generic model and committee member 0: below the gate it leaves C4 (the member's
    claim) untested although its first role is E5's, and the gate table names both roles."""
    from tinylm.paper.render import _gate

    r, p = gate_inputs(mlm=5.0, unigram=7.2)
    e5, member = {"e5": "generic", "fraction": 1.0, "pseed": 0}, {"member": 0}
    r.jobs[1] = Job("pretrain", {}, [], e5, id="m0", also=[member])
    r.by_id["m0"] = {"final_eval": {"mlm_loss": 6.9, "unigram_loss": 7.2}, "tokens": 100}
    models = gate_models(r, 1.5)
    assert [m["passed"] for m in models] == [True, False, True] and models[1]["also"] == [member]
    decisions = {c: {"verdict": "holds", "test": "t"} for c in ("C1", "C2", "C3", "C4")}
    apply_gate(decisions, models, replace(p, main_corpus=10))
    assert decisions["C4"] == {"verdict": "not tested", "test": "t", "gate_failed": ["m0"]}
    assert all(decisions[c]["verdict"] == "holds" for c in ("C1", "C2", "C3"))
    rows = [line for line in _gate({"gate": {"models": models}}) if line.startswith("| m0 |")]
    assert rows == [f"| m0 | {e5} = {member} | 100 | 6.900 | 7.200 | 0.30 | **no** |"]


def test_fixed_effects_test_replicates_within_tasks() -> None:
    import scipy.stats as scipy_stats

    r = fixed_effects_test({"agnews": [0.02, 0.04], "dbpedia": [0.01, 0.03]})
    # task means 0.03 and 0.02; within-task variance pooled over df = 2: s² = 4e-4 / 2
    se = (2e-4 * (1 / 2 + 1 / 2)) ** 0.5 / 2
    assert r["mean"] == pytest.approx(0.025) and r["df"] == 2 and r["t"] == pytest.approx(0.025 / se)
    assert r["p_greater"] == pytest.approx(scipy_stats.t.sf(0.025 / se, 2), rel=1e-6)
    assert verdict_from_test(r, [0.03, 0.02]) == ("holds" if r["p_greater"] < 0.05 else "inconclusive")
    # big differences between tasks are not replication: they leave the error variance untouched
    wide = fixed_effects_test({"agnews": [0.30, 0.32], "dbpedia": [-0.25, -0.23]})
    assert wide["mean"] == pytest.approx(0.035) and wide["std"] == pytest.approx(r["std"])
    down = fixed_effects_test({"a": [-0.02, -0.04], "b": [-0.01, -0.03]})
    assert down["p_less"] == pytest.approx(r["p_greater"])
    mirror = {"holds": "does not hold", "inconclusive": "inconclusive"}
    assert verdict_from_test(down, [-0.03, -0.02]) == mirror[verdict_from_test(r, [0.03, 0.02])]
    one = fixed_effects_test({"a": [0.05], "b": [0.04]})  # one pre-training run per task: no replication
    assert one["df"] == 0 and one["p_greater"] is None and verdict_from_test(one, [0.05]) == "inconclusive"


def test_gate_covers_every_head_and_not_run_claims_stay_not_tested() -> None:
    r, p = gate_inputs(mlm=6.9, unigram=7.25)
    p = replace(p, main_corpus=10)
    decisions = {
        "C1": {"verdict": "holds", "test": "t"},
        "C1-mean": {"verdict": "does not hold", "test": "t"},
        "C2": {"verdict": "not tested", "test": "one corpus size", "not_run": "one corpus size"},
    }
    apply_gate(decisions, gate_models(r, 1.5), p)
    assert decisions["C1"]["verdict"] == decisions["C1-mean"]["verdict"] == "not tested"
    assert "gate_failed" not in decisions["C2"] and decisions["C2"]["not_run"] == "one corpus size"
