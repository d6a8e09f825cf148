"""Score responses generated anywhere: a responses JSONL (data rows plus ``response``) in,
the metrics table and a results JSON out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from consistbench.benchmark import __version__
from consistbench.benchmark.intervals import BootstrapSettings, MetricValues, bootstrap, bootstrap_rows, group_stats
from consistbench.benchmark.metrics import ScoreSettings, Scored, check_cost, compute_all, pair_by_group
from consistbench.benchmark.schema import Row, data_checksum, load_responses


def to_scored(rows: Sequence[Row]) -> list[Scored]:
    return [Scored(r.id, r.group_id, r.variant_type, r.response or "", r.reference) for r in rows]


def counts_of(rows: Sequence[Row]) -> dict[str, Any]:
    scored = to_scored(rows)
    pairs = pair_by_group(scored)
    return {
        "rows": len(rows),
        "groups": len({r.group_id for r in rows}),
        "pairs": len(pairs),
        "rows_per_type": dict(sorted(Counter(r.variant_type for r in rows).items())),
        "pairs_per_type": dict(sorted(Counter(p.variant_type for p in pairs).items())),
    }


def score_rows(rows: Sequence[Row], settings: ScoreSettings | None = None,
               boot: BootstrapSettings | None | bool = True) -> dict[str, Any]:
    """The full result object for validated responses rows.

    ``boot``: bootstrap settings for the 95% intervals (``True``: the defaults of
    :class:`consistbench.benchmark.intervals.BootstrapSettings`; ``None``/``False``: no intervals).
    """
    settings = settings or ScoreSettings()
    scored = to_scored(rows)
    boot = BootstrapSettings() if boot is True else (boot or None)
    if boot and settings.compute_bs:
        # BERTScore is most of the cost: the bootstrap's per-pair values (metrics.bertscore_f1,
        # the same call compute_all makes) give the bs metrics too, so it runs once
        stats = group_stats(scored, settings)
        metrics = compute_all(scored, replace(settings, compute_bs=False))
        metrics.update({k: v for k, v in stats.point().items() if k == "bs" or k.startswith("bs_")})
        intervals = bootstrap(stats, boot)
    else:
        metrics = compute_all(scored, settings)
        intervals = bootstrap_rows(scored, settings, boot) if boot else None
    return {
        "consistbench_version": __version__,
        "metrics": MetricValues(metrics, intervals),
        "intervals": intervals,
        "settings": settings.describe() | {"bootstrap": boot.describe() if boot else None},
        "counts": counts_of(rows),
        "data_version": data_checksum(rows),
    }


def score_file(path: str | Path, settings: ScoreSettings | None = None,
               boot: BootstrapSettings | None | bool = True) -> dict[str, Any]:
    rows = load_responses(path)  # the hardened reader and the schema's field limits
    check_cost(to_scored(rows), str(path))  # before any metric runs
    result = score_rows(rows, settings, boot)
    result["input"] = str(path)
    return result
