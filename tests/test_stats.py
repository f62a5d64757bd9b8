"""Statistics behind the report's verdicts."""

from __future__ import annotations

import pytest

from tinylm.paper.analyse import verdict_from_test
from tinylm.paper.stats import betainc, paired_test, pearson, t_two_sided_p


def test_student_t_against_tables() -> None:
    assert t_two_sided_p(12.706, 1) == pytest.approx(0.05, abs=1e-4)
    assert t_two_sided_p(2.262, 9) == pytest.approx(0.05, abs=1e-4)
    assert t_two_sided_p(2.0, 10) == pytest.approx(0.0734, abs=1e-4)
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-4)


def test_paired_test_and_verdicts() -> None:
    up = paired_test([0.01, 0.02, 0.015, 0.03])
    assert up["mean"] == pytest.approx(0.01875) and up["p_greater"] < 0.05
    assert verdict_from_test(up, all_positive=True) == "holds"
    assert verdict_from_test(up, all_positive=False) == "inconclusive"
    down = paired_test([-0.01, -0.02, -0.015, -0.03])
    assert verdict_from_test(down, all_positive=False) == "does not hold"
    noisy = paired_test([0.05, -0.04, 0.01])
    assert verdict_from_test(noisy, all_positive=True) == "inconclusive"
    assert (
        paired_test([0.1])["p_greater"] is None
        and verdict_from_test(paired_test([0.1]), True) == "inconclusive"
    )
    same = paired_test([0.02, 0.02])
    assert same["p_greater"] == 0.0 and verdict_from_test(same, True) == "holds"
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0) and pearson([1, 2], [1, 2]) is None
