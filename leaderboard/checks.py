"""The checks on a submission's files, one function per file: each refuses the first problem
with one line naming the file (:func:`~consistbench.leaderboard.limits.fail`).

* :func:`read_metadata`: ``metadata.json`` is well-formed JSON and matches
  :class:`~consistbench.leaderboard.schema.SubmissionMetadata`;
* :func:`results_task` and :func:`check_results`: the results JSON is lm-eval's, for exactly one
  leaderboard track, on the shipped data and task version, zero-shot, unlimited, with the task's
  own generation and scoring settings; :func:`robust_samples_files` and
  :func:`check_shipped_templates`: the robust-family tasks beside it;
* :func:`read_samples`: the samples JSONL answers every document of the task exactly once, each
  sample with the shipped document, its position, exactly that document's prompt
  (:mod:`consistbench.leaderboard.prompts`), the task's generation settings and one response
  that its metric items carry;
* :func:`read_reproduction`: a reproduction record, when present, is for exactly these files and
  follows from its own plan (:mod:`consistbench.leaderboard.sampling`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from consistbench.benchmark import untrusted
from consistbench.benchmark.errors import validation_message
from consistbench.benchmark.metrics import MAX_TEXT_CHARS
from consistbench.benchmark.taskdata import SCORING_KEYS
from consistbench.leaderboard.limits import LIMITS, check_size, fail, inside, load_json, read_limits
from consistbench.leaderboard.prompts import PromptFormat, logged_prompt, prompt_parts, text_sha256
from consistbench.leaderboard.sampling import coverage, groups_for, plan_for, rows_of, sample_seed, verdict_of
from consistbench.leaderboard.schema import METADATA_FILE, REPRODUCTION_FILE, ReproductionRecord, SubmissionMetadata
from consistbench.leaderboard.tracks import ROBUST_TASKS, TRACKS, TaskSpec, robust_tasks_in

DOC_FIELDS = ("id", "group_id", "variant_type", "question", "context", "reference")
# how results made by consistbench 0.1 recorded the default BERTScore encoder (now ``null``)
LEGACY_DEFAULT_BS_MODEL = "sentence-transformers/all-MiniLM-L6-v2 (embedded), num_layers 6"


# ---------------------------------------------------------------------------------------------
# metadata.json

def read_metadata(directory: Path) -> SubmissionMetadata:
    """The submission's ``metadata.json``, checked against the schema."""
    path = directory / METADATA_FILE
    if path.is_symlink():
        fail(f"{path}: is a symbolic link (a submission holds plain files, not links)")
    if not path.is_file():
        fail(f"{path}: missing (every submission has a {METADATA_FILE}; see docs/LEADERBOARD.md)")
    check_size(path, LIMITS["metadata"], "metadata")
    raw = load_json(path, "metadata", "metadata")
    if not isinstance(raw, dict):
        fail(f"{path}: expected a JSON object, got {type(raw).__name__}")
    files = raw.get("files")
    if isinstance(files, dict):  # name the traversal plainly before the schema's generic message
        for key in ("results", "samples"):
            if isinstance(files.get(key), str):
                inside(directory, files[key], key)
    try:
        return SubmissionMetadata.model_validate(raw)
    except ValidationError as exc:
        fail(validation_message(exc, str(path)))


def check_parameters(directory: Path, meta: SubmissionMetadata, res: dict) -> None:
    """``model.parameters`` equals the parameter count lm-eval recorded for the model, if any."""
    recorded_params = (res.get("config") or {}).get("model_num_parameters")
    if isinstance(recorded_params, int) and recorded_params > 0 and recorded_params != meta.model.parameters:
        fail(f"{directory / METADATA_FILE}: model.parameters {meta.model.parameters} differs from the "
             f"{recorded_params} lm-eval recorded for the model")


# ---------------------------------------------------------------------------------------------
# The results JSON

