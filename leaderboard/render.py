"""How the leaderboard draws: the ranking table's columns, the HTML table, the inline SVG charts,
the CSV, and the Jinja2 environment of the site's pages.

Every drawing is deterministic text (no timestamps, fixed number formats), so identical inputs
give byte-identical pages. The ranking table has one column group overall and one per variant
type (accuracy then consistency, side by side), plus one group per robust family when a row on
the track has it (:func:`robust_columns`). A reproduced entry says what was regenerated
(:func:`coverage_text`: every row, or a sample with its power). User text goes through Jinja2's
autoescaping, and a CSV text cell that a spreadsheet would run as a formula is neutralised
(:func:`csv_text`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from consistbench.benchmark.metrics import ACCURACY_METRICS, CONSISTENCY_METRICS
from consistbench.benchmark.variants import ALL_TYPES, ROBUST_TYPES, VARIANT_TYPES
from consistbench.leaderboard.schema import RankingRow
from consistbench.leaderboard.tracks import metric_key

TEMPLATES = Path(__file__).resolve().parent / "templates"
METRIC_LABELS = {"rougeL": "ROUGE-L", "bleu": "BLEU", "em": "EM", "rs": "RS", "bs": "BS"}
TYPE_LABELS = {"original": "original", "how_to": "how-to", "plural_article": "plural/article",
               "paraphrase": "paraphrase", "": "overall"}
ROBUST_GROUP_LABELS = {f: f"{f} (robust)" for f in ROBUST_TYPES}
TYPE_LABELS.update(ROBUST_GROUP_LABELS)  # robust families: their own column groups


@dataclass(frozen=True)
class Column:
    """One metric column of the ranking table."""

    metric: str  # key in RankingRow.metrics
    label: str
    group: str  # header group: "overall" or a variant type
    kind: str  # "accuracy" | "consistency"


def ranking_columns() -> list[Column]:
    """Overall, then per variant type; within each, accuracy then consistency (side by side)."""
    cols = [Column(m, METRIC_LABELS[m], "", "accuracy") for m in ACCURACY_METRICS]
    cols += [Column(m, METRIC_LABELS[m], "", "consistency") for m in CONSISTENCY_METRICS]
    for vtype in VARIANT_TYPES:
        cols += [Column(f"{m}_{vtype}", METRIC_LABELS[m], vtype, "accuracy") for m in ACCURACY_METRICS]
        cols += [Column(f"{m}_{vtype}", METRIC_LABELS[m], vtype, "consistency") for m in CONSISTENCY_METRICS]
    cols += [Column(f"{m}_original", METRIC_LABELS[m], "original", "accuracy") for m in ACCURACY_METRICS]
    return cols


def robust_columns(rows: list[RankingRow]) -> list[Column]:
    """The ranking table's extra columns: one group per family that some row has (EM, RS, BS)."""
    have = {k for row in rows for k in row.metrics}
    return [Column(metric_key(m, f), METRIC_LABELS[m], f, "consistency")
            for f in ROBUST_TYPES if any(metric_key(m, f) in have for m in CONSISTENCY_METRICS)
            for m in CONSISTENCY_METRICS]


def fmt(value: float | None, digits: int = 4) -> str:
    """A metric as the pages show it ("n/a" for a missing or NaN value)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


# What a reproduction checked: the record's fields that the JSON and the CSV carry
COVERAGE_FIELDS = ("mode", "rows_checked", "rows_total", "detectable_share", "power")


def coverage_text(r: Mapping | None) -> str:
    """What a reproduction regenerated, in words: ``all N rows``, or ``a sample of n rows of N
    (detects a forged share >= p with probability q)``; ``a sample (size not recorded)`` when the
    summary lacks the figures. "all" only when the record says so and counts every row."""
    r = r or {}
    n, total = r.get("rows_checked"), r.get("rows_total")
    if r.get("mode") == "all" and isinstance(total, int) and n == total:
        return f"all {total:,} rows"
    if not isinstance(n, int) or not isinstance(total, int):
        return "a sample (size not recorded)"
    text = f"a sample of {n:,} rows of {total:,}"
    p, q = r.get("detectable_share"), r.get("power")
    if isinstance(p, (int, float)) and isinstance(q, (int, float)):
        text += f" (detects a forged share \u2265 {p * 100:.3g}% with probability {q:.3f})"
    return text


def environment() -> Environment:
    """The Jinja2 environment of the site's templates: autoescaping, strict, with the labels."""
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.filters["coverage"] = coverage_text
    env.globals.update(type_labels=TYPE_LABELS, metric_labels=METRIC_LABELS)
    return env


def render_ranking_table(rows: list[RankingRow], columns: list[Column] | None = None,
                         link_prefix: str = "models/") -> Markup:
    """The sortable ranking table (HTML). The one place the table is drawn: add columns here.

    Each metric cell carries ``data-value`` (the full-precision number) for the sorter; when a
    row has a ``ci`` entry for the metric it is shown under the value.
    """
    columns = columns or ranking_columns()
    groups: list[tuple[str, int]] = []
    for col in columns:
        if groups and groups[-1][0] == col.group:
            groups[-1] = (col.group, groups[-1][1] + 1)
        else:
            groups.append((col.group, 1))
    # Markup: already escaped by the template, so a page embedding it does not escape it twice
    return Markup(environment().get_template("_table.html").render(rows=rows, columns=columns, groups=groups,
                                                                   link_prefix=link_prefix))


