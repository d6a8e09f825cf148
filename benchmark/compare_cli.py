"""``consistbench compare A B``: the paired comparison of :mod:`consistbench.benchmark.compare`
as a command (a table in the terminal, JSON on request). Several runs per side (training seeds):
``consistbench compare A1 B1 --a A2 --a A3 --b B2 --b B3`` (or only ``--a``/``--b``)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from consistbench.benchmark.cli import add_bootstrap_options, add_json_option, add_score_options, score_settings
from consistbench.benchmark.compare import DEFAULT_TASK, compare, load_side, parse_margins
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import write_json
from consistbench.benchmark.intervals import BootstrapSettings
from consistbench.benchmark.metrics import METRICS
from consistbench.benchmark.variants import ALL_TYPES


NARROW = {"box": box.SIMPLE_HEAD, "pad_edge": False, "collapse_padding": True}  # 8 columns in 80 characters


def _ordered(names) -> list[str]:
    order = [m for m in METRICS] + [f"{m}_{t}" for m in METRICS for t in ALL_TYPES]
    return [n for n in order if n in names] + sorted(n for n in names if n not in order)


def _fmt_p(p: float, n: int) -> str:
    if p != p:
        return "-"
    text = f"<{1 / n:.3f}" if p == 0 and n else f"{p:.3f}"
    return text.replace("0.", ".", 1) if p < 1 else text  # narrow enough for an 80-column terminal


def comparison_table(result: dict[str, Any]):
    st = result["settings"]
    a, b = result["a"]["label"], result["b"]["label"]
    runs = result.get("runs", {"a": 1, "b": 1})
    how = (f"two-level bootstrap (groups shared; runs within each arm: A {runs['a']}, B {runs['b']}; values are "
           "run means)" if max(runs.values()) > 1 else "paired bootstrap")
    table = Table(title=f"A = {a}  vs  B = {b}", **NARROW,
                  caption=f"{how} over {result['shared_groups']} shared groups, {st['n_resamples']} resamples, seed "
                          f"{st['seed']}; significant: the {st['confidence']:.0%} interval excludes 0; MDD: the "
                          "smallest difference detected with 80% power (not significant: inconclusive below it)")
    for col, just in (("metric", "left"), ("A", "right"), ("B", "right"), ("A-B", "right"),
                      (f"{st['confidence']:.0%} CI of A-B", "center"), ("p", "right"), ("sig", "center"),
                      ("MDD", "right")):
        table.add_column(col, justify=just, no_wrap=True, min_width=3)
    for name in _ordered(result["metrics"]):
        m = result["metrics"][name]
        ok = m["low"] == m["low"]  # not NaN
        table.add_row(name, f"{m['a']:.3f}", f"{m['b']:.3f}", f"{m['difference']:+.3f}",
                      f"{m['low']:+.3f} {m['high']:+.3f}" if ok else "-",
                      _fmt_p(m["p_value"], m["valid"]),
                      ("yes" if m["significant"] else "no") if ok else "-", f"{m['mdd']:.3f}" if ok else "-",
                      style="bold" if m["significant"] else None)
    return table


def equivalence_table(result: dict[str, Any]):
    """The TOST rows (metrics with a margin), or None when no margin was given."""
    rows = [n for n in _ordered(result["metrics"]) if "margin" in result["metrics"][n]]
    if not rows:
        return None
    c = result["settings"]["confidence"]
    table = Table(title=f"equivalence (TOST at {1 - c:.0%}): is |A-B| below the margin?", **NARROW,
                  caption=f"equivalent: the {2 * c - 1:.0%} interval of A-B lies inside (-margin, +margin); "
                          "TOST p: the larger of the two one-sided bootstrap p-values")
    for col, just in (("metric", "left"), ("A-B", "right"), ("margin", "right"), (f"{2 * c - 1:.0%} CI", "center"),
                      ("TOST p", "right"), ("equiv", "center")):
        table.add_column(col, justify=just, no_wrap=True, min_width=3)
    for name in rows:
        m = result["metrics"][name]
        ok = m["tost_low"] == m["tost_low"]
        table.add_row(name, f"{m['difference']:+.3f}", f"{m['margin']:.3f}",
                      f"{m['tost_low']:+.3f} {m['tost_high']:+.3f}" if ok else "-",
                      _fmt_p(m["tost_p"], m["valid"]) if ok else "-",
                      ("yes" if m["equivalent"] else "no") if ok else "-", style="bold" if m["equivalent"] else None)
    return table


def _runs(first: str | None, more: list[str] | None, task: str | None, side: str) -> list:
    paths = ([first] if first else []) + list(more or [])
    if not paths:
        raise ConsistbenchError(f"no model {side}: give it as the {'first' if side == 'A' else 'second'} argument "
                                f"or with --{side.lower()}")
    return [load_side(p, task) for p in paths]


def cmd_compare(args) -> int:
    margins = parse_margins(args.equivalence_margin) if args.equivalence_margin else None
    a = _runs(args.a, args.more_a, args.task, "A")
    b = _runs(args.b, args.more_b, args.task_b or args.task, "B")
    if args.n_resamples < 1:
        raise ConsistbenchError(f"--n-resamples must be at least 1 for a comparison, got {args.n_resamples}")
    boot = BootstrapSettings(n_resamples=args.n_resamples, seed=args.bootstrap_seed, confidence=args.confidence)
    result = compare(a, b, score_settings(args), boot, margins=margins, label_a=args.label_a, label_b=args.label_b)
    console = Console()
    console.print(comparison_table(result))
    if (tost := equivalence_table(result)) is not None:
        console.print(tost)
    console.print(f"{result['shared_rows']} shared rows; only in A: {result['only_a_rows']}, "
                  f"only in B: {result['only_b_rows']}; data version {result['data_version'][:16]}")
    n = result["shared_rows"]
    first = " (first run of each side)" if max(result["runs"].values()) > 1 else ""
    console.print(f"identical responses{first}: {result['identical_responses']} of {n} "
                  f"({result['identical_responses'] / n:.1%})")
    for side in ("a", "b"):
        if result["runs"][side] == 1 and max(result["runs"].values()) > 1:
            console.print(f"{side.upper()} has one run: its seed variance is not in the interval (unknown)")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("compare", help="paired bootstrap: is model A's score different from model B's?",
                       description="Paired bootstrap over the groups both models answered: for every metric and "
                                   "variant type, A, B, the difference A - B, its interval, a p-value, whether "
                                   "it is significant and the smallest difference the comparison detects (MDD); "
                                   "with --equivalence-margin, the TOST equivalence test; and how many responses "
                                   "are identical. Several runs per side (--a, --b: training seeds) compare run "
                                   "means with the seed variance in the interval. Inputs: lm-eval results "
                                   "directories or files (with --log_samples), samples JSONL, or scorer responses "
                                   "JSONL, on the same data version.")
    p.add_argument("a", nargs="?", help="model A: lm-eval results dir / results_*.json / samples_*.jsonl, or a "
                                        "responses JSONL")
    p.add_argument("b", nargs="?", help="model B: the same kinds of input, on the same data version")
    p.add_argument("--a", dest="more_a", action="append", metavar="RUN",
                   help="another run of A (a training seed of the same configuration; repeat the option): A's "
                        "metrics become run means and the interval includes the seed variance")
    p.add_argument("--b", dest="more_b", action="append", metavar="RUN", help="another run of B (repeatable)")
    p.add_argument("--label-a", default=None, help="name of A in the table and JSON (default: its runs' names)")
    p.add_argument("--label-b", default=None, help="name of B")
    p.add_argument("--equivalence-margin", default=None, metavar="MARGIN",
                   help="TOST equivalence test: one margin for every metric (0.03) or per metric "
                        "(em=0.03,rs=0.03; a metric's margin also holds for its per-type rows)")
    p.add_argument("--task", default=None, help=f"lm-eval task to compare (default: the only one, else {DEFAULT_TASK})")
    p.add_argument("--task-b", default=None, help="B's task when it differs from A's (e.g. consistency vs consistency_mini)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    add_json_option(p, help="write the comparison JSON to FILE")
    add_score_options(p)
    add_bootstrap_options(p, allow_off=False)
    p.set_defaults(func=cmd_compare)
