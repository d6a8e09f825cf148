"""The documents of a consistbench lm-eval task: the shipped test split or a subset of it.

One definition for everyone who needs a task's documents in lm-eval's order: the lm-eval glue
(``tasks/consistency/utils.py``, whose ``load`` wraps :func:`task_records` in a ``datasets``
object), the leaderboard's rescoring and ``consistbench compare``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from consistbench.benchmark.errors import DataVersionError
from consistbench.benchmark.intervals import BootstrapSettings
from consistbench.benchmark.paths import DATA_DIR

SUBSETS = ("all", "mini")
# task metadata keys that change a score (ScoreSettings.metadata() and bootstrap_metadata())
SCORING_KEYS = ("rs_threshold", "bs_model", "bs_num_layers")


@functools.lru_cache(maxsize=4)
def test_rows(path: str):
    """The rows of a test split file and their checksum (the data version), read once per process."""
    from consistbench.benchmark.schema import data_checksum, load_data

    rows = load_data(path)
    return rows, data_checksum(rows)


def task_records(data_sha256: str | None = None, subset: str = "all", variant_types: list[str] | None = None,
                 data_dir: str | Path | None = None, retriever: str | None = None,
                 retrieval_k: int = 5) -> list[dict]:
    """A task's documents as JSON objects, in the task's order.

    ``data_sha256``: the data version the task was made for; any other data is refused
    (:class:`DataVersionError`), so results on different versions are never mixed.
    ``subset="mini"``: the whole groups listed in ``mini_groups.txt``.
    ``variant_types``: keep those variant rows plus the originals of groups that have one.
    ``retriever``: end-to-end tasks; each context becomes the top ``retrieval_k`` passages
    precomputed under ``data/retrieval/`` (:mod:`consistbench.benchmark.retrieval.e2e`).
    """
    base = Path(data_dir) if data_dir else DATA_DIR
    rows, checksum = test_rows(str(base / "test.jsonl"))
    if data_sha256 and checksum != data_sha256:
        raise DataVersionError(f"{base / 'test.jsonl'} has checksum {checksum[:16]}..., but the task metadata "
                               f"expects {data_sha256[:16]}...: the data changed; rebuild it or bump the task")
    if subset == "mini":
        keep = set((base / "mini_groups.txt").read_text().split())
        rows = [r for r in rows if r.group_id in keep]
    elif subset != "all":
        raise ValueError(f"unknown subset {subset!r}; expected one of {', '.join(SUBSETS)}")
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
    return records


def scoring_field(settings, boot) -> str:
    """The settings every document of a run carries to the metric aggregations (a JSON string).

    lm-eval's aggregations see only the items ``process_results`` returns, never the task's
    config; so ``load`` stamps the settings from the task metadata onto each document, and the
    items carry them on. Only settings that differ from the defaults are written (an empty
    string for a default run), which keeps the samples JSONL small; the results JSON records the
    full settings either way.
    """
    from consistbench.benchmark.intervals import bootstrap_metadata
    from consistbench.benchmark.metrics import ScoreSettings

    default = ScoreSettings().metadata() | bootstrap_metadata(BootstrapSettings())
    given = settings.metadata() | bootstrap_metadata(boot)
    changed = {k: v for k, v in given.items() if v != default[k]}
    return json.dumps(changed, sort_keys=True) if changed else ""


def settings_of_field(text: str):
    """``(ScoreSettings, BootstrapSettings | None)`` from :func:`scoring_field`'s JSON."""
    from consistbench.benchmark.intervals import bootstrap_from_metadata
    from consistbench.benchmark.metrics import ScoreSettings

    meta = json.loads(text) if text else {}
    return ScoreSettings.from_metadata(meta), bootstrap_from_metadata(meta)
