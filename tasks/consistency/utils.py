"""lm-eval glue for the consistbench tasks. Metric definitions live in ``consistbench.benchmark.metrics``.

- :func:`load` is the tasks' ``custom_dataset``: it reads ``data/test.jsonl`` beside this file
  (so it works from any working directory), checks that its checksum equals the
  ``data_sha256`` recorded in the task metadata (results on different data versions are never
  mixed), and keeps the subset a task asks for through ``dataset_kwargs``.
- :func:`process_results_*` return, for every metric, the item an aggregation needs to pair
  responses by ``group_id``: lm-eval gathers items from all ranks before aggregating, and the
  aggregations pair by group, never by position.
- Aggregations see no task config, so scoring settings come from the environment
  (``CONSISTBENCH_RS_THRESHOLD``, ``CONSISTBENCH_BS_MODEL``, ``CONSISTBENCH_BS_NUM_LAYERS``);
  defaults are those of ``consistbench.benchmark.metrics`` and are written into the task metadata.
- Standard errors: lm-eval fills ``<metric>_stderr`` only for its own aggregations (``mean``,
  ...) and writes ``N/A`` for a custom one. Each metric therefore has a companion metric
  ``<metric>_stderr`` (item: the row id) whose aggregation returns the standard error of the
  group bootstrap in :mod:`consistbench.benchmark.intervals`. lm-eval aggregates metrics in the order
  ``process_results`` returns them, so the companion runs after the metric and its value replaces
  the ``N/A`` under the same results key; lm-eval's table shows it in the stderr column.
  Settings: ``CONSISTBENCH_BOOTSTRAP_RESAMPLES`` (default 1000; 0 switches it off) and
  ``CONSISTBENCH_BOOTSTRAP_SEED`` (default 0).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE.parents[1]) not in sys.path:  # a plain `lm_eval --include_path tasks` from a checkout
    sys.path.insert(0, str(_HERE.parents[1]))

from consistbench.benchmark import metrics as M  # noqa: E402
from consistbench.benchmark.prompting import prompt_text  # noqa: E402
from consistbench.benchmark.variants import ALL_TYPES, VARIANT_TYPES  # noqa: E402

DATA_DIR = _HERE / "data"


# Raised by :func:`load`; defined in benchmark so that it is one class however lm-eval imports
# this file (it loads it from its path, not as ``consistbench.tasks.consistency.utils``).
from consistbench.benchmark.errors import DataVersionError  # noqa: E402


@functools.lru_cache(maxsize=2)
def _test_rows(path: str):
    from consistbench.benchmark.schema import data_checksum, load_data

    rows = load_data(path)
    return rows, data_checksum(rows)


def load(data_sha256: str | None = None, subset: str = "all", variant_types: list[str] | None = None,
         data_dir: str | None = None, retriever: str | None = None, retrieval_k: int = 5,
         data_version: str | None = None, **_ignored):
    """The test split as a ``datasets.DatasetDict`` with one ``test`` split.

    ``subset="mini"`` / ``"small"``: the whole groups listed in ``data/mini_groups.txt`` /
    ``data/small_groups.txt``.
    ``variant_types``: keep those variant rows plus the originals of groups that have one.
    ``data_version``: a frozen earlier version (``"v1"``: the files under ``data/v1/``) instead of
    the current data (``consistbench.benchmark.dataversions``).
    ``retriever``: end-to-end tasks; each context becomes the top ``retrieval_k`` passages
    precomputed under the version's ``retrieval/`` (``consistbench.benchmark.retrieval.e2e``).
    """
    import datasets

    from consistbench.benchmark import dataversions

    if data_version and data_dir:
        raise ValueError("give data_version or data_dir, not both")
    if data_version:
        base = dataversions.by_name(data_version).directory
    else:
        base = DATA_DIR / data_dir if data_dir else DATA_DIR
    rows, checksum = _test_rows(str(base / "test.jsonl"))
    if data_sha256 and checksum != data_sha256:
        raise DataVersionError(f"{base / 'test.jsonl'} has checksum {checksum[:16]}..., but the task metadata "
                               f"expects {data_sha256[:16]}...: the data changed; rebuild it or bump the task")
    if subset in dataversions.SUBSET_FILES:
        path = base / dataversions.SUBSET_FILES[subset]
        if not path.is_file():
            raise DataVersionError(f"{path}: missing; run `consistbench data build`")
        keep = set(path.read_text().split())
        rows = [r for r in rows if r.group_id in keep]
    elif subset != "all":
        raise ValueError(f"unknown subset {subset!r}")
    if variant_types:
        groups = {r.group_id for r in rows if r.variant_type in variant_types}
        rows = [r for r in rows if r.group_id in groups and (r.variant_type == "original" or r.variant_type in variant_types)]
    records = [r.to_json() for r in rows]
    if retriever:
        from consistbench.benchmark.retrieval.e2e import apply_retrieval

        records = apply_retrieval(records, retriever, retrieval_k, checksum, base / "retrieval")
    for rec in records:  # keep the arrow schema uniform whatever extra fields a row carries
        rec["origin"] = str(rec.get("origin", ""))
        rec["doc_kind"] = str(rec.get("doc_kind", ""))
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(records)})


def doc_to_text(doc: dict) -> str:
    return prompt_text(doc["context"], doc["question"])


def _item(doc: dict, results: list) -> tuple:
    response = results[0] if results else ""
    return (doc["id"], doc["group_id"], doc["variant_type"], response if isinstance(response, str) else str(response),
            doc["reference"])


OVERALL = M.METRICS
PER_TYPE = tuple(f"{m}_{t}" for m in M.ACCURACY_METRICS for t in ALL_TYPES) + tuple(
    f"{m}_{t}" for m in M.CONSISTENCY_METRICS for t in VARIANT_TYPES)


def process_results_overall(doc: dict, results: list) -> dict:
    item = _item(doc, results)
    return {name: item for name in OVERALL} | {f"{name}_stderr": doc["id"] for name in OVERALL}


def process_results_all(doc: dict, results: list) -> dict:
    item = _item(doc, results)
    return {name: item for name in OVERALL + PER_TYPE} | {f"{name}_stderr": doc["id"] for name in OVERALL + PER_TYPE}


def settings_from_env() -> M.ScoreSettings:
    layers = os.environ.get("CONSISTBENCH_BS_NUM_LAYERS")
    return M.ScoreSettings(
        rs_threshold=float(os.environ.get("CONSISTBENCH_RS_THRESHOLD", M.RS_THRESHOLD)),
        bertscore=M.BertScoreConfig(model_type=os.environ.get("CONSISTBENCH_BS_MODEL") or None,
                                    num_layers=int(layers) if layers else None))


@functools.lru_cache(maxsize=4)
def _score(items: tuple) -> dict:
    # every metric of a task receives the same items; score them all once
    rows = [M.Scored(*it) for it in items]
    return M.compute_all(rows, settings_from_env())


_ITEMS_BY_IDS: dict[tuple, tuple] = {}  # sorted row ids -> the items a metric aggregation received


def _aggregation(name: str):
    def aggregate(items: list) -> float:
        items = tuple(tuple(it) for it in items)
        ids = tuple(sorted(it[0] for it in items))
        if ids not in _ITEMS_BY_IDS and len(_ITEMS_BY_IDS) >= 8:
            _ITEMS_BY_IDS.pop(next(iter(_ITEMS_BY_IDS)))
        _ITEMS_BY_IDS[ids] = items
        value = _score(items).get(name)
        return float("nan") if value is None else value

    aggregate.__name__ = f"agg_{name}"
    aggregate.__doc__ = f"The consistbench metric {name!r} over all gathered items (see benchmark.metrics)."
    return aggregate


def intervals_for(items) -> dict | None:
    """Group-bootstrap intervals of every metric for lm-eval items (None when switched off)."""
    from consistbench.benchmark import intervals

    boot = intervals.settings_from_env()
    return None if boot is None else intervals.bootstrap_items(items, settings_from_env(), boot)


def _stderr_aggregation(name: str):
    def aggregate(ids: list) -> float:
        # runs after the metric's own aggregation, which left the full items under these row ids
        items = _ITEMS_BY_IDS.get(tuple(sorted(str(i) for i in ids)))
        result = intervals_for(items) if items else None
        value = (result or {}).get("metrics", {}).get(name, {}).get("stderr")
        return float("nan") if value is None else float(value)

    aggregate.__name__ = f"agg_{name}_stderr"
    aggregate.__doc__ = f"Standard error of {name!r} from the group bootstrap (benchmark.intervals)."
    return aggregate


for _name in OVERALL + PER_TYPE:
    globals()[f"agg_{_name}"] = _aggregation(_name)
    globals()[f"agg_{_name}_stderr"] = _stderr_aggregation(_name)
