"""The statistics of a paired comparison once its bootstrap replicates exist: the run (seed) level
of an arm, the interval with its small-sample widening, the p-value, the equivalence test (TOST)
and the minimum detectable difference.

:func:`consistbench.benchmark.intervals.paired_runs_bootstrap` draws the replicates (the group
bootstrap, shared by every run of both arms) and hands them here; docs/METRICS.md explains the
method and what it can tell with 3 seeds. Pure numpy: no metric, no file.

The run level of an arm of ``S > 1`` runs (variance components, then Welch-Satterthwaite):

1. ``s^2``, the variance of the arm's run values, is the between-run variance plus each run's own
   group-sampling noise, which the group bootstrap already counts; that noise is estimated from
   the replicates (the spread, over resamples, of each run's deviation from the arm's mean), and
   ``between = max(0, s^2 - noise)``.
2. Each replicate draws ``S`` runs with replacement; the deviation of their mean from the arm's
   mean is scaled so that its variance is ``between / S``.
3. ``between`` rests on ``S - 1`` degrees of freedom: the replicates' spread around the point is
   widened by ``t_df / z`` at the level used, ``df`` the Welch-Satterthwaite degrees of freedom of
   ``Var_groups + between_A / S_A + between_B / S_B`` (the group part counted as exact). With one
   run per arm there is no run level and nothing is widened: the plain paired bootstrap.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

POWER = 0.80  # of the minimum detectable difference
_Z = NormalDist()


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (the normal one for ``df`` infinite or None)."""
    if df is None or not math.isfinite(df):
        return _Z.inv_cdf(p)
    from scipy.stats import t  # only for arms of several runs

    return float(t.ppf(p, df))


def detectable_difference(stderr: float, confidence: float = 0.95, power: float = POWER,
                          df: float | None = None) -> float:
    """The smallest true difference a two-sided test at ``confidence`` detects with probability
    ``power``, given the standard error of the difference: ``(q_(1+c)/2 + q_power) * stderr`` with
    normal quantiles (2.80 x SE at 95 % and 80 % power), t quantiles with ``df`` degrees of freedom.
    A non-significant difference reads "inconclusive below it"."""
    return float((t_quantile(0.5 + confidence / 2.0, df) + t_quantile(power, df)) * stderr)


def margin_for(name: str, margins: dict[str, float] | None) -> float | None:
    """The equivalence margin of metric ``name``: its own, else its overall metric's (``em`` for
    ``em_how_to``), else the one for every metric (key ``*``); None: no equivalence test."""
    if not margins:
        return None
    for key in (name, name.split("_", 1)[0], "*"):
        if key in margins:
            return float(margins[key])
    return None


def bad_margin(margins: dict[str, float] | None, names: list[str]) -> str | None:
    """The first ``key=value`` of ``margins`` that names no metric of ``names`` (nor ``*``) or is not a
    positive number; None when all are fine."""
    for key, margin in (margins or {}).items():
        known = key == "*" or any(margin_for(n, {key: 1.0}) is not None for n in names)
        if not known or not 0 < float(margin) < float("inf"):
            return f"{key}={margin}"
    return None


def arm_replicates(vals: np.ndarray, points: list[float], draws: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, float]:
    """One arm, one metric: (its run mean per replicate with the run level, the same without it, the
    between-run variance beyond the rows' own noise: NaN for one run). ``vals``: (runs, replicates);
    ``points``: each run's value on the data as scored; ``draws``: (replicates, runs) run indices."""
    mean = vals.mean(axis=0)
    if draws is None:
        return mean, mean, float("nan")
    s = vals.shape[0]
    with np.errstate(all="ignore"):
        spread = float(np.var(points, ddof=1))
        noise = float(np.nansum(np.nanvar(vals - mean, axis=1, ddof=1))) / (s - 1)
        between = max(0.0, spread - noise) if math.isfinite(spread) else 0.0
        scale = math.sqrt(s / (s - 1) * between / spread) if spread > 0 else 0.0
    drawn = np.take_along_axis(vals, draws.T, axis=0).mean(axis=0)
    return mean + scale * (drawn - mean), mean, between


def welch_df(var_groups: float, arms: list[tuple[float, int]]) -> float | None:
    """Welch-Satterthwaite degrees of freedom of ``var_groups + sum between / S`` over the arms
    ``(between, S)`` with ``S > 1`` (the group part exact); None when no arm has a run level."""
    parts = [(b / s, s - 1) for b, s in arms if s > 1 and math.isfinite(b)]
    if not parts:
        return None
    den = sum(v * v / d for v, d in parts)
    return float("inf") if den <= 0 else (var_groups + sum(v for v, _ in parts)) ** 2 / den


def _percentiles(point: float, reps: np.ndarray, level: float, factor: float) -> tuple[float, float]:
    lo, hi = (float(x) for x in np.percentile(reps, [50 * (1 - level), 50 * (1 + level)]))
    return (lo, hi) if factor == 1.0 else (point - factor * (point - lo), point + factor * (hi - point))


def summarise(point: float, diffs: np.ndarray, fixed: np.ndarray, confidence: float, margin: float | None,
              df: float | None) -> dict:
    """Everything reported for one metric's difference from its replicates (with and without the
    run level): interval, bootstrap standard errors, two-sided p-value, significance, the minimum
    detectable difference and, with a margin, the TOST. Replicates are widened around ``point`` by
    ``t_df / z`` at each level (1 when ``df`` is None)."""
    valid, valid_fixed = diffs[np.isfinite(diffs)], fixed[np.isfinite(fixed)]
    nan = float("nan")
    out = {"difference": point, "low": nan, "high": nan, "stderr": nan, "stderr_groups": nan, "p_value": nan,
           "significant": False, "valid": int(valid.size), "mdd": nan, "df": df}
    if valid.size < 2 or not math.isfinite(point):
        return out | ({"margin": margin, "tost_low": nan, "tost_high": nan, "tost_p": nan, "equivalent": False}
                      if margin is not None else {})

    def factor(level):
        return t_quantile(0.5 + level / 2, df) / _Z.inv_cdf(0.5 + level / 2) if df is not None else 1.0

    f = factor(confidence)
    low, high = _percentiles(point, valid, confidence, f)
    wide = point + f * (valid - point)
    out |= {"low": low, "high": high, "stderr": float(valid.std(ddof=1)),
            "stderr_groups": float(valid_fixed.std(ddof=1)) if valid_fixed.size > 1 else nan,
            "p_value": min(1.0, 2.0 * min(float(np.mean(wide <= 0)), float(np.mean(wide >= 0)))),
            "significant": bool(low > 0 or high < 0)}
    out["mdd"] = detectable_difference(out["stderr"], confidence, df=df)
    if margin is not None:
        level = 2.0 * confidence - 1.0
        g = factor(level)
        t_low, t_high = _percentiles(point, valid, level, g)
        wide = point + g * (valid - point)
        out |= {"margin": margin, "tost_low": t_low, "tost_high": t_high,
                "tost_p": max(float(np.mean(wide <= -margin)), float(np.mean(wide >= margin))),
                "equivalent": bool(-margin < t_low and t_high < margin)}
    return out
