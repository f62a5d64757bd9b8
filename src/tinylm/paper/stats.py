"""Small statistics for the report: paired t-test (Student t via the regularized incomplete beta)."""

from __future__ import annotations

import math
from typing import Any


def _betacf(a: float, b: float, x: float, iters: int = 300, eps: float = 3e-16) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, iters + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_bt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    bt = math.exp(ln_bt)
    if x < (a + 1.0) / (a + b + 2.0):
        return bt * _betacf(a, b, x) / a
    return 1.0 - bt * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| ≥ |t|) for Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def paired_test(diffs: list[float]) -> dict[str, Any]:
    """Paired t-test of mean(diffs) ≠ 0; one-sided p for > 0 too. n = 1 gives no p-value."""
    n = len(diffs)
    mean = sum(diffs) / n if n else float("nan")
    out: dict[str, Any] = {"n": n, "mean": mean}
    if n < 2:
        return out | {"std": None, "t": None, "p_two_sided": None, "p_greater": None}
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0.0:
        t = math.inf if mean > 0 else (-math.inf if mean < 0 else 0.0)
    else:
        t = mean / (sd / math.sqrt(n))
    p2 = 1.0 if t == 0.0 else t_two_sided_p(t, n - 1)
    p_greater = p2 / 2 if t > 0 else 1 - p2 / 2
    return out | {"std": sd, "t": t, "p_two_sided": p2, "p_greater": p_greater, "p_less": 1 - p_greater}


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p: items only model A gets right vs items only B gets right (binomial, 1/2)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2 * tail)


def paired_bootstrap_ci(
    correct_a: list[bool], correct_b: list[bool], resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile confidence interval of acc(A) − acc(B) over the same items, resampling items."""
    import numpy as np

    d = np.asarray(correct_a, dtype=np.float64) - np.asarray(correct_b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd


def pearson(x: list[float], y: list[float]) -> float | None:
    n = len(x)
    if n < 3:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def fixed_effects_test(units: dict[str, list[float]]) -> dict[str, Any]:
    """t-test of the mean over groups (e.g. tasks, fixed effects) of the group means of replicate values:
    the error variance is pooled from the replicates' spread within each group (df = Σ (n_g − 1)), so that
    differences between groups are not mistaken for replication. No p-value without replication."""
    groups = [v for v in units.values() if v]
    means = [sum(v) / len(v) for v in groups]
    mean = sum(means) / len(means) if means else float("nan")
    df = sum(len(v) - 1 for v in groups)
    out: dict[str, Any] = {"n": sum(len(v) for v in groups), "groups": len(groups), "mean": mean, "df": df}
    if df < 1:
        return out | {"std": None, "t": None, "p_two_sided": None, "p_greater": None, "p_less": None}
    ss = sum((x - m) ** 2 for v, m in zip(groups, means, strict=True) for x in v)
    var = ss / df
    se = math.sqrt(var * sum(1 / len(v) for v in groups)) / len(groups)
    t = mean / se if se > 0 else (math.inf if mean > 0 else (-math.inf if mean < 0 else 0.0))
    p2 = 1.0 if t == 0.0 else t_two_sided_p(t, df)
    p_greater = p2 / 2 if t > 0 else 1 - p2 / 2
    return out | {
        "std": math.sqrt(var),
        "t": t,
        "p_two_sided": p2,
        "p_greater": p_greater,
        "p_less": 1 - p_greater,
    }
