"""Confidence intervals and paired model comparisons: a bootstrap over whole groups.

Why groups: the rows of one group (an original and its variants) share a passage, a reference
and the original's response, so they are not independent; resampling single rows or pairs
would understate the uncertainty. One bootstrap resample draws ``G`` groups with replacement
from the ``G`` groups scored and recomputes every metric on the resampled set.

Why by hand: no library does a cluster bootstrap of *ratio* and *corpus* statistics cheaply
(scipy.stats.bootstrap resamples observations, sacrebleu's paired bootstrap resamples sentences,
lm-eval's ``bootstrap_stderr`` resamples documents and re-runs the aggregation each time). Every
consistbench metric is a function of per-group sums:

- ``rougeL``, ``em``, ``rs``, ``bs`` (overall and per type): sum of per-unit values / unit count;
- ``bleu`` (overall and per type): sacrebleu's sufficient statistics (hypothesis and reference
  length, matched and total n-grams for n = 1..4), summed over the rows; corpus BLEU is computed
  from the sums exactly as ``sacrebleu.BLEU.compute_bleu`` does (default ``exp`` smoothing).

So :func:`group_stats` computes the per-unit values once (with the definitions of
:mod:`consistbench.benchmark.metrics`) and sums them per group into a ``(groups, columns)`` matrix; a
resample is then a vector of group multiplicities ``w`` and its totals are ``w @ columns``.
A thousand resamples are one matrix product plus a vectorised metric evaluation.

Intervals are percentile intervals (95% by default). :func:`paired_bootstrap` applies the same
resampled group indices to two models scored on the same groups and reports the difference,
its interval, and whether the interval excludes zero. :func:`paired_runs_bootstrap` compares two
*arms* of several runs each (training seeds, same rows) with two levels per resample: the groups
(one draw shared by every run of both arms, so the comparison stays paired by group) and, in an
arm of ``S > 1`` runs, ``S`` runs drawn with replacement, carrying the between-run variance the
rows' own noise does not explain, with a Welch-Satterthwaite widening for the few runs
(:mod:`consistbench.benchmark.paired_stats`). Its group draws are those of the one-run comparison
with the same seed (the run draws have their own stream): with one run per arm it *is* the paired
bootstrap. Both add the TOST equivalence test against a margin and the minimum detectable
difference (docs/METRICS.md).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from consistbench.benchmark import metrics as M
from consistbench.benchmark.compat import bleu_sentence_statistics
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.paired_stats import arm_replicates, bad_margin, margin_for, summarise, welch_df
from consistbench.benchmark.variants import PAIR_TYPES, ROW_TYPES

N_RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95
_CHUNK_CELLS = 2_000_000  # resamples x groups per chunk of the multiplicity matrix (16 MB float64)


@dataclass(frozen=True)
class BootstrapSettings:
    """How intervals are computed; recorded with every result."""

    n_resamples: int = N_RESAMPLES
    seed: int = SEED
    confidence: float = CONFIDENCE

    def __post_init__(self):
        if int(self.n_resamples) < 1:
            raise ConsistbenchError(f"n_resamples must be at least 1, got {self.n_resamples}")
        if not 0.0 < float(self.confidence) < 1.0:
            raise ConsistbenchError(f"confidence must lie strictly between 0 and 1, got {self.confidence}")

    def describe(self) -> dict[str, Any]:
        return {"method": "bootstrap over whole groups, percentile interval", "unit": "group_id",
                **asdict(self)}


def bootstrap_settings(n_resamples: int | None = None, seed: int | None = None) -> BootstrapSettings | None:
    """Bootstrap settings from explicit values (``None``: the default); None when ``n_resamples`` is 0
    (intervals switched off)."""
    n = N_RESAMPLES if n_resamples is None else int(n_resamples)
    if n == 0:
        return None
    return BootstrapSettings(n_resamples=n, seed=SEED if seed is None else int(seed))


def bootstrap_from_metadata(meta: dict | None) -> BootstrapSettings | None:
    """Bootstrap settings from lm-eval task metadata (``bootstrap_resamples``, ``bootstrap_seed``)."""
    meta = meta or {}
    try:
        return bootstrap_settings(meta.get("bootstrap_resamples"), meta.get("bootstrap_seed"))
    except (TypeError, ValueError) as exc:
        raise ConsistbenchError(f"task metadata: bootstrap_resamples and bootstrap_seed must be integers ({exc})") from None


def bootstrap_metadata(boot: BootstrapSettings | None) -> dict:
    """The inverse of :func:`bootstrap_from_metadata`."""
    return {"bootstrap_resamples": 0 if boot is None else boot.n_resamples,
            "bootstrap_seed": SEED if boot is None else boot.seed}


# ---------------------------------------------------------------------------------------------
# Corpus BLEU from summed sufficient statistics

BLEU_STATS = 10  # sys_len, ref_len, correct_1..4, total_1..4 (sacrebleu's segment statistics)


@functools.lru_cache(maxsize=1)
def _bleu_metric():
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=M.BLEU_TOKENIZE)  # the settings of sacrebleu.corpus_bleu in metrics.bleu


def bleu_segment_stats(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """sacrebleu's per-sentence BLEU statistics, shape ``(rows, 10)``; their sum gives corpus BLEU."""
    if not predictions:
        return np.zeros((0, BLEU_STATS))

    stats = bleu_sentence_statistics(_bleu_metric(), list(predictions), [list(references)])
    return np.asarray(stats, dtype=np.float64).reshape(len(predictions), BLEU_STATS)