def bar_chart_svg(title: str, categories: list[str], series: list[tuple[str, list[float | None]]],
                  width: int = 560, height: int = 260) -> str:
    """A grouped bar chart as inline SVG (values in [0, 1]); deterministic text, no scripts."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    left, right, top, bottom = 40, 10, 30, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    n_cat, n_ser = max(len(categories), 1), max(len(series), 1)
    group_w = plot_w / n_cat
    bar_w = group_w * 0.8 / n_ser
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" class="chart"><title>{escape(title)}</title>',
           f'<text x="{width / 2:.1f}" y="18" text-anchor="middle" class="chart-title">{escape(title)}</text>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" class="tick">{tick:.2f}</text>')
    for ci, cat in enumerate(categories):
        x0 = left + ci * group_w + group_w * 0.1
        for si, (name, values) in enumerate(series):
            value = values[ci]
            if value is None or math.isnan(value):
                continue
            h = plot_h * max(0.0, min(1.0, value))
            x = x0 + si * bar_w
            out.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                       f'fill="{palette[si % len(palette)]}"><title>{escape(name)} {escape(cat)}: {value:.4f}</title></rect>')
        out.append(f'<text x="{left + ci * group_w + group_w / 2:.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
                   f'class="tick">{escape(cat)}</text>')
    lx = left
    for si, (name, _) in enumerate(series):
        out.append(f'<rect x="{lx}" y="{height - 18}" width="10" height="10" fill="{palette[si % len(palette)]}"/>'
                   f'<text x="{lx + 14}" y="{height - 9}" class="tick">{escape(name)}</text>')
        lx += 20 + 8 * len(name)
    out.append("</svg>")
    return "".join(out)


def model_charts(row: RankingRow) -> list[str]:
    """A model page's charts: accuracy per question type, consistency per variant type, and the
    robust families when the row has them."""
    acc = bar_chart_svg("Accuracy against the reference, per question type",
                        [TYPE_LABELS[t] for t in ALL_TYPES],
                        [(METRIC_LABELS[m], [row.metrics.get(f"{m}_{t}") for t in ALL_TYPES]) for m in ACCURACY_METRICS])
    con = bar_chart_svg("Consistency with the original's answer, per variant type",
                        [TYPE_LABELS[t] for t in VARIANT_TYPES],
                        [(METRIC_LABELS[m], [row.metrics.get(f"{m}_{t}") for t in VARIANT_TYPES])
                         for m in CONSISTENCY_METRICS])
    return [acc, con] + robust_charts(row)


def robust_charts(row: RankingRow) -> list[str]:
    """The model page's chart of the robust families, when the row has them."""
    families = [f for f in ROBUST_TYPES if any(metric_key(m, f) in row.metrics for m in CONSISTENCY_METRICS)]
    if not families:
        return []
    return [bar_chart_svg("Robust families: consistency with the original's answer", families,
                          [(METRIC_LABELS[m], [row.metrics.get(metric_key(m, f)) for f in families])
                           for m in CONSISTENCY_METRICS])]


# A spreadsheet opening the CSV runs a cell that starts with one of these as a formula
# (OWASP, "CSV Injection"): such a text cell gets a leading apostrophe, which spreadsheets show
# as text and do not evaluate. Only text cells are touched; every number the CSV writes is >= 0.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str) -> str:
    """A user-supplied text cell made safe for spreadsheets (OWASP CSV-injection guidance)."""
    return "'" + value if value.startswith(FORMULA_START) else value


def ranking_csv(tracks: dict[str, list[RankingRow]], columns: list[Column]) -> str:
    """``leaderboard.csv``: one line per entry and track, one column per metric of ``columns``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["task", "rank", "slug", "model", "parameters", "precision", "submitter", "date", "data_sha256",
                     "verification", *COVERAGE_FIELDS, *[c.metric for c in columns]])
    for task, rows in tracks.items():
        for r in rows:
            writer.writerow([task, r.rank, csv_text(r.slug), csv_text(r.model.name), r.model.parameters,
                             csv_text(r.model.precision), csv_text(r.submitter.name), r.date.isoformat(), r.data_sha256,
                             r.verification, *_coverage_cells(r.reproduction),
                             *["" if (v := r.metrics.get(c.metric)) is None or math.isnan(v) else repr(v)
                               for c in columns]])
    return buf.getvalue()


def _coverage_cells(summary: dict | None) -> list:
    """The CSV's reproduction cells (empty without a reproduction or a recorded figure)."""
    summary = summary or {}
    return ["" if (v := summary.get(k)) is None else (repr(v) if isinstance(v, float) else v) for k in COVERAGE_FIELDS]