def results_task(path: Path, task: str | None) -> tuple[dict, str]:
    """The results JSON and its one task, which must be a leaderboard track (``task`` if given);
    the track's robust-family tasks ride along."""
    res = load_json(path, "results JSON", "results")
    if not isinstance(res, dict) or not isinstance(res.get("results"), dict) or not isinstance(res.get("configs"), dict):
        fail(f"{path}: not an lm-eval results JSON (no 'results' and 'configs' objects)")
    tasks = sorted(set(res["results"]) - set(robust_tasks_in(res)))
    allowed = [task] if task else list(TRACKS)
    if len(tasks) != 1 or tasks[0] not in allowed:
        fail(f"{path}: holds tasks {tasks}; a leaderboard submission holds exactly one task, "
             + (f"{task!r}" if task else "one of " + ", ".join(map(repr, TRACKS))))
    return res, tasks[0]


def gen_kwargs_mismatch(got: Any, want: dict) -> str | None:
    """None when ``got`` is exactly the task's generation settings; else what differs."""
    if not isinstance(got, dict):
        return "no generation settings"
    for key in sorted(set(want) | set(got)):
        if key not in got:
            return f"{key} missing (the task sets {key}={want[key]!r})"
        if key not in want:
            return f"extra setting {key}={got[key]!r}"
        if got[key] != want[key] or isinstance(got[key], bool) != isinstance(want[key], bool):
            return f"{key}={got[key]!r} instead of {want[key]!r}"
    return None


def check_results(path: Path, res: dict, spec: TaskSpec) -> dict:
    """The results JSON's run of ``spec``: data and task version, zero-shot, no limit, every
    document, the task's generation settings and the default scoring settings."""
    cfg = res["configs"].get(spec.name)
    if not isinstance(cfg, dict):
        fail(f"{path}: no configs.{spec.name} entry")
    recorded = (cfg.get("metadata") or {}).get("data_sha256")
    if recorded is None:
        fail(f"{path}: no data version (configs.{spec.name}.metadata.data_sha256): "
             "was it produced with the consistbench tasks?")
    if recorded != spec.data_sha256:
        fail(f"{path}: wrong data version: the results were produced on data {str(recorded)[:16]}... but the "
             f"shipped test split is {spec.data_sha256[:16]}...; re-run the evaluation on the current data")
    version = (res.get("versions") or {}).get(spec.name)
    if version != spec.version:
        fail(f"{path}: task version {version!r} differs from the shipped task's version {spec.version!r}")
    shots = (res.get("n-shot") or {}).get(spec.name, 0)
    if shots not in (0, None) or cfg.get("num_fewshot") not in (0, None):
        fail(f"{path}: run with {shots or cfg.get('num_fewshot')} few-shot examples; the benchmark is zero-shot")
    run = res.get("config")
    if not isinstance(run, dict):
        fail(f"{path}: no 'config' object (lm-eval records the run's settings there)")
    if run.get("limit") is not None:
        fail(f"{path}: config.limit is {run['limit']!r}: the run was limited to part of the task; a submission "
             "answers every document (run without --limit)")
    counts = (res.get("n-samples") or {}).get(spec.name)
    if not isinstance(counts, dict):
        fail(f"{path}: no n-samples.{spec.name} entry (lm-eval records how many documents it ran)")
    for key in ("original", "effective"):
        if counts.get(key) != len(spec.docs):
            fail(f"{path}: n-samples.{spec.name}.{key} is {counts.get(key)!r}, the task has {len(spec.docs)} "
                 "documents (a limited or partial run)")
    if run.get("gen_kwargs") not in (None, {}, ""):
        fail(f"{path}: config.gen_kwargs is {run['gen_kwargs']!r}: the run overrode the task's generation "
             "settings (run without --gen_kwargs)")
    bad = gen_kwargs_mismatch(cfg.get("generation_kwargs"), spec.generation_kwargs)
    if bad:
        fail(f"{path}: configs.{spec.name}.generation_kwargs differ from the task's ({bad})")
    meta = cfg.get("metadata") or {}
    for key in SCORING_KEYS:  # absent in results made before the settings became task metadata: the defaults
        value = meta.get(key)
        if key == "bs_model" and value == LEGACY_DEFAULT_BS_MODEL:
            value = None  # the default encoder, as results of consistbench 0.1 spelled it
        if key in meta and value != spec.config.get("metadata", {}).get(key):
            fail(f"{path}: configs.{spec.name}.metadata.{key} is {meta[key]!r}, not the benchmark's "
                 f"{spec.config.get('metadata', {}).get(key)!r}: leaderboard entries use the default scoring settings")
    return res


