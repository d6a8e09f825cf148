"""Paired comparison of two scored runs: is model A's score really different from model B's?

Each side is an lm-eval output (a results directory, a ``results_*.json`` or a
``samples_<task>_*.jsonl``, gzipped or not) or a scorer responses JSONL (data rows plus
``response``). Both must come from the same data version; the rows both sides scored are
re-scored with the same settings and compared by a paired bootstrap over their shared groups
(:func:`consistbench.benchmark.intervals.paired_bootstrap`): for every metric and variant type,
the difference A - B, its interval, a bootstrap p-value, whether the interval excludes 0 and the
smallest difference the comparison would detect; with equivalence margins, the TOST.

Each side may also be an *arm* of several runs (training seeds of one configuration, on the
same data version and rows): the metric is then averaged over the arm's runs and the interval
includes the seed variance (:func:`consistbench.benchmark.intervals.paired_runs_bootstrap`).
The ``consistbench compare`` command (:mod:`consistbench.benchmark.compare_cli`) prints it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import read_jsonl
from consistbench.benchmark.intervals import BootstrapSettings, group_stats, items_from_samples, paired_runs_bootstrap
from consistbench.benchmark.metrics import ScoreSettings, Scored, check_cost
from consistbench.benchmark.paths import DATA_DIR
from consistbench.benchmark.schema import data_checksum, load_data, load_responses, parse_row
from consistbench.benchmark.scorer import to_scored
from consistbench.benchmark.untrusted import DEFAULT_LIMITS, MiB, iter_jsonl, read_json

DEFAULT_TASK = "consistency"


@dataclass
class Side:
    """One model's scored rows and where they came from."""

    label: str
    source: str
    rows: list  # list[benchmark.metrics.Scored]
    data_version: str
    task: str | None = None
    docs: dict[str, tuple] = field(default_factory=dict)  # row id -> (group_id, variant_type, question, reference)


# ---------------------------------------------------------------------------------------------
# Reading either kind of input

@functools.lru_cache(maxsize=1)
def _shipped_test():
    path = DATA_DIR / "test.jsonl"
    if not path.is_file():
        return {}, ""
    rows = load_data(path)
    return {r.id: r for r in rows}, data_checksum(rows)


def _version_of_rows(rows) -> str:
    """The shipped test split's version when every row is a row of it (a subset scored), else the
    checksum of these rows themselves."""
    shipped, version = _shipped_test()
    same = shipped and all(
        (s := shipped.get(r.id)) is not None and (s.group_id, s.variant_type, s.question, s.context, s.reference)
        == (r.group_id, r.variant_type, r.question, r.context, r.reference) for r in rows)
    return version if same else data_checksum(rows)


def _results_file(path: Path, task: str | None = None) -> Path:
    """The newest ``results_*.json`` in ``path`` or in its only model sub-directory (with ``task``:
    the newest one holding that task)."""
    found = sorted(path.glob("results_*.json"))
    if not found:
        subs = [d for d in path.iterdir() if d.is_dir() and any(d.glob("results_*.json"))]
        if len(subs) > 1:
            raise ConsistbenchError(f"{path}: results of several models ({', '.join(sorted(d.name for d in subs))}); "
                                    "pass one model's directory")
        found = sorted(subs[0].glob("results_*.json")) if subs else []
    if not found:
        raise ConsistbenchError(f"{path}: no lm-eval results_*.json here (run with --log_samples --output_path)")
    if task:
        for candidate in reversed(found):
            if task in (_read_json(candidate).get("results") or {}):
                return candidate
    return found[-1]


def _read_json(path: Path) -> dict:
    data = read_json(path, DEFAULT_LIMITS.but(file_bytes=64 * MiB, line_bytes=64 * MiB), what="results JSON")
    if not isinstance(data, dict):
        raise ConsistbenchError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _pick_task(tasks: list[str], wanted: str | None, where: Path) -> str:
    if wanted:
        if wanted not in tasks:
            raise ConsistbenchError(f"{where}: no task {wanted!r} (has {', '.join(sorted(tasks))})")
        return wanted
    if len(tasks) == 1:
        return tasks[0]
    if DEFAULT_TASK in tasks:
        return DEFAULT_TASK
    raise ConsistbenchError(f"{where}: several tasks ({', '.join(sorted(tasks))}); choose one with --task")


