"""``consistbench leaderboard validate``: accept a submission only if its numbers are true.

Checks, in order (the first failure raises :class:`~consistbench.benchmark.errors.ConsistbenchError` with one
line naming the file and the problem):

1. files: ``metadata.json`` and the two files it names are plain files inside the submission
   directory (no ``..``, no absolute path, no link that leaves it) and within :data:`LIMITS`;
2. ``metadata.json`` is well-formed JSON and matches :class:`~consistbench.leaderboard.schema.SubmissionMetadata`;
3. the results JSON is lm-eval's, for exactly the leaderboard task, on a shipped data version
   (``configs.<task>.metadata.data_sha256`` equals ``tasks/consistency/data/versions.json``'s
   test checksum and the task template's, or that of a frozen earlier version, whose versioned
   task then supplies the documents) and the shipped task version, zero-shot;
4. the samples JSONL answers every document of the task exactly once; each sample's document
   equals the shipped one, sits at its position in the task (``doc_id``), was prompted with that
   document's own prompt and the benchmark's generation settings, and its response is the one
   its metric items carry (a response that does not belong to its document is rejected);
5. every metric of the task is rescored from the responses with :mod:`consistbench.benchmark.metrics`
   (against the shipped references, not the sample's) and must equal the reported value within
   :func:`tolerance`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.paths import REPO_ROOT
from consistbench.leaderboard.schema import METADATA_FILE, SubmissionMetadata

LEADERBOARD_TASK = "consistency"
# Tracks: one ranking per task. Both use the same data version; their numbers are not comparable.
TRACKS = {
    "consistency": "Main track: every document of the test split",
    "consistency_mini": "Quick track: the whole groups listed in tasks/consistency/data/mini_groups.txt",
}
TASK_DIR = REPO_ROOT / "tasks" / "consistency"
MiB = 1024 * 1024
# Size limits, in bytes. The full test task's samples file from `consistbench eval` is about
# 9 KB per document (prompt, doc and one item per metric), ~40 MB for 4,148 documents; the
# limits leave room for long chat templates while keeping a hostile submission cheap to refuse.
LIMITS = {
    "metadata": 64 * 1024,
    "results": 8 * MiB,
    "samples": 256 * MiB,  # uncompressed (a .jsonl.gz is measured after decompression too)
    "samples_compressed": 64 * MiB,
}
# Rescoring tolerance (absolute). rougeL, bleu, em and rs are exact computations in float64 whose
# only freedom is summation order (differences ~1e-15); bs runs a float32 neural encoder whose
# kernels differ between CPU/GPU builds and batch compositions (observed differences ~1e-7 per
# pair), so it gets 1e-4, still ten times finer than the site's displayed precision.
TOLERANCE = 1e-6
TOLERANCE_BS = 1e-4
DOC_FIELDS = ("id", "group_id", "variant_type", "question", "context", "reference")


def tolerance(metric: str) -> float:
    return TOLERANCE_BS if metric == "bs" or metric.startswith("bs_") else TOLERANCE


@dataclass
class Validated:
    """What a valid submission says, with the numbers recomputed from its samples."""

    directory: Path
    metadata: SubmissionMetadata
    task: str
    data_sha256: str
    task_version: Any
    n_docs: int
    n_pairs: int
    metrics: dict[str, float]
    reported: dict[str, float]
    max_diff: dict[str, float] = field(default_factory=dict)
    lm_eval_version: str | None = None
    model_args: str | None = None
    responses: dict[str, str] = field(default_factory=dict, repr=False)  # doc id -> response (for intervals)


# ---------------------------------------------------------------------------------------------
# Files

def _fail(msg: str) -> None:
    raise ConsistbenchError(msg)


def _inside(directory: Path, name: str, what: str) -> Path:
    """The path of ``name`` in ``directory``; refuse anything that could leave it."""
    if (not isinstance(name, str) or not name or name.startswith(("/", "\\", "~")) or "/" in name or "\\" in name
            or name in (".", "..") or ".." in name.split(".") or ":" in name or "\x00" in name):
        _fail(f"{directory / METADATA_FILE}: {what} file name {name!r} tries to leave the submission directory "
              "(give a plain file name inside it)")
    path = directory / name
    root = directory.resolve()
    if not path.resolve().is_relative_to(root):
        _fail(f"{path}: {what} file is a link that leaves the submission directory")
    if not path.exists():
        _fail(f"{path}: {what} file is missing")
    if not path.resolve().is_file():
        _fail(f"{path}: {what} file is not a regular file")
    return path


def _check_size(path: Path, limit: int, what: str) -> None:
    size = path.stat().st_size
    if size > limit:
        _fail(f"{path}: {what} file is {size / MiB:.1f} MiB, above the limit of {limit / MiB:g} MiB")


def _load_json(path: Path, what: str) -> Any:
    raw = path.read_bytes()
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        _fail(f"{path}: malformed {what} (invalid UTF-8 at byte {exc.start})")
    except json.JSONDecodeError as exc:
        _fail(f"{path}: malformed JSON in the {what} ({exc.msg} at line {exc.lineno} column {exc.colno})")


def _iter_lines(path: Path, limit: int) -> Iterator[tuple[int, bytes]]:
    """Lines of a .jsonl or .jsonl.gz, refusing more than ``limit`` bytes of decompressed text."""
    opener = gzip.open if path.name.endswith(".gz") else open
    total = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                total += len(raw)
                if total > limit:
                    _fail(f"{path}: samples file is above the limit of {limit / MiB:g} MiB once decompressed")
                yield lineno, raw
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        _fail(f"{path}: not a readable gzip file ({exc})")


# ---------------------------------------------------------------------------------------------
# The shipped task

@dataclass
class TaskSpec:
    name: str
    config: dict
    data_sha256: str
    version: Any
    metrics: list[str]
    generation_kwargs: dict
    docs: list[dict]  # in the task's order: doc_id i is docs[i]
    rs_threshold: float


def shipped_data_version() -> str:
    """The test split's checksum from ``versions.json``; must agree with the task template."""
    versions = json.loads((TASK_DIR / "data" / "versions.json").read_text())
    return versions["test"]["sha256"]


