"""The documents of a consistbench lm-eval task: the shipped test split, a subset of it, or the
robust families' rows built from it (``data/robust/``).

One definition for everyone who needs a task's documents in lm-eval's order: the lm-eval glue
(``tasks/consistency/utils.py``, whose ``load`` wraps :func:`task_records` in a ``datasets``
object), the leaderboard's rescoring and ``consistbench compare``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from consistbench.benchmark import dataversions
from consistbench.benchmark.errors import ConsistbenchError, DataVersionError
from consistbench.benchmark.fileio import file_sha256
from consistbench.benchmark.intervals import BootstrapSettings, bootstrap_from_metadata, bootstrap_metadata
from consistbench.benchmark.metrics import ScoreSettings
from consistbench.benchmark.paths import DATA_DIR
from consistbench.benchmark.retrieval.e2e import apply_retrieval
from consistbench.benchmark.robustbuild import load_manifest
from consistbench.benchmark.schema import data_checksum, load_data
from consistbench.benchmark.variants import ROBUST_TYPES
from consistbench.benchmark.variants import template as T

SUBSETS = ("all", "mini", "small")
# task metadata keys that change a score (ScoreSettings.metadata() and bootstrap_metadata())
SCORING_KEYS = ("rs_threshold", "bs_model", "bs_num_layers")


def test_rows(path: str):
    """The rows of a test split file and their checksum (the data version), read once per process
    and file version (a file rewritten in place, by a rebuild, is read again)."""
    try:
        st = Path(path).stat()
    except OSError:  # load_data names the missing file
        return _rows_of(str(path), 0, -1)
    return _rows_of(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _rows_of(path: str, mtime_ns: int, size: int):
    rows = load_data(path)
    return rows, data_checksum(rows)


def task_records(data_sha256: str | None = None, subset: str = "all", variant_types: list[str] | None = None,
                 data_dir: str | Path | None = None, retriever: str | None = None,
                 retrieval_k: int = 5, robust: str | None = None, templates_file: str | Path | None = None,
                 data_version: str | None = None, split: str = "test") -> list[dict]:
    """A task's documents as JSON objects, in the task's order.

    ``data_sha256``: the data version the task was made for; any other data is refused
    (:class:`DataVersionError`), so results on different versions are never mixed.
    ``split``: ``test`` (every benchmark task) or ``dev`` (``consistency_dev``, for choosing settings
    without looking at test; checked against the dev checksum of the same data version).
    ``subset="mini"`` / ``"small"``: the whole groups listed in ``mini_groups.txt`` / ``small_groups.txt``.
    ``data_version``: a frozen earlier version (``"v1"``: the files under ``data/v1/``) instead of
    the current data (:mod:`consistbench.benchmark.dataversions`); ``data_dir``: any other folder.
    ``variant_types``: keep those variant rows plus the originals of groups that have one.
    ``retriever``: end-to-end tasks; each context becomes the top ``retrieval_k`` passages
    precomputed under ``data/retrieval/`` (:mod:`consistbench.benchmark.retrieval.e2e`).
    ``robust``: a robust family (``typo``, ``surface``, ``template``): the rows of
    ``data/robust/<family>.jsonl`` instead of the test split's, which must have been built from
    this test split (:func:`robust_family_rows`). ``templates_file``: for ``template``, a
    user's template set instead of the shipped one (:func:`template_records`).
    """
    if data_version and data_dir:
        raise ValueError("give data_version or data_dir, not both")
    base = dataversions.by_name(data_version).directory if data_version else (Path(data_dir) if data_dir else DATA_DIR)
    if split not in ("test", "dev"):
        raise ValueError(f"unknown split {split!r}; expected test or dev")
    if split == "dev":
        rows, dev_checksum = test_rows(str(base / "dev.jsonl"))
        expected = dataversions.by_sha256(data_sha256).checksums["dev"]["sha256"] if data_sha256 else None
        if expected and dev_checksum != expected:
            raise DataVersionError(f"{base / 'dev.jsonl'} has checksum {dev_checksum[:16]}..., but data version "
                                   f"{data_sha256[:16]}... has dev {expected[:16]}...: the data changed")
        if subset != "all" or robust or retriever:
            raise ValueError("the dev split has no subsets, robust rows or precomputed retrieval")
        rows, checksum = rows, dev_checksum
        data_sha256 = None  # checked above, against the dev split's own checksum
    else:
        rows, checksum = test_rows(str(base / "test.jsonl"))
    if data_sha256 and checksum != data_sha256:
        raise DataVersionError(f"{base / 'test.jsonl'} has checksum {checksum[:16]}..., but the task metadata "
                               f"expects {data_sha256[:16]}...: the data changed; rebuild it or bump the task")
    manifest = None
    if robust:
        rows, manifest = robust_family_rows(base, robust, checksum)
    if subset in dataversions.SUBSET_FILES:
        path = base / dataversions.SUBSET_FILES[subset]
        if not path.is_file():
            raise DataVersionError(f"{path}: missing; run `consistbench data build`")
        keep = set(path.read_text().split())
        rows = [r for r in rows if r.group_id in keep]
    elif subset != "all":
        raise ValueError(f"unknown subset {subset!r}; expected one of {', '.join(SUBSETS)}")
    if variant_types:
        groups = {r.group_id for r in rows if r.variant_type in variant_types}
        rows = [r for r in rows if r.group_id in groups and (r.variant_type == "original" or r.variant_type in variant_types)]
    records = [r.to_json() for r in rows]
    if retriever:
        records = apply_retrieval(records, retriever, retrieval_k, checksum, base / "retrieval")
    for rec in records:  # keep the arrow schema uniform whatever extra fields a row carries
        rec["origin"] = str(rec.get("origin", ""))
        rec["doc_kind"] = str(rec.get("doc_kind", ""))
    if robust:
        for rec in records:  # datasets takes its columns from the first row (an original, without one)
            gen = rec.get("generator")
            rec["generator"] = json.dumps(gen, sort_keys=True, ensure_ascii=False) if gen else ""
    if robust == "template":
        records = template_records(records, manifest, base / "robust", templates_file)
    return records


def robust_family_rows(base: Path, family: str, test_checksum: str):
    """The rows of ``base/robust/<family>.jsonl`` and the folder's ``versions.json``.

    Refused (:class:`DataVersionError`) unless the rows were built from the test split with
    checksum ``test_checksum`` and the file is the one the build wrote (its checksum).
    """
    if family not in ROBUST_TYPES:
        raise ConsistbenchError(f"unknown robust family {family!r} (expected one of {', '.join(ROBUST_TYPES)})")
    folder = base / "robust"
    manifest = load_manifest(folder)
    built_from = str(manifest["source"]["sha256"])
    if built_from != test_checksum:
        raise DataVersionError(f"{folder}: the robust rows were built from test split {built_from[:16]}..., but "
                               f"{base / 'test.jsonl'} is {test_checksum[:16]}...: rebuild them with "
                               "`consistbench data build-robust`")
    path = folder / f"{family}.jsonl"
    if not path.is_file():
        raise DataVersionError(f"{path}: missing; rerun `consistbench data build-robust`")
    checksum = file_sha256(path)
    expected = str((manifest["families"].get(family) or {}).get("file_sha256"))
    if checksum != expected:
        raise DataVersionError(f"{path} has checksum {checksum[:16]}..., but {folder / 'versions.json'} records "
                               f"{expected[:16]}...: the file changed after the build; rerun "
                               "`consistbench data build-robust`")
    rows, _ = test_rows(str(path))
    return rows, manifest


def template_records(records: list[dict], manifest: dict, folder: Path, templates_file: str | Path | None = None):
    """Give every document of the template task its prompt: ``template_id``, ``prompt_template``
    (the format string; empty for the default prompt) and ``system`` (the preamble, or empty).

    Shipped set (no ``templates_file``): each variant keeps the template the build assigned; the
    set must be the one the build used (its checksum in ``versions.json``). A user's set: the
    variants are assigned the user's templates afresh, by the same seeded rule
    (:func:`consistbench.benchmark.variants.template.assign_templates`).
    """
    if templates_file:
        templates = T.load_templates(templates_file)
        groups = [r["group_id"] for r in records if r["variant_type"] == "template"]
        assigned = T.assign_templates(groups, [t.id for t in templates], int(manifest.get("seed", 0)))
        for rec in records:
            if rec["variant_type"] == "template":
                rec["template_id"] = assigned[rec["group_id"]]
    else:  # the set in the task folder: tasks/consistency/templates.yaml, above data/robust/ or,
        # for a frozen version, above data/<version>/robust/ (the set is checked by its checksum below)
        near = [folder.parent.parent / "templates.yaml", folder.parent.parent.parent / "templates.yaml"]
        shipped = next((p for p in near if p.is_file()), near[0])
        templates = T.load_templates(shipped)
        want = (manifest.get("templates") or {}).get("sha256")
        if T.templates_checksum(templates) != want:
            raise DataVersionError(f"{shipped} differs from the template set the robust rows "
                                   f"were built with ({str(want)[:16]}..., {folder / 'versions.json'}): rerun "
                                   "`consistbench data build-robust`")
    by_id = {t.id: t for t in templates}
    for rec in records:
        tid = rec.get("template_id") or T.DEFAULT_ID
        chosen = None if rec["variant_type"] == "original" else by_id.get(tid)
        if rec["variant_type"] != "original" and chosen is None:
            raise DataVersionError(f"{folder / 'template.jsonl'}: row {rec['id']} names template {tid!r}, which the "
                                   "template set does not have; rerun `consistbench data build-robust`")
        rec["template_id"] = T.DEFAULT_ID if chosen is None else chosen.id
        rec["prompt_template"] = "" if chosen is None else chosen.template
        rec["system"] = T.system_field(chosen)
    return records


def scoring_field(settings, boot) -> str:
    """The settings every document of a run carries to the metric aggregations (a JSON string).

    lm-eval's aggregations see only the items ``process_results`` returns, never the task's
    config; so ``load`` stamps the settings from the task metadata onto each document, and the
    items carry them on. Only settings that differ from the defaults are written (an empty
    string for a default run), which keeps the samples JSONL small; the results JSON records the
    full settings either way.
    """
    default = ScoreSettings().metadata() | bootstrap_metadata(BootstrapSettings())
    given = settings.metadata() | bootstrap_metadata(boot)
    changed = {k: v for k, v in given.items() if v != default[k]}
    return json.dumps(changed, sort_keys=True) if changed else ""


def settings_of_field(text: str):
    """``(ScoreSettings, BootstrapSettings | None)`` from :func:`scoring_field`'s JSON."""
    meta = json.loads(text) if text else {}
    return ScoreSettings.from_metadata(meta), bootstrap_from_metadata(meta)