def _from_results(path: Path, task: str | None) -> Side:
    results = _read_json(path)
    if "results" not in results or "configs" not in results:
        raise ConsistbenchError(f"{path}: not an lm-eval results JSON (no 'results'/'configs')")
    task = _pick_task(list(results["results"]), task, path)
    date_id = path.stem[len("results_"):]
    # lm-eval writes .jsonl; a leaderboard submission ships the same file gzipped
    candidates = [path.parent / f"samples_{task}_{date_id}.jsonl{ext}" for ext in ("", ".gz")]
    samples = next((c for c in candidates if c.is_file()), None)
    if samples is None:
        raise ConsistbenchError(f"{path}: no samples file {candidates[0].name} (or .gz) beside it; the comparison "
                                "needs the responses (run lm-eval with --log_samples)")
    version = ((results["configs"].get(task) or {}).get("metadata") or {}).get("data_sha256")
    label = results.get("model_name") or path.parent.name
    return _from_samples(samples, task, version=version, label=label)


def _from_samples(path: Path, task: str | None, version: str | None = None, label: str | None = None) -> Side:
    samples = read_jsonl(path)
    items = items_from_samples(samples)
    if not items:
        raise ConsistbenchError(f"{path}: these lm-eval samples are not from a consistbench task")
    stem = path.name.removesuffix(".gz").removesuffix(".jsonl")
    if task is None:
        m = re.match(r"samples_(.+)_\d{4}-\d\d-\d\dT[\d\-.]+$", stem)
        task = m.group(1) if m else None
    if version is None:
        sibling = None
        m = re.search(r"_(\d{4}-\d\d-\d\dT[\d\-.]+)$", stem)
        if m and (path.parent / f"results_{m.group(1)}.json").is_file():
            sibling = _read_json(path.parent / f"results_{m.group(1)}.json")
        if sibling and task in sibling.get("configs", {}):
            version = (sibling["configs"][task].get("metadata") or {}).get("data_sha256")
            label = label or sibling.get("model_name")
        if version is None:
            rows = [parse_row(s["doc"], f"{path}:{s['__line__']} (doc)") for s in samples]
            version = _version_of_rows(rows)
    rows = [Scored(*it) for it in items]
    docs = {s["doc"]["id"]: (s["doc"]["group_id"], s["doc"]["variant_type"], s["doc"].get("question"),
                             s["doc"]["reference"]) for s in samples}
    if len(docs) != len(rows):
        raise ConsistbenchError(f"{path}: a row id appears twice")
    return Side(label or path.parent.name, str(path), rows, version, task, docs)


def _from_responses(path: Path) -> Side:
    rows = load_responses(path)
    docs = {r.id: (r.group_id, r.variant_type, r.question, r.reference) for r in rows}
    return Side(path.stem, str(path), to_scored(rows), _version_of_rows(rows), None, docs)


def load_side(path: str | Path, task: str | None = None) -> Side:
    """Read one side of a comparison, whatever kind of file or directory it is."""
    path = Path(path)
    if not path.exists():
        raise ConsistbenchError(f"{path}: no such file or directory")
    if path.is_dir():
        return _from_results(_results_file(path, task), task)
    if path.suffix == ".json":
        return _from_results(path, task)

    head = next((obj for _, obj in iter_jsonl(path)), {})
    if isinstance(head, dict) and "doc" in head and "filtered_resps" in head:
        return _from_samples(path, task)
    return _from_responses(path)


# ---------------------------------------------------------------------------------------------
# The comparison

def shared_rows(a: Side, b: Side) -> tuple[list, list, dict[str, int]]:
    """The rows both sides scored, restricted to groups whose original both sides have."""
    (rows_a, rows_b), info = shared_rows_of([a, b])
    return rows_a, rows_b, {"shared_rows": info["shared_rows"], "only_a_rows": info["only_rows"][0],
                            "only_b_rows": info["only_rows"][1]}


