"""Results for people: the terminal table and PNG bar charts of metrics per variant type and per robust family."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from consistbench.benchmark.fileio import atomic_path
from consistbench.benchmark.metrics import ACCURACY_METRICS, CONSISTENCY_METRICS, METRICS
from consistbench.benchmark.variants import ALL_TYPES, ROBUST_TYPES, ROW_TYPES, VARIANT_TYPES


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}"


def table_rows(metrics: dict[str, float]) -> list[tuple[str, list[float | None]]]:
    """(label, values in METRICS order) for 'overall' and each row type present."""
    rows = [("overall", [metrics.get(m) for m in METRICS])]
    for vtype in ROW_TYPES:
        values = [metrics.get(f"{m}_{vtype}") for m in METRICS]
        if any(v is not None for v in values):
            rows.append((vtype, values))
    return rows


def metrics_table(metrics: dict[str, float], counts: dict | None = None, title: str = "consistbench"):
    """A rich Table: one row overall and one per row type, one column per metric."""
    table = Table(title=title)
    table.add_column("subset")
    if counts:
        table.add_column("rows", justify="right")
        table.add_column("pairs", justify="right")
    for name in METRICS:
        table.add_column(name, justify="right")
    per_rows = (counts or {}).get("rows_per_type", {})
    per_pairs = (counts or {}).get("pairs_per_type", {})
    for label, values in table_rows(metrics):
        cells = [label]
        if counts:
            if label == "overall":
                cells += [str(counts.get("rows", "")), str(counts.get("pairs", ""))]
            else:
                cells += [str(per_rows.get(label, "")), str(per_pairs.get(label, "-"))]
        cells += [_fmt(v) for v in values]
        table.add_row(*cells)
    return table


def intervals_table(metrics: dict[str, float], title: str = "95% intervals"):
    """A rich Table of the bootstrap intervals in the layout of :func:`metrics_table`, or None.

    ``metrics`` carries them as ``metrics.intervals`` (:class:`consistbench.benchmark.intervals.MetricValues`).
    Two decimals: the default 1,000 resamples make the bounds stable to that precision.
    """
    intervals = getattr(metrics, "intervals", None)
    if not intervals or not intervals.get("metrics"):
        return None
    ci, st = intervals["metrics"], intervals["settings"]
    table = Table(title=f"{st['confidence']:.0%} intervals" if title == "95% intervals" else title,
                  caption=f"bootstrap over {intervals['groups']} whole groups, {st['n_resamples']} resamples, "
                          f"seed {st['seed']}")
    table.add_column("subset", no_wrap=True)
    for name in METRICS:
        table.add_column(name, justify="right", no_wrap=True)
    for label, _ in table_rows(metrics):
        cells = [label]
        for m in METRICS:
            iv = ci.get(m if label == "overall" else f"{m}_{label}")
            ok = iv and not math.isnan(iv["low"])
            cells.append(f"{iv['low']:.2f}–{iv['high']:.2f}" if ok else "-")
        table.add_row(*cells)
    return table


def print_table(metrics: dict[str, float], counts: dict | None = None, title: str = "consistbench") -> None:
    """The metrics table, then the intervals table when ``metrics`` carries intervals."""
    console = Console()
    console.print(metrics_table(metrics, counts, title))
    iv = intervals_table(metrics)
    if iv is not None:
        console.print(iv)


def _grouped_bars(ax, names, categories: list[str], value, interval) -> None:
    """One bar per (category, name); ``value(name, category)`` and ``interval(name, category)``
    (a dict with ``low``/``high``, or empty) give its height and error bar."""
    width = 0.8 / len(names)
    any_interval = False
    for j, name in enumerate(names):
        vals = [value(name, c) for c in categories]
        xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(categories))]
        ivs = [interval(name, c) or {} for c in categories]
        any_interval = any_interval or any(ivs)
        yerr = [[max(0.0, v - iv.get("low", v)) if v == v and iv.get("low") == iv.get("low") else 0.0
                 for v, iv in zip(vals, ivs)],
                [max(0.0, iv.get("high", v) - v) if v == v and iv.get("high") == iv.get("high") else 0.0
                 for v, iv in zip(vals, ivs)]]
        bars = ax.bar(xs, vals, width, label=name, yerr=yerr if any(ivs) else None, capsize=2,
                      error_kw={"elinewidth": 0.8})
        ax.bar_label(bars, labels=[_fmt(v)[:4] if v == v else "" for v in vals], fontsize=7)
    ax.set_xticks(range(len(categories)), categories)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def bar_chart(metrics: dict[str, float], path: str | Path, title: str = "consistbench") -> Path:
    """PNG with two panels: accuracy per row type and consistency per variant type.

    With intervals (:class:`consistbench.benchmark.intervals.MetricValues`), each bar has its 95% interval.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ci = (getattr(metrics, "intervals", None) or {}).get("metrics", {})  # error bars when present
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, names, types, label in ((axes[0], ACCURACY_METRICS, ALL_TYPES, "accuracy vs reference"),
                                    (axes[1], CONSISTENCY_METRICS, VARIANT_TYPES, "consistency original vs variant")):
        _grouped_bars(ax, names, list(types), lambda n, t: metrics.get(f"{n}_{t}", float("nan")),
                      lambda n, t: ci.get(f"{n}_{t}"))
        ax.set_title(label)
    fig.suptitle(title + ("  (error bars: 95% group-bootstrap intervals)" if ci else ""))
    return _save(fig, path)


def families_chart(families: dict[str, dict[str, float]], path: str | Path, title: str = "robust families") -> Path:
    """PNG: consistency (EM, RS, BS) of each robust family, its original against its variant.

    ``families`` maps a family (``typo``, ``surface``, ``template``) to the overall metrics of its
    task; with intervals (:class:`consistbench.benchmark.intervals.MetricValues`) each bar has
    its 95% interval. Accuracy is left out: in these tasks it mixes originals and variants.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = [f for f in ROBUST_TYPES if f in families] + sorted(f for f in families if f not in ROBUST_TYPES)

    def ci(name, fam):
        return ((getattr(families[fam], "intervals", None) or {}).get("metrics", {})).get(name)

    has_ci = any(getattr(families[f], "intervals", None) for f in cats)
    fig, ax = plt.subplots(figsize=(2.2 + 1.9 * len(cats), 4), constrained_layout=True)
    _grouped_bars(ax, CONSISTENCY_METRICS, cats, lambda n, f: families[f].get(n, float("nan")), ci)
    ax.set_title("consistency original vs family variant")
    fig.suptitle(title + ("  (error bars: 95% group-bootstrap intervals)" if has_ci else ""))
    return _save(fig, path)