def robust_samples_files(directory: Path, meta: SubmissionMetadata, res: dict, results_path: Path,
                         track: str) -> dict[str, str]:
    """``{robust task: samples file}`` for every robust-family task the results JSON holds: each
    goes with the track, and the results JSON and ``files.robust_samples`` name the same tasks."""
    present = robust_tasks_in(res)
    files = dict(meta.files.robust_samples or {})
    allowed = ROBUST_TASKS.get(track, {})
    for task in present:
        if task not in allowed.values():
            fail(f"{results_path}: robust task {task!r} does not go with track {track!r} (expected "
                 + ", ".join(map(repr, allowed.values())) + ")")
        if task not in files:
            fail(f"{directory / METADATA_FILE}: files.robust_samples names no samples file for {task!r}, which the "
                 "results JSON holds")
    for task in sorted(files):
        if task not in present:
            fail(f"{directory / METADATA_FILE}: files.robust_samples names {task!r}, which the results JSON "
                 "does not hold")
    return {task: files[task] for task in present}


def check_shipped_templates(path: Path, res: dict, task: str) -> None:
    """A robust-family task ran on the shipped template set (not a user's ``templates_file``)."""
    if ((res["configs"].get(task) or {}).get("metadata") or {}).get("templates_file"):
        fail(f"{path}: run with a user's template set (templates_file); the leaderboard takes the "
             "shipped set only")


# ---------------------------------------------------------------------------------------------
# The samples JSONL

def read_samples(path: Path, spec: TaskSpec, prompts: PromptFormat) -> dict[str, str]:
    """Check every sample against the shipped documents; return {doc id: response}."""
    parts_of = prompt_parts(spec)
    index = {doc["id"]: i for i, doc in enumerate(spec.docs)}
    responses: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, sample in untrusted.iter_jsonl(path, read_limits("samples"), what="samples file",
                                               follow_symlinks=False):
        where = f"{path.name}:{lineno}"
        if not isinstance(sample, dict) or not isinstance(sample.get("doc"), dict):
            fail(f"{where}: not an lm-eval sample (no 'doc' object)")
        doc = sample["doc"]
        doc_id = doc.get("id")
        if not isinstance(doc_id, str) or doc_id not in index:
            fail(f"{where}: document {doc_id!r} is not in the shipped task {spec.name!r}")
        if doc_id in first_line:
            fail(f"{where}: document {doc_id!r} is answered twice (first on line {first_line[doc_id]})")
        first_line[doc_id] = lineno
        shipped = spec.docs[index[doc_id]]
        for name in DOC_FIELDS:
            if doc.get(name) != shipped[name]:
                fail(f"{where}: document {doc_id!r} differs from the shipped document in field {name!r}")
        if sample.get("doc_id") != index[doc_id]:
            fail(f"{where}: doc_id {sample.get('doc_id')!r} holds document {doc_id!r}, which is document "
                 f"{index[doc_id]} of the task")
        if sample.get("doc_hash") is not None and sample["doc_hash"] != text_sha256(
                json.dumps(doc, indent=2, ensure_ascii=False)):
            fail(f"{where}: doc_hash does not match the sample's document (the sample was edited)")
        prompt, gen_kwargs = logged_prompt(sample)
        text, system = parts_of(shipped)
        if not isinstance(prompt, str) or text not in prompt:
            fail(f"{where}: the response does not belong to document {doc_id!r}: its prompt is not that "
                 "document's prompt")
        if not prompts.matches(prompt, text, system):
            fail(f"{where}: the prompt of document {doc_id!r} is not exactly {prompts.describe()} (extra text "
                 "such as few-shot examples or another instruction)")
        if sample.get("prompt_hash") is not None and sample["prompt_hash"] != text_sha256(prompt):
            fail(f"{where}: prompt_hash does not match the sample's prompt (the sample was edited)")
        bad = gen_kwargs_mismatch(gen_kwargs, spec.generation_kwargs)
        if bad:
            fail(f"{where}: generated with other settings than the benchmark's ({bad})")
        if sample.get("filter", "none") != "none":
            fail(f"{where}: filter {sample.get('filter')!r}; the task has no filters ('none')")
        filtered = sample.get("filtered_resps")
        if not isinstance(filtered, list) or len(filtered) != 1 or not isinstance(filtered[0], str):
            fail(f"{where}: filtered_resps must be a list with one string")
        response = filtered[0]
        if len(response) > MAX_TEXT_CHARS:
            fail(f"{where}: the response to document {doc_id!r} has {len(response):,} characters, above the limit "
                 f"of {MAX_TEXT_CHARS:,} (the benchmark generates at most {spec.generation_kwargs.get('max_gen_toks')} "
                 "tokens)")
        resps = sample.get("resps")
        if not (isinstance(resps, list) and resps and isinstance(resps[0], list) and resps[0]
                and resps[0][0] == response):
            fail(f"{where}: resps and filtered_resps disagree for document {doc_id!r}")
        for metric in spec.metrics:  # lm-eval logs each metric's process_results item in the sample
            item = sample.get(metric)
            if item is None:
                continue
            if not (isinstance(item, list) and len(item) >= 4 and item[0] == doc_id and item[3] == response):
                fail(f"{where}: the response does not belong to document {doc_id!r}: metric item {metric!r} "
                     "carries another document or response")
        responses[doc_id] = response
    missing = [d["id"] for d in spec.docs if d["id"] not in responses]
    if missing:
        fail(f"{path.name}: missing samples: {len(missing)} of {len(spec.docs)} documents of task {spec.name!r} "
             f"have no sample (first: {missing[0]!r})")
    return responses