def bleu_from_stats(stats: np.ndarray) -> np.ndarray:
    """Corpus BLEU in [0, 1] for summed statistics ``(..., 10)``; vectorised ``BLEU.compute_bleu``.

    Same steps as sacrebleu 2.x with ``smooth_method='exp'`` and 4-gram order: brevity penalty;
    score 0 when no n-gram matches; orders from the first one without any n-gram on count as
    precision 0; each order without a match gets precision 100 / (2^k * total) for the k-th such
    order; geometric mean with log(0) floored at -9999999999 (``sacrebleu.utils.my_log``).
    """
    stats = np.asarray(stats, dtype=np.float64)
    sys_len, ref_len = stats[..., 0], stats[..., 1]
    correct, total = stats[..., 2:6], stats[..., 6:10]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        bp = np.where(sys_len < ref_len, np.where(sys_len > 0, np.exp(1.0 - ref_len / sys_len), 0.0), 1.0)
        alive = np.cumprod(total > 0, axis=-1).astype(bool)
        no_match = (correct == 0) & alive
        smooth = 2.0 ** np.cumsum(no_match, axis=-1)
        prec = np.where(alive, np.where(correct == 0, 100.0 / (smooth * total), 100.0 * correct / total), 0.0)
        logs = np.where(prec > 0, np.log(np.where(prec > 0, prec, 1.0)), -9999999999.0)
        score = bp * np.exp((((logs[..., 0] + logs[..., 1]) + logs[..., 2]) + logs[..., 3]) / 4.0)
    score = np.where(correct.sum(axis=-1) == 0, 0.0, score)
    return score / 100.0


# ---------------------------------------------------------------------------------------------
# Per-group sufficient statistics

@dataclass(frozen=True)
class Spec:
    """How one metric is computed from a totals vector: a ratio of two columns, or BLEU."""

    kind: str  # "ratio" | "bleu"
    start: int  # ratio: numerator column; bleu: first of 10 columns
    count: int  # column holding the number of units (0 units -> NaN)


