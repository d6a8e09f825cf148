"""``consistbench compare A B``: the paired comparison of :mod:`consistbench.benchmark.compare`
as a command (a table in the terminal, JSON on request)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from consistbench.benchmark.cli import add_bootstrap_options, add_json_option, add_score_options, score_settings
from consistbench.benchmark.compare import DEFAULT_TASK, compare, load_side
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import write_json
from consistbench.benchmark.intervals import BootstrapSettings
from consistbench.benchmark.metrics import METRICS
from consistbench.benchmark.variants import ALL_TYPES


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
    table = Table(title=f"A = {a}  vs  B = {b}",
                  caption=f"paired bootstrap over {result['shared_groups']} shared groups, {st['n_resamples']} "
                          f"resamples, seed {st['seed']}; significant: the {st['confidence']:.0%} interval excludes 0")
    for col, just in (("metric", "left"), ("A", "right"), ("B", "right"), ("A-B", "right"),
                      (f"{st['confidence']:.0%} CI of A-B", "center"), ("p", "right"), ("sig", "center")):
        table.add_column(col, justify=just, no_wrap=True, min_width=3)
    for name in _ordered(result["metrics"]):
        m = result["metrics"][name]
        ok = m["low"] == m["low"]  # not NaN
        table.add_row(name, f"{m['a']:.3f}", f"{m['b']:.3f}", f"{m['difference']:+.3f}",
                      f"{m['low']:+.3f} {m['high']:+.3f}" if ok else "-",
                      _fmt_p(m["p_value"], m["valid"]),
                      ("yes" if m["significant"] else "no") if ok else "-",
                      style="bold" if m["significant"] else None)
    return table


def cmd_compare(args) -> int:
    a = load_side(args.a, args.task)
    b = load_side(args.b, args.task_b or args.task)
    if args.n_resamples < 1:
        raise ConsistbenchError(f"--n-resamples must be at least 1 for a comparison, got {args.n_resamples}")
    boot = BootstrapSettings(n_resamples=args.n_resamples, seed=args.bootstrap_seed, confidence=args.confidence)
    result = compare(a, b, score_settings(args), boot)
    console = Console()
    console.print(comparison_table(result))
    console.print(f"{result['shared_rows']} shared rows; only in A: {result['only_a_rows']}, "
                  f"only in B: {result['only_b_rows']}; data version {result['data_version'][:16]}")
    n = result["shared_rows"]
    console.print(f"identical responses: {result['identical_responses']} of {n} "
                  f"({result['identical_responses'] / n:.1%})")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("compare", help="paired bootstrap: is model A's score different from model B's?",
                       description="Paired bootstrap over the groups both models answered: for every metric and "
                                   "variant type, A, B, the difference A - B, its interval, a p-value and whether "
                                   "it is significant; and how many responses are identical. Inputs: lm-eval "
                                   "results directories or files (with --log_samples), samples JSONL, or scorer "
                                   "responses JSONL, on the same data version.")
    p.add_argument("a", help="model A: lm-eval results dir / results_*.json / samples_*.jsonl, or a responses JSONL")
    p.add_argument("b", help="model B: the same kinds of input, on the same data version")
    p.add_argument("--task", default=None, help=f"lm-eval task to compare (default: the only one, else {DEFAULT_TASK})")
    p.add_argument("--task-b", default=None, help="B's task when it differs from A's (e.g. consistency vs consistency_mini)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    add_json_option(p, help="write the comparison JSON to FILE")
    add_score_options(p)
    add_bootstrap_options(p, allow_off=False)
    p.set_defaults(func=cmd_compare)
