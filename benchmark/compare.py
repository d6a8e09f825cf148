"""Paired comparison of two scored runs: is model A's score really different from model B's?

Each side is an lm-eval output (a results directory, a ``results_*.json`` or a
``samples_<task>_*.jsonl``, gzipped or not) or a scorer responses JSONL (data rows plus
``response``). Both must come from the same data version; the rows both sides scored are
re-scored with the same settings and compared by a paired bootstrap over their shared groups
(:func:`consistbench.benchmark.intervals.paired_bootstrap`): for every metric and variant type,
the difference A - B, its interval, a bootstrap p-value and whether the interval excludes 0.
The ``consistbench compare`` command (:mod:`consistbench.benchmark.compare_cli`) prints it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import read_jsonl
from consistbench.benchmark.intervals import BootstrapSettings, group_stats, items_from_samples, paired_bootstrap
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
    common = set(a.docs) & set(b.docs)
    for rid in sorted(common):
        if a.docs[rid] != b.docs[rid]:
            raise ConsistbenchError(f"row {rid!r} differs between {a.source} and {b.source} "
                                    "(question, reference, group or type): not the same data")
    with_original = {a.docs[r][0] for r in common if a.docs[r][1] == "original"}
    keep = {r for r in common if a.docs[r][0] in with_original}
    rows_a = [r for r in a.rows if r.id in keep]
    rows_b = [r for r in b.rows if r.id in keep]
    info = {"shared_rows": len(keep), "only_a_rows": len(a.rows) - len(keep), "only_b_rows": len(b.rows) - len(keep)}
    if not keep:
        raise ConsistbenchError(f"{a.source} and {b.source} share no group: nothing to compare")
    return rows_a, rows_b, info


def identical_responses(rows_a: list, rows_b: list) -> int:
    """How many rows got byte-identical responses from both sides (the same rule as
    ``leaderboard reproduce``'s exact matches): two runs of one model under different numerics
    differ answer by answer even when no metric moves."""
    resp_b = {r.id: r.response for r in rows_b}
    return sum(1 for r in rows_a if resp_b.get(r.id) == r.response)


def compare(a: Side, b: Side, settings=None, boot=None) -> dict[str, Any]:
    """Paired bootstrap of A - B over the shared groups; refuses two data versions."""
    if a.data_version != b.data_version:
        raise ConsistbenchError(f"different data versions: {a.source} was scored on {a.data_version[:16]}..., "
                                f"{b.source} on {b.data_version[:16]}...; compare results on the same data version")

    settings = settings or ScoreSettings()
    boot = boot or BootstrapSettings()
    rows_a, rows_b, info = shared_rows(a, b)
    check_cost(rows_a, a.source)  # before any metric runs
    check_cost(rows_b, b.source)
    result = paired_bootstrap(group_stats(rows_a, settings), group_stats(rows_b, settings), boot)
    return {"a": {"label": a.label, "source": a.source, "task": a.task},
            "b": {"label": b.label, "source": b.source, "task": b.task},
            "data_version": a.data_version, "score_settings": settings.describe(), **info,
            "identical_responses": identical_responses(rows_a, rows_b), **result}