# ---------------------------------------------------------------------------------------------
# reproduction.json

def read_reproduction(directory: Path, spec: TaskSpec, content_sha: str) -> ReproductionRecord | None:
    """The submission's reproduction record, checked against these files; None when there is none."""
    path = directory / REPRODUCTION_FILE
    if not path.is_symlink() and not path.exists():
        return None
    inside(directory, REPRODUCTION_FILE, "reproduction record")
    check_size(path, LIMITS["reproduction"], "reproduction record")
    raw = load_json(path, "reproduction record", "reproduction")
    try:
        rec = ReproductionRecord.model_validate(raw)
    except ValidationError as exc:
        fail(validation_message(exc, str(path)))
    if rec.submission_sha256 != content_sha:
        fail(f"{path}: the reproduction record is for other files (content {rec.submission_sha256[:16]}..., these "
             f"files are {content_sha[:16]}...): run consistbench leaderboard reproduce again")
    if rec.task != spec.name:
        fail(f"{path}: the reproduction record is for task {rec.task!r}, the submission is on {spec.name!r}")
    p, mode = rec.plan, rec.mode or "sample"  # a record without a mode predates --all: a sample
    expected = plan_for(spec, mode, p.forged_share, p.power, p.tolerated_share, p.confidence)
    if p != expected:
        fail(f"{path}: the record's sampling plan does not follow from its own parameters (expected "
             f"{expected.sample_groups} groups, at most {expected.max_mismatched_groups} mismatched)")
    if rec.seed != sample_seed(content_sha, rec.salt) or rec.groups != groups_for(spec, mode, rec.seed, p):
        fail(f"{path}: the record's groups are not the seeded sample of this submission (seed from its content hash"
             + (f" and salt {rec.salt!r})" if rec.salt else ")"))
    if rec.mode is not None and (any(getattr(rec, k) != v for k, v in coverage(p, mode, rec.compared_docs).items())
                                 or rec.compared_docs != len(rows_of(spec, rec.groups))):
        fail(f"{path}: the record's mode, rows checked, rows total, detectable share or power do not follow from "
             "its plan and figures")
    if rec.verdict != verdict_of(rec):
        fail(f"{path}: the record's verdict {rec.verdict!r} does not follow from its own figures")
    if rec.verdict != "reproduced":
        fail(f"{path}: the reproduction did not reproduce the logged responses ({rec.mismatched_groups} of "
             f"{len(rec.groups)} sampled groups differ, {rec.exact_matches} of {rec.compared_docs} responses "
             "identical): " + "; ".join(rec.reasons))
    return rec