def shared_rows_of(sides: Sequence[Side]) -> tuple[list[list], dict]:
    """The rows every side scored, restricted to groups whose original every side has; each side's
    rows and ``{"shared_rows", "only_rows": [per side]}``. A row that differs between sides (question,
    reference, group or type) is refused."""
    first = sides[0]
    common = set.intersection(*(set(s.docs) for s in sides))
    for other in sides[1:]:
        for rid in sorted(common):
            if first.docs[rid] != other.docs[rid]:
                raise ConsistbenchError(f"row {rid!r} differs between {first.source} and {other.source} "
                                        "(question, reference, group or type): not the same data")
    with_original = {first.docs[r][0] for r in common if first.docs[r][1] == "original"}
    keep = {r for r in common if first.docs[r][0] in with_original}
    if not keep:
        names = " and ".join(s.source for s in sides) if len(sides) == 2 else f"the {len(sides)} runs"
        raise ConsistbenchError(f"{names} share no group: nothing to compare")
    rows = [[r for r in s.rows if r.id in keep] for s in sides]
    return rows, {"shared_rows": len(keep), "only_rows": [len(s.rows) - len(keep) for s in sides]}


def parse_margins(text: str) -> dict[str, float]:
    """Equivalence margins from ``0.03`` (every metric: key ``*``) or ``em=0.03,rs=0.05`` (per metric;
    a metric's margin also holds for its per-type rows). ConsistbenchError naming a bad entry."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in str(text).split(",")):
        name, _, value = part.rpartition("=")
        try:
            margin = float(value)
        except ValueError:
            margin = float("nan")
        if not part or not 0 < margin < float("inf") or (_ and not name.strip()):
            raise ConsistbenchError(f"equivalence margin {part!r}: give a positive number (0.03) or "
                                    "METRIC=NUMBER pairs separated by commas (em=0.03,rs=0.03)")
        out[name.strip() or "*"] = margin
    return out


def identical_responses(rows_a: list, rows_b: list) -> int:
    """How many rows got byte-identical responses from both sides (the same rule as
    ``leaderboard reproduce``'s exact matches): two runs of one model under different numerics
    differ answer by answer even when no metric moves."""
    resp_b = {r.id: r.response for r in rows_b}
    return sum(1 for r in rows_a if resp_b.get(r.id) == r.response)


def _arm(side: Side | Sequence[Side], label: str | None) -> tuple[list[Side], str]:
    runs = [side] if isinstance(side, Side) else list(side)
    if not runs:
        raise ConsistbenchError("each side of a comparison needs at least one run")
    labels = list(dict.fromkeys(r.label for r in runs))
    return runs, label or (labels[0] if len(labels) == 1 else " + ".join(labels))


def compare(a: Side | Sequence[Side], b: Side | Sequence[Side], settings=None, boot=None, *,
            margins: dict[str, float] | None = None, label_a: str | None = None,
            label_b: str | None = None) -> dict[str, Any]:
    """Paired bootstrap of A - B over the shared groups; refuses two data versions.

    ``a`` and ``b``: one run each, or several (an arm of training seeds: the metric is averaged over
    the arm's runs and the interval includes the seed variance). ``margins``: equivalence margins
    (:func:`parse_margins`) for the TOST. ``label_a``/``label_b`` name the arms.
    """
    runs_a, label_a = _arm(a, label_a)
    runs_b, label_b = _arm(b, label_b)
    every = [*runs_a, *runs_b]
    for other in every[1:]:
        if other.data_version != every[0].data_version:
            raise ConsistbenchError(f"different data versions: {every[0].source} was scored on "
                                    f"{every[0].data_version[:16]}..., {other.source} on {other.data_version[:16]}...; "
                                    "compare results on the same data version")
    settings = settings or ScoreSettings()
    boot = boot or BootstrapSettings()
    rows, info = shared_rows_of(every)
    for side, side_rows in zip(every, rows):
        check_cost(side_rows, side.source)  # before any metric runs
    stats = [group_stats(r, settings) for r in rows]
    result = paired_runs_bootstrap(stats[:len(runs_a)], stats[len(runs_a):], boot, margins)

    def arm(label, runs, offset):
        return {"label": label, "source": runs[0].source, "task": runs[0].task,
                "runs": [{"label": r.label, "source": r.source, "task": r.task, "only_rows": info["only_rows"][offset + i]}
                         for i, r in enumerate(runs)]}

    return {"a": arm(label_a, runs_a, 0), "b": arm(label_b, runs_b, len(runs_a)),
            "data_version": every[0].data_version, "score_settings": settings.describe(),
            "shared_rows": info["shared_rows"], "only_a_rows": info["only_rows"][0],
            "only_b_rows": info["only_rows"][len(runs_a)],
            "identical_responses": identical_responses(rows[0], rows[len(runs_a)]),
            "margins": dict(margins or {}), **result}