@dataclass
class GroupStats:
    """Per-group sums for every metric: ``columns[g, k]``, one row per group (sorted ids)."""

    group_ids: tuple[str, ...]
    columns: np.ndarray
    specs: dict[str, Spec]

    @property
    def n_groups(self) -> int:
        return len(self.group_ids)

    def evaluate(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric for totals of shape ``(..., columns)`` (one row per resample)."""
        out = {}
        with np.errstate(divide="ignore", invalid="ignore"):
            for name, spec in self.specs.items():
                n = totals[..., spec.count]
                if spec.kind == "ratio":
                    value = totals[..., spec.start] / n
                else:
                    value = bleu_from_stats(totals[..., spec.start:spec.start + BLEU_STATS])
                out[name] = np.where(n > 0, value, np.nan)
        return out

    def point(self) -> dict[str, float]:
        """The metrics on the data as scored (equal to ``metrics.compute_all`` up to float rounding)."""
        return {k: float(v) for k, v in self.evaluate(self.columns.sum(axis=0)).items()}

    def subset(self, group_ids: Sequence[str]) -> GroupStats:
        index = {g: i for i, g in enumerate(self.group_ids)}
        missing = [g for g in group_ids if g not in index]
        if missing:
            raise ConsistbenchError(f"group {missing[0]!r} is not in these results")
        rows = np.fromiter((index[g] for g in group_ids), dtype=np.int64, count=len(group_ids))
        return GroupStats(tuple(group_ids), self.columns[rows], dict(self.specs))


class _Builder:
    def __init__(self, n_groups: int):
        self.n = n_groups
        self.cols: list[np.ndarray] = []
        self.specs: dict[str, Spec] = {}

    def _add(self, col: np.ndarray) -> int:
        self.cols.append(np.asarray(col, dtype=np.float64))
        return len(self.cols) - 1

    def ratio(self, name: str, group: np.ndarray, values: np.ndarray) -> None:
        num = self._add(np.bincount(group, weights=values, minlength=self.n))
        cnt = self._add(np.bincount(group, minlength=self.n))
        self.specs[name] = Spec("ratio", num, cnt)

    def bleu(self, name: str, group: np.ndarray, stats: np.ndarray) -> None:
        start = len(self.cols)
        for j in range(BLEU_STATS):
            self._add(np.bincount(group, weights=stats[:, j], minlength=self.n))
        cnt = self._add(np.bincount(group, minlength=self.n))
        self.specs[name] = Spec("bleu", start, cnt)

    def build(self, group_ids) -> GroupStats:
        columns = np.stack(self.cols, axis=1) if self.cols else np.zeros((self.n, 0))
        return GroupStats(tuple(group_ids), columns, self.specs)


def group_stats(rows: Sequence[M.Scored], settings: M.ScoreSettings | None = None) -> GroupStats:
    """Per-unit values with the definitions of :mod:`consistbench.benchmark.metrics`, summed per group.

    Produces exactly the metric names ``metrics.compute_all`` produces for the same rows.
    """
    settings = settings or M.ScoreSettings()
    rows = list(rows)
    if not rows:
        raise ConsistbenchError("no rows to bootstrap")
    group_ids = sorted({r.group_id for r in rows})
    index = {g: i for i, g in enumerate(group_ids)}
    b = _Builder(len(group_ids))

    row_group = np.fromiter((index[r.group_id] for r in rows), dtype=np.int64, count=len(rows))
    row_type = np.asarray([r.variant_type for r in rows])
    rouge = M.rouge_l_many((r.response, r.reference) for r in rows)
    bleu = bleu_segment_stats([r.response for r in rows], [r.reference for r in rows])
    b.ratio("rougeL", row_group, rouge)
    b.bleu("bleu", row_group, bleu)
    for vtype in ROW_TYPES:
        mask = row_type == vtype
        if mask.any():
            b.ratio(f"rougeL_{vtype}", row_group[mask], rouge[mask])
            b.bleu(f"bleu_{vtype}", row_group[mask], bleu[mask])

    pairs = M.pair_by_group(rows)
    pair_group = np.fromiter((index[p.group_id] for p in pairs), dtype=np.int64, count=len(pairs))
    pair_type = np.asarray([p.variant_type for p in pairs])
    per = {"em": M.em_values(pairs), "rs": M.rs_values(pairs, settings.rs_threshold)}
    if settings.compute_bs:
        per["bs"] = M.bertscore_f1([(p.variant, p.original) for p in pairs], settings.bertscore)
    for name, values in per.items():
        b.ratio(name, pair_group, values)  # no pairs at all: NaN, as in compute_all
        for vtype in PAIR_TYPES:
            mask = pair_type == vtype
            if mask.any():
                b.ratio(f"{name}_{vtype}", pair_group[mask], values[mask])
    return b.build(group_ids)


# ---------------------------------------------------------------------------------------------
# Resampling

def resample_counts(n_groups: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicity of each group in each resample, ``(n_resamples, n_groups)``; rows sum to n_groups."""
    idx = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    flat = idx + (np.arange(n_resamples, dtype=np.int64) * n_groups)[:, None]
    return np.bincount(flat.ravel(), minlength=n_resamples * n_groups).reshape(n_resamples, n_groups).astype(np.float64)


def _counts_chunks(n_groups: int, settings: BootstrapSettings) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(settings.seed)
    per_chunk = max(1, _CHUNK_CELLS // max(n_groups, 1))
    done = 0
    while done < settings.n_resamples:
        k = min(per_chunk, settings.n_resamples - done)
        yield resample_counts(n_groups, k, rng)
        done += k


def replicates(stats: GroupStats, settings: BootstrapSettings | None = None) -> dict[str, np.ndarray]:
    """Every metric on every resample: ``{name: array(n_resamples)}``."""
    settings = settings or BootstrapSettings()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in stats.specs}
    for counts in _counts_chunks(stats.n_groups, settings):
        for name, values in stats.evaluate(counts @ stats.columns).items():
            parts[name].append(values)
    return {name: np.concatenate(v) for name, v in parts.items()}


def _summary(point: float, reps: np.ndarray, confidence: float) -> dict[str, float]:
    valid = reps[np.isfinite(reps)]
    alpha = (1.0 - confidence) / 2.0
    if valid.size < 2 or not np.isfinite(point):
        return {"value": point, "low": float("nan"), "high": float("nan"), "stderr": float("nan"), "valid": int(valid.size)}
    low, high = np.percentile(valid, [100 * alpha, 100 * (1 - alpha)])
    return {"value": point, "low": float(low), "high": float(high), "stderr": float(valid.std(ddof=1)),
            "valid": int(valid.size)}


def bootstrap(stats: GroupStats, settings: BootstrapSettings | None = None) -> dict[str, Any]:
    """Percentile interval and bootstrap standard error for every metric.

    ``metrics[name]``: ``value`` (on the data as scored), ``low``/``high`` (the interval),
    ``stderr`` (standard deviation of the replicates), ``valid`` (resamples in which the metric
    was defined; a variant type can be absent from a resample of few groups).
    """
    settings = settings or BootstrapSettings()
    point = stats.point()
    reps = replicates(stats, settings)
    return {"settings": settings.describe(), "groups": stats.n_groups,
            "metrics": {name: _summary(point[name], reps[name], settings.confidence) for name in stats.specs}}


def paired_bootstrap(a: GroupStats, b: GroupStats, settings: BootstrapSettings | None = None,
                     margins: dict[str, float] | None = None) -> dict[str, Any]:
    """Difference ``a - b`` of every metric both have, over the groups both scored.

    Both models are evaluated on the *same* resampled groups in each resample, so what the two
    share (question difficulty, passage) cancels. ``significant``: the interval excludes 0.
    ``p_value``: two-sided bootstrap p-value, ``2 * min(P(d <= 0), P(d >= 0))``, at most 1. ``mdd``:
    :func:`~consistbench.benchmark.paired_stats.detectable_difference`; ``margins``: the TOST of
    :func:`paired_runs_bootstrap` (one run a side).
    """
    return paired_runs_bootstrap([a], [b], settings, margins)


def paired_runs_bootstrap(a_runs: Sequence[GroupStats], b_runs: Sequence[GroupStats],
                          settings: BootstrapSettings | None = None,
                          margins: dict[str, float] | None = None) -> dict[str, Any]:
    """Arm A's run-averaged metric minus arm B's, each arm one or more runs (training seeds) on the
    same rows, over the groups every run scored: the two-level bootstrap of the module docstring.

    Per metric, besides :func:`paired_bootstrap`'s keys: ``stderr_groups`` (the standard error with
    the runs fixed), ``a_runs``/``b_runs`` (each run's value), ``seed_sd`` (per arm, the between-run
    standard deviation beyond the rows' noise; None for one run), ``df`` (None for one run a side)
    and, where ``margins`` gives one (:func:`~consistbench.benchmark.paired_stats.margin_for`), the
    TOST: ``tost_low``/``tost_high`` (the ``2 * confidence - 1`` interval), ``tost_p`` (the larger of
    ``P(d <= -margin)`` and ``P(d >= margin)``) and ``equivalent``.
    """
    settings = settings or BootstrapSettings()
    if not a_runs or not b_runs:
        raise ConsistbenchError("each side of a comparison needs at least one run")
    runs = [*a_runs, *b_runs]
    shared = sorted(set.intersection(*(set(r.group_ids) for r in runs)))
    if not shared:
        raise ConsistbenchError("the two results share no group: they were not scored on the same data")
    arms = [[r.subset(shared) for r in a_runs], [r.subset(shared) for r in b_runs]]
    names = [n for n in arms[0][0].specs if all(n in r.specs for r in runs)]
    if (bad := bad_margin(margins, names)) is not None:
        raise ConsistbenchError(f"equivalence margin {bad}: a metric of {', '.join(names)} (or * for all) and a "
                                "positive number")
    points = [[r.point() for r in arm] for arm in arms]
    run_rng = np.random.default_rng([settings.seed, 1])  # the run draws' own stream (module docstring)
    vals: list[dict[str, list[np.ndarray]]] = [{n: [] for n in names}, {n: [] for n in names}]
    draws: list[list[np.ndarray]] = [[], []]
    for counts in _counts_chunks(len(shared), settings):
        for i, arm in enumerate(arms):
            if len(arm) > 1:
                draws[i].append(run_rng.integers(0, len(arm), size=(counts.shape[0], len(arm))))
            evaluated = [r.evaluate(counts @ r.columns) for r in arm]
            for n in names:
                vals[i][n].append(np.stack([e[n] for e in evaluated]))       # (runs, resamples)
    out = {}
    for n in names:
        (ra, ga, var_a), (rb, gb, var_b) = (
            arm_replicates(np.concatenate(vals[i][n], axis=1), [pt[n] for pt in points[i]],
                           np.concatenate(draws[i]) if draws[i] else None) for i in (0, 1))
        fixed = ga - gb
        var_groups = float(np.nanvar(fixed, ddof=1)) if fixed.size > 1 else 0.0
        df = welch_df(var_groups, [(var_a, len(arms[0])), (var_b, len(arms[1]))])
        pa, pb = (float(np.mean([p[n] for p in pts])) for pts in points)
        out[n] = {"a": pa, "b": pb, **summarise(pa - pb, ra - rb, fixed, settings.confidence, margin_for(n, margins), df),
                  "a_runs": [pt[n] for pt in points[0]], "b_runs": [pt[n] for pt in points[1]],
                  "seed_sd": {"a": math.sqrt(var_a) if math.isfinite(var_a) else None,
                              "b": math.sqrt(var_b) if math.isfinite(var_b) else None}}
    return {"settings": settings.describe(), "shared_groups": len(shared),
            "only_a_groups": a_runs[0].n_groups - len(shared), "only_b_groups": b_runs[0].n_groups - len(shared),
            "runs": {"a": len(a_runs), "b": len(b_runs)}, "metrics": out}


# ---------------------------------------------------------------------------------------------
# Convenience for callers that hold rows or lm-eval items

def bootstrap_rows(rows: Sequence[M.Scored], settings: M.ScoreSettings | None = None,
                   boot: BootstrapSettings | None = None) -> dict[str, Any]:
    return bootstrap(group_stats(rows, settings), boot)


_ITEMS_CACHE: dict[tuple, dict[str, Any]] = {}


def bootstrap_items(items: Sequence[Sequence[str]], settings: M.ScoreSettings | None = None,
                    boot: BootstrapSettings | None = None) -> dict[str, Any]:
    """Intervals for lm-eval items ``(id, group_id, variant_type, response, reference)``.

    Cached on the (order-independent) items and both settings, so the lm-eval aggregations and
    the post-processing of ``consistbench eval`` share one computation.
    """
    settings = settings or M.ScoreSettings()
    boot = boot or BootstrapSettings()
    items = tuple(sorted(tuple(str(x) for x in it) for it in items))
    key = (items, json.dumps(settings.describe(), sort_keys=True, default=str), boot)
    if key not in _ITEMS_CACHE:
        if len(_ITEMS_CACHE) >= 8:
            _ITEMS_CACHE.pop(next(iter(_ITEMS_CACHE)))
        _ITEMS_CACHE[key] = bootstrap_rows([M.Scored(*it) for it in items], settings, boot)
    return _ITEMS_CACHE[key]


class MetricValues(dict):
    """Metric values (a plain dict, also to JSON) carrying the intervals that go with them."""

    def __init__(self, values=(), intervals: dict | None = None):
        super().__init__(values)
        self.intervals = intervals


# ---------------------------------------------------------------------------------------------
# lm-eval results

ITEM_FIELDS = ("id", "group_id", "variant_type", "response", "reference")


def items_from_samples(samples: Sequence[dict]) -> list[tuple[str, ...]] | None:
    """The consistbench items ``(id, group_id, variant_type, response, reference)`` of lm-eval
    samples (in memory or read from a samples JSONL), or None for samples of another task."""
    items = []
    for s in samples:
        doc = s.get("doc") or {}
        if not all(isinstance(doc.get(k), str) for k in ("id", "group_id", "variant_type", "reference")):
            return None
        resps = s.get("filtered_resps") or [""]
        resp = resps[0] if isinstance(resps[0], str) else (resps[0][0] if resps[0] else "")
        items.append((doc["id"], doc["group_id"], doc["variant_type"], str(resp), doc["reference"]))
    return items or None


def add_to_lm_eval_results(results: dict, samples: dict[str, list[dict]], settings: M.ScoreSettings,
                           boot: BootstrapSettings | None) -> dict:
    """Put group-bootstrap intervals into lm-eval ``results`` (in place) and return them by task.

    ``results["consistbench"]["intervals"][task]`` gets the full intervals; every
    ``<metric>_stderr,<filter>`` that lm-eval left ``N/A`` (or that the tasks' companion metrics
    filled) is set from the same bootstrap, and the companions' own ``*_stderr_stderr`` keys go.
    """
    out = {}
    if boot is None:
        return out
    for task, task_samples in samples.items():
        items = items_from_samples(task_samples)
        res = results.get("results", {}).get(task)
        if not items or res is None:
            continue
        iv = bootstrap_items(items, settings, boot)
        out[task] = iv
        for key in list(res):
            name, _, filt = key.partition(",")
            if name.endswith("_stderr_stderr"):
                del res[key]
            elif name.endswith("_stderr") and name[: -len("_stderr")] in iv["metrics"]:
                res[key] = iv["metrics"][name[: -len("_stderr")]]["stderr"]
    results.setdefault("consistbench", {})["intervals"] = out
    return out
