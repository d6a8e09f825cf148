"""lm-eval glue for the consistbench tasks. Metric definitions live in ``consistbench.benchmark.metrics``.

- :func:`load` is the tasks' ``custom_dataset``: the task's documents from
  :func:`consistbench.benchmark.taskdata.task_records` (the checksum of ``data/test.jsonl`` must
  equal the ``data_sha256`` of the task metadata, so results on different data versions are never
  mixed), as a ``datasets.DatasetDict`` with one ``test`` split.
- Scoring settings come from the task metadata, never from the environment: the YAML holds the
  defaults (``rs_threshold``, ``bs_model``, ``bs_num_layers``, ``bootstrap_resamples``,
  ``bootstrap_seed``), ``lm_eval --metadata '{...}'`` or ``consistbench eval --rs-threshold ...``
  override them, and lm-eval records the merged metadata in the results JSON. lm-eval passes the
  metadata to :func:`load` but not to aggregations, so :func:`load` stamps the settings onto every
  document (the ``scoring`` field) and the items below carry them to the aggregations.
- :func:`process_results_*` return, for every metric, the item an aggregation needs to pair
  responses by ``group_id``: lm-eval gathers items from all ranks before aggregating, and the
  aggregations pair by group, never by position.
- Standard errors: lm-eval fills ``<metric>_stderr`` only for its own aggregations (``mean``,
  ...) and writes ``N/A`` for a custom one. Each metric therefore has a companion metric
  ``<metric>_stderr`` (item: the row id) whose aggregation returns the standard error of the
  group bootstrap in :mod:`consistbench.benchmark.intervals`. lm-eval aggregates metrics in the
  order ``process_results`` returns them, so the companion runs after the metric and its value
  replaces the ``N/A`` under the same results key; lm-eval's table shows it in the stderr column.
"""

from __future__ import annotations

import functools

from consistbench.benchmark import intervals
from consistbench.benchmark import metrics as M
from consistbench.benchmark.intervals import bootstrap_from_metadata
from consistbench.benchmark.prompting import prompt_text
from consistbench.benchmark.taskdata import scoring_field, settings_of_field, task_records
from consistbench.benchmark.variants.template import render_doc
from consistbench.benchmark.variants import ALL_TYPES, VARIANT_TYPES


def load(data_sha256: str | None = None, subset: str = "all", variant_types: list[str] | None = None,
         data_dir: str | None = None, retriever: str | None = None, retrieval_k: int = 5, robust: str | None = None,
         templates_file: str | None = None, data_version: str | None = None, split: str = "test", **metadata):
    """The task's documents as a ``datasets.DatasetDict`` with one ``test`` split.

    Called by lm-eval with the task metadata and ``dataset_kwargs`` as keyword arguments; see
    :func:`consistbench.benchmark.taskdata.task_records` for the data arguments (``robust``: a
    robust family's rows; ``templates_file``, from the metadata: a user's template set for
    ``consistency_template``). The scoring settings in ``metadata`` are stamped onto every
    document (``scoring``).
    """
    import datasets

    scoring = scoring_field(M.ScoreSettings.from_metadata(metadata), bootstrap_from_metadata(metadata))
    records = task_records(data_sha256=data_sha256, subset=subset, variant_types=variant_types, data_dir=data_dir,
                           retriever=retriever, retrieval_k=retrieval_k, robust=robust,
                           templates_file=templates_file if robust == "template" else None,
                           data_version=data_version, split=split)
    for rec in records:
        rec["scoring"] = scoring
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(records)})


def doc_to_text(doc: dict) -> str:
    return prompt_text(doc["context"], doc["question"])


def doc_to_text_templated(doc: dict) -> str:
    """``consistency_template``: each document under its own template (originals: the default prompt).

    This is the user turn. The template's system-style preamble is the document's ``system``
    field, which the task YAML names as lm-eval's ``description``: the system message under a
    chat template, plain text before this prompt without one.
    """
    return render_doc(doc)


def _item(doc: dict, results: list) -> tuple:
    response = results[0] if results else ""
    return (doc["id"], doc["group_id"], doc["variant_type"], response if isinstance(response, str) else str(response),
            doc["reference"], doc.get("scoring", ""))


def _split(items: tuple) -> tuple[tuple, tuple]:
    """Items -> (scored 5-tuples, the one scoring field they all carry)."""
    fields = {it[5] if len(it) > 5 else "" for it in items}
    if len(fields) > 1:
        raise ValueError("documents of one task carry different scoring settings")
    return tuple(tuple(it[:5]) for it in items), (fields.pop() if fields else "")


OVERALL = M.METRICS
PER_TYPE = tuple(f"{m}_{t}" for m in M.ACCURACY_METRICS for t in ALL_TYPES) + tuple(
    f"{m}_{t}" for m in M.CONSISTENCY_METRICS for t in VARIANT_TYPES)


def process_results_overall(doc: dict, results: list) -> dict:
    item = _item(doc, results)
    return {name: item for name in OVERALL} | {f"{name}_stderr": doc["id"] for name in OVERALL}


def process_results_all(doc: dict, results: list) -> dict:
    item = _item(doc, results)
    return {name: item for name in OVERALL + PER_TYPE} | {f"{name}_stderr": doc["id"] for name in OVERALL + PER_TYPE}


@functools.lru_cache(maxsize=4)
def _score(items: tuple, scoring: str) -> dict:
    # every metric of a task receives the same items; score them all once
    settings, _ = settings_of_field(scoring)
    return M.compute_all([M.Scored(*it) for it in items], settings)


_ITEMS_BY_IDS: dict[tuple, tuple] = {}  # sorted row ids -> the items a metric aggregation received


def _aggregation(name: str):
    def aggregate(items: list) -> float:
        items = tuple(tuple(it) for it in items)
        ids = tuple(sorted(it[0] for it in items))
        if ids not in _ITEMS_BY_IDS and len(_ITEMS_BY_IDS) >= 8:
            _ITEMS_BY_IDS.pop(next(iter(_ITEMS_BY_IDS)))
        _ITEMS_BY_IDS[ids] = items
        value = _score(*_split(items)).get(name)
        return float("nan") if value is None else value

    aggregate.__name__ = f"agg_{name}"
    aggregate.__doc__ = f"The consistbench metric {name!r} over all gathered items (see benchmark.metrics)."
    return aggregate


def intervals_for(items) -> dict | None:
    """Group-bootstrap intervals of every metric for lm-eval items (None when switched off)."""
    scored, scoring = _split(tuple(tuple(it) for it in items))
    settings, boot = settings_of_field(scoring)
    return None if boot is None else intervals.bootstrap_items(scored, settings, boot)


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
