"""The numbers of a submission, recomputed: rescoring, the reported-against-rescored check with
its tolerances, and the plausibility bounds.

:func:`rescore` computes every metric of the task from the logged responses with
:mod:`consistbench.benchmark.metrics` (against the shipped references, not the sample's, with the
task's settings); :func:`check_reported` refuses a reported value that differs from it by more
than :func:`tolerance`. Rescoring proves that the numbers follow from the responses, not that a
model produced them: :func:`plausibility` names the bounds a result crosses that no model of the
benchmark's kind plausibly reaches, which marks the entry "needs reproduction"
(:mod:`consistbench.leaderboard.reproduce`).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from consistbench.benchmark import metrics as M
from consistbench.leaderboard.limits import fail
from consistbench.leaderboard.tracks import TaskSpec

# Rescoring tolerance (absolute). rougeL, bleu, em and rs are exact computations in float64 whose
# only freedom is summation order (differences ~1e-15); bs runs a float32 neural encoder whose
# kernels differ between CPU/GPU builds and batch compositions (observed differences ~1e-7 per
# pair), so it gets 1e-4, still ten times finer than the site's displayed precision.
TOLERANCE = 1e-6
TOLERANCE_BS = 1e-4

# Results no model of the benchmark's kind plausibly reaches. Crossing one does not reject a
# submission (a much better model may exist); it marks the entry "needs reproduction" until a
# reproduction record shows that the model regenerates its responses. For scale: SmolLM2-135M
# scores ROUGE-L 0.21, EM 0.20; the paper's best 8B model ROUGE-L 0.54, EM 0.25.
PLAUSIBLE_MAX = {"rougeL": 0.9, "bleu": 0.9, "em": 0.9, "rs": 0.95}
PLAUSIBLE_REFERENCE_SHARE = 0.5  # share of responses equal to their reference (after stripping)
PLAUSIBLE_IDENTICAL_GROUPS = 0.9  # share of groups whose responses are all identical (after stripping)

MEMO_SIZE = 16
_memo: dict[str, tuple[dict[str, float], int]] = {}


def tolerance(metric: str) -> float:
    """The largest accepted difference between a reported and a rescored value of ``metric``."""
    return TOLERANCE_BS if metric == "bs" or metric.startswith("bs_") else TOLERANCE


def clear_memo() -> None:
    """Forget every memoised rescoring (for a caller that changed the metrics' own limits)."""
    _memo.clear()


def rescore(spec: TaskSpec, responses: dict[str, str]) -> tuple[dict[str, float], int]:
    """All metrics from the responses, with the shipped references and the task's settings.

    Memoised per process (the last :data:`MEMO_SIZE`) on a hash of (task, data version,
    threshold, responses): the metrics are deterministic, and ``build`` or a test suite may
    validate the same responses several times.
    """
    key = hashlib.sha256(json.dumps([spec.name, spec.data_sha256, spec.rs_threshold, sorted(responses.items())],
                                    ensure_ascii=False).encode("utf-8")).hexdigest()
    if key not in _memo:
        rows = M.scored_rows(spec.docs, responses)
        M.check_cost(rows, "samples")  # before any metric runs
        settings = M.ScoreSettings(rs_threshold=spec.rs_threshold)
        if len(_memo) >= MEMO_SIZE:
            _memo.pop(next(iter(_memo)))
        _memo[key] = (M.compute_all(rows, settings), len(M.pair_by_group(rows)))
    metrics, n_pairs = _memo[key]
    return dict(metrics), n_pairs


def _same(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol


def check_reported(path: Path, spec: TaskSpec, res: dict, rescored: dict[str, float]) -> tuple[dict, dict]:
    """Every metric of the task as the results JSON reports it, checked against the rescored value
    within :func:`tolerance`; ``(reported, |reported - rescored|)`` by metric."""
    reported: dict[str, float] = {}
    diffs: dict[str, float] = {}
    block = res["results"][spec.name]
    for metric in spec.metrics:
        value = block.get(f"{metric},none")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"{path}: metric {metric!r} is missing from the results (expected key '{metric},none')")
        ours = rescored.get(metric, float("nan"))
        if not _same(float(value), ours, tolerance(metric)):
            fail(f"{path}: metric {metric!r} is reported as {float(value):.6f} but rescoring the samples gives "
                 f"{ours:.6f} (difference {abs(float(value) - ours):.2e} > tolerance {tolerance(metric):g})")
        reported[metric] = float(value)
        diffs[metric] = 0.0 if math.isnan(ours) else abs(float(value) - ours)
    return reported, diffs


def plausibility(spec: TaskSpec, responses: dict[str, str], metrics: dict[str, float]) -> list[str]:
    """The plausibility bounds these results cross (empty: none)."""
    out = []
    for metric, bound in PLAUSIBLE_MAX.items():
        value = metrics.get(metric)
        if value is not None and not math.isnan(value) and value >= bound:
            out.append(f"{metric} {value:.3f} >= {bound:g}")
    equal = sum(responses[d["id"]].strip() == d["reference"].strip() for d in spec.docs) / len(spec.docs)
    if equal >= PLAUSIBLE_REFERENCE_SHARE:
        out.append(f"{equal:.0%} of responses equal their reference (bound {PLAUSIBLE_REFERENCE_SHARE:.0%})")
    groups: dict[str, set[str]] = {}
    for d in spec.docs:
        groups.setdefault(d["group_id"], set()).add(responses[d["id"]].strip())
    same = sum(len(v) == 1 for v in groups.values()) / len(groups)
    if same >= PLAUSIBLE_IDENTICAL_GROUPS:
        out.append(f"{same:.0%} of groups answer every question identically (bound {PLAUSIBLE_IDENTICAL_GROUPS:.0%})")
    return out
