"""Score responses generated anywhere: a responses JSONL (data rows plus ``response``) in,
the metrics table and a results JSON out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark import __version__
from benchmark.intervals import BootstrapSettings, MetricValues, bootstrap_rows, settings_from_env
from benchmark.metrics import ScoreSettings, Scored, compute_all, pair_by_group
from benchmark.schema import Row, data_checksum, load_responses


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

    ``boot``: bootstrap settings for the 95% intervals (``True``: from the environment or the
    defaults, see :func:`benchmark.intervals.settings_from_env`; ``None``/``False``: no intervals).
    """
    settings = settings or ScoreSettings()
    scored = to_scored(rows)
    metrics = compute_all(scored, settings)
    boot = settings_from_env() if boot is True else (boot or None)
    intervals = bootstrap_rows(scored, settings, boot) if boot else None
    return {
        "consistbench_version": __version__,
        "metrics": MetricValues(metrics, intervals),
        "intervals": intervals,
        "settings": settings.describe(),
        "counts": counts_of(rows),
        "data_version": data_checksum(rows),
    }


def score_file(path: str | Path, settings: ScoreSettings | None = None) -> dict[str, Any]:
    result = score_rows(load_responses(path), settings)
    result["input"] = str(path)
    return result