@functools.lru_cache(maxsize=4)
def load_task(task: str, data_sha256: str | None = None) -> TaskSpec:
    """The shipped task's config (through lm-eval's own YAML loader) and its documents in order.

    ``data_sha256``: an earlier, frozen data version (``consistbench.benchmark.dataversions``);
    the task is then read from its versioned YAML (``consistency_mini`` on v1:
    ``consistency_mini_v1.yaml``), so a submission is rescored against the data it was made on.
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    from consistbench.benchmark import dataversions
    from consistbench.tasks.consistency import utils

    data_sha = shipped_data_version()
    yaml_name = task
    if data_sha256 is not None and data_sha256 != data_sha:
        version = dataversions.by_sha256(data_sha256)
        yaml_name, data_sha = f"{task}_{version.name}", version.sha256
    path = TASK_DIR / f"{yaml_name}.yaml"
    if not path.is_file():
        _fail(f"unknown task {yaml_name!r}: no {path.name} in {TASK_DIR}")
    config = load_yaml(path, resolve_func=False)
    meta = config.get("metadata") or {}
    if meta.get("data_sha256") != data_sha:
        _fail(f"the shipped task {yaml_name} records data version {str(meta.get('data_sha256'))[:16]}... but "
              f"the data says {data_sha[:16]}...: rebuild the data or the task")
    dataset = utils.load(data_sha256=data_sha, **(config.get("dataset_kwargs") or {}))["test"]
    return TaskSpec(name=task, config=config, data_sha256=data_sha, version=meta.get("version"),
                    # *_stderr entries are uncertainty estimates (issue 10), not scores: not rescored here
                    metrics=[m["metric"] for m in config["metric_list"] if not m["metric"].endswith("_stderr")],
                    generation_kwargs=dict(config.get("generation_kwargs") or {}), docs=list(dataset),
                    rs_threshold=float(meta.get("rs_threshold", 0.8)))


def frozen_version_of(res: dict, task: str) -> str | None:
    """The data version a results JSON records for ``task`` when it is a shipped earlier version
    (None when it is the current one, unknown or missing: the usual checks then apply)."""
    from consistbench.benchmark import dataversions
    from consistbench.benchmark.errors import DataVersionError

    cfg = res["configs"].get(task)
    recorded = (cfg.get("metadata") or {}).get("data_sha256") if isinstance(cfg, dict) else None
    if not isinstance(recorded, str) or recorded == shipped_data_version():
        return None
    try:
        return dataversions.by_sha256(recorded).sha256
    except DataVersionError:
        return None


# ---------------------------------------------------------------------------------------------
# Checks

def _metadata(directory: Path) -> SubmissionMetadata:
    from pydantic import ValidationError

    path = directory / METADATA_FILE
    if not path.is_file() or path.is_symlink():
        _fail(f"{path}: missing (every submission has a {METADATA_FILE}; see docs/LEADERBOARD.md)")
    _check_size(path, LIMITS["metadata"], "metadata")
    raw = _load_json(path, "metadata")
    if not isinstance(raw, dict):
        _fail(f"{path}: expected a JSON object, got {type(raw).__name__}")
    files = raw.get("files")
    if isinstance(files, dict):  # name the traversal plainly before the schema's generic message
        for key in ("results", "samples"):
            if isinstance(files.get(key), str):
                _inside(directory, files[key], key)
    try:
        return SubmissionMetadata.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        _fail(f"{path}: {where}: {err['msg']}{more}")


def _results_task(path: Path, task: str | None) -> tuple[dict, str]:
    """The results JSON and its one task, which must be a leaderboard track (``task`` if given)."""
    res = _load_json(path, "results JSON")
    if not isinstance(res, dict) or not isinstance(res.get("results"), dict) or not isinstance(res.get("configs"), dict):
        _fail(f"{path}: not an lm-eval results JSON (no 'results' and 'configs' objects)")
    tasks = sorted(res["results"])
    allowed = [task] if task else list(TRACKS)
    if len(tasks) != 1 or tasks[0] not in allowed:
        _fail(f"{path}: holds tasks {tasks}; a leaderboard submission holds exactly one task, "
              + (f"{task!r}" if task else "one of " + ", ".join(map(repr, TRACKS))))
    return res, tasks[0]


def _results(path: Path, res: dict, spec: TaskSpec) -> dict:
    cfg = res["configs"].get(spec.name)
    if not isinstance(cfg, dict):
        _fail(f"{path}: no configs.{spec.name} entry")
    recorded = (cfg.get("metadata") or {}).get("data_sha256")
    if recorded is None:
        _fail(f"{path}: no data version (configs.{spec.name}.metadata.data_sha256): "
              "was it produced with the consistbench tasks?")
    if recorded != spec.data_sha256:
        _fail(f"{path}: wrong data version: the results were produced on data {str(recorded)[:16]}... but the "
              f"shipped test split is {spec.data_sha256[:16]}...; re-run the evaluation on the current data")
    version = (res.get("versions") or {}).get(spec.name)
    if version != spec.version:
        _fail(f"{path}: task version {version!r} differs from the shipped task's version {spec.version!r}")
    shots = (res.get("n-shot") or {}).get(spec.name, 0)
    if shots not in (0, None):
        _fail(f"{path}: run with {shots} few-shot examples; the benchmark is zero-shot")
    return res


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _prompt_of(sample: dict) -> tuple[str, Any]:
    args = sample.get("arguments")
    if isinstance(args, dict):  # lm-eval's samples file: {"gen_args_0": {"arg_0": prompt, "arg_1": kwargs}}
        first = args.get("gen_args_0") or {}
        return first.get("arg_0"), first.get("arg_1")
    if isinstance(args, list) and args and isinstance(args[0], list) and args[0]:  # in-memory form
        return args[0][0], (args[0][1] if len(args[0]) > 1 else None)
    return None, None


def _prompt_matches(prompt: str, expected: str) -> bool:
    if expected in prompt:
        return True
    try:  # chat-completions backends log the messages as a JSON string
        messages = json.loads(prompt)
    except (ValueError, TypeError):
        return False
    if isinstance(messages, list):
        return any(isinstance(m, dict) and expected in str(m.get("content", "")) for m in messages)
    return False


def _gen_kwargs_match(got: Any, want: dict) -> str | None:
    if not isinstance(got, dict):
        return "no generation settings"
    for key in ("until", "max_gen_toks", "do_sample", "temperature"):
        if key in want and got.get(key) != want[key]:
            return f"{key}={got.get(key)!r} instead of {want[key]!r}"
    return None


def _samples(path: Path, spec: TaskSpec) -> dict[str, str]:
    """Check every sample against the shipped documents; return {doc id: response}."""
    from consistbench.tasks.consistency.utils import doc_to_text

    index = {doc["id"]: i for i, doc in enumerate(spec.docs)}
    responses: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, raw in _iter_lines(path, LIMITS["samples"]):
        where = f"{path.name}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            _fail(f"{where}: malformed samples line (invalid UTF-8 at byte {exc.start})")
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except json.JSONDecodeError as exc:
            _fail(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})")
        if not isinstance(sample, dict) or not isinstance(sample.get("doc"), dict):
            _fail(f"{where}: not an lm-eval sample (no 'doc' object)")
        doc = sample["doc"]
        doc_id = doc.get("id")
        if doc_id not in index:
            _fail(f"{where}: document {doc_id!r} is not in the shipped task {spec.name!r}")
        if doc_id in first_line:
            _fail(f"{where}: document {doc_id!r} is answered twice (first on line {first_line[doc_id]})")
        first_line[doc_id] = lineno
        shipped = spec.docs[index[doc_id]]
        for name in DOC_FIELDS:
            if doc.get(name) != shipped[name]:
                _fail(f"{where}: document {doc_id!r} differs from the shipped document in field {name!r}")
        if sample.get("doc_id") != index[doc_id]:
            _fail(f"{where}: doc_id {sample.get('doc_id')!r} holds document {doc_id!r}, which is document "
                  f"{index[doc_id]} of the task")
        if sample.get("doc_hash") is not None and sample["doc_hash"] != _hash(
                json.dumps(doc, indent=2, ensure_ascii=False)):
            _fail(f"{where}: doc_hash does not match the sample's document (the sample was edited)")
        prompt, gen_kwargs = _prompt_of(sample)
        if not isinstance(prompt, str) or not _prompt_matches(prompt, doc_to_text(shipped)):
            _fail(f"{where}: the response does not belong to document {doc_id!r}: its prompt is not that "
                  "document's prompt")
        if sample.get("prompt_hash") is not None and sample["prompt_hash"] != _hash(prompt):
            _fail(f"{where}: prompt_hash does not match the sample's prompt (the sample was edited)")
        bad = _gen_kwargs_match(gen_kwargs, spec.generation_kwargs)
        if bad:
            _fail(f"{where}: generated with other settings than the benchmark's ({bad})")
        if sample.get("filter", "none") != "none":
            _fail(f"{where}: filter {sample.get('filter')!r}; the task has no filters ('none')")
        filtered = sample.get("filtered_resps")
        if not isinstance(filtered, list) or len(filtered) != 1 or not isinstance(filtered[0], str):
            _fail(f"{where}: filtered_resps must be a list with one string")
        response = filtered[0]
        resps = sample.get("resps")
        if not (isinstance(resps, list) and resps and isinstance(resps[0], list) and resps[0]
                and resps[0][0] == response):
            _fail(f"{where}: resps and filtered_resps disagree for document {doc_id!r}")
        for metric in spec.metrics:  # lm-eval logs each metric's process_results item in the sample
            item = sample.get(metric)
            if item is None:
                continue
            if not (isinstance(item, list) and len(item) >= 4 and item[0] == doc_id and item[3] == response):
                _fail(f"{where}: the response does not belong to document {doc_id!r}: metric item {metric!r} "
                      "carries another document or response")
        responses[doc_id] = response
    missing = [d["id"] for d in spec.docs if d["id"] not in responses]
    if missing:
        _fail(f"{path.name}: missing samples: {len(missing)} of {len(spec.docs)} documents of task {spec.name!r} "
              f"have no sample (first: {missing[0]!r})")
    return responses


_RESCORED: dict[str, tuple[dict[str, float], int]] = {}


def rescore(spec: TaskSpec, responses: dict[str, str]) -> tuple[dict[str, float], int]:
    """All metrics from the responses, with the shipped references and the task's settings.

    Memoised per process on a hash of (task, data version, threshold, responses): the metrics are
    deterministic, and ``build`` or a test suite may validate the same responses several times.
    """
    from consistbench.benchmark import metrics as M

    key = hashlib.sha256(json.dumps([spec.name, spec.data_sha256, spec.rs_threshold, sorted(responses.items())],
                                    ensure_ascii=False).encode("utf-8")).hexdigest()
    if key not in _RESCORED:
        rows = [M.Scored(d["id"], d["group_id"], d["variant_type"], responses[d["id"]], d["reference"])
                for d in spec.docs]
        settings = M.ScoreSettings(rs_threshold=spec.rs_threshold)
        if len(_RESCORED) >= 16:
            _RESCORED.pop(next(iter(_RESCORED)))
        _RESCORED[key] = (M.compute_all(rows, settings), len(M.pair_by_group(rows)))
    metrics, n_pairs = _RESCORED[key]
    return dict(metrics), n_pairs


def _same(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol


def compare(path: Path, spec: TaskSpec, res: dict, rescored: dict[str, float]) -> tuple[dict, dict]:
    reported: dict[str, float] = {}
    diffs: dict[str, float] = {}
    block = res["results"][spec.name]
    for metric in spec.metrics:
        value = block.get(f"{metric},none")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(f"{path}: metric {metric!r} is missing from the results (expected key '{metric},none')")
        ours = rescored.get(metric, float("nan"))
        if not _same(float(value), ours, tolerance(metric)):
            _fail(f"{path}: metric {metric!r} is reported as {float(value):.6f} but rescoring the samples gives "
                  f"{ours:.6f} (difference {abs(float(value) - ours):.2e} > tolerance {tolerance(metric):g})")
        reported[metric] = float(value)
        diffs[metric] = 0.0 if math.isnan(ours) else abs(float(value) - ours)
    return reported, diffs


def validate_submission(directory: str | Path, task: str | None = None) -> Validated:
    """Run every check on one submission directory; raise ConsistbenchError on the first failure.

    ``task``: the track the submission must be on; None accepts any track in :data:`TRACKS`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        _fail(f"{directory}: not a directory")
    meta = _metadata(directory)
    results_path = _inside(directory, meta.files.results, "results")
    samples_path = _inside(directory, meta.files.samples, "samples")
    _check_size(results_path, LIMITS["results"], "results")
    if samples_path.name.endswith(".gz"):
        _check_size(samples_path, LIMITS["samples_compressed"], "samples")
    else:
        _check_size(samples_path, LIMITS["samples"], "samples")
    if not (samples_path.name.endswith(".jsonl") or samples_path.name.endswith(".jsonl.gz")):
        _fail(f"{samples_path}: samples file must be .jsonl or .jsonl.gz")
    res, task = _results_task(results_path, task)
    spec = load_task(task, frozen_version_of(res, task))
    _results(results_path, res, spec)
    recorded_params = (res.get("config") or {}).get("model_num_parameters")
    if isinstance(recorded_params, int) and recorded_params > 0 and recorded_params != meta.model.parameters:
        _fail(f"{directory / METADATA_FILE}: model.parameters {meta.model.parameters} differs from the "
              f"{recorded_params} lm-eval recorded for the model")
    responses = _samples(samples_path, spec)
    effective = ((res.get("n-samples") or {}).get(spec.name) or {}).get("effective")
    if effective is not None and effective != len(spec.docs):
        _fail(f"{results_path}: n-samples.{spec.name}.effective is {effective}, the task has {len(spec.docs)} documents")
    rescored, n_pairs = rescore(spec, responses)
    reported, diffs = compare(results_path, spec, res, rescored)
    return Validated(directory=directory, metadata=meta, task=spec.name, data_sha256=spec.data_sha256,
                     task_version=spec.version, n_docs=len(spec.docs), n_pairs=n_pairs,
                     metrics={m: rescored[m] for m in spec.metrics}, reported=reported, max_diff=diffs,
                     lm_eval_version=res.get("lm_eval_version"),
                     model_args=(res.get("config") or {}).get("model_args"), responses=responses)
