"""``consistbench leaderboard validate``: accept a submission only if its numbers are true.

:func:`validate_submission` runs the checks in order; the first failure raises
:class:`~consistbench.benchmark.errors.ConsistbenchError` with one line naming the file and the
problem:

1. files: ``metadata.json`` and the files it names are plain files inside the submission
   directory and within the limits (:mod:`consistbench.leaderboard.limits`);
2. ``metadata.json`` matches the schema (:func:`~consistbench.leaderboard.checks.read_metadata`);
3. the results JSON is lm-eval's, for exactly one track, on a shipped data version (the current
   one, or a frozen earlier one whose versioned task then supplies the documents) and the
   shipped task version, zero-shot, unlimited, with the task's own generation settings, no system
   instruction and a recorded chat template whose ``chat_template_sha`` matches it
   (:func:`~consistbench.leaderboard.checks.check_results`,
   :func:`~consistbench.leaderboard.prompts.prompt_format`);
4. the samples JSONL answers every document exactly once, each with the shipped document and
   exactly that document's prompt (:func:`~consistbench.leaderboard.checks.read_samples`);
5. every metric is rescored from the responses and must equal the reported value within the
   tolerance (:mod:`consistbench.leaderboard.rescore`);
6. a reproduction record, when present, is for exactly these files and says the responses
   reproduced (:func:`~consistbench.leaderboard.checks.read_reproduction`);
7. the track's robust-family tasks, when the results JSON holds them, pass steps 3-5 the same
   way; their consistency metrics join the submission's as ``<metric>_<family>``.

What rescoring cannot prove (that a model produced the responses) is what reproduction is for:
:func:`~consistbench.leaderboard.rescore.plausibility` marks results that need it ("needs
reproduction") and :mod:`consistbench.leaderboard.reproduce` does it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.metrics import CONSISTENCY_METRICS
from consistbench.leaderboard.checks import (check_parameters, check_results, check_shipped_templates, read_metadata,
                                             read_reproduction, read_samples, results_task, robust_samples_files)
from consistbench.leaderboard.limits import (LIMITS, check_directory, check_samples_file, check_size, inside,
                                             submission_sha256)
from consistbench.leaderboard.prompts import PromptFormat, prompt_format
from consistbench.leaderboard.rescore import check_reported, plausibility, rescore
from consistbench.leaderboard.schema import METADATA_FILE, REPRODUCTION_FILE, ReproductionRecord, SubmissionMetadata
from consistbench.leaderboard.tracks import TASK_FAMILY, frozen_version_of, load_task, metric_key


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
    # verification level: "reproduced" (a valid reproduction record), "needs reproduction" (the
    # results break a plausibility bound and were not reproduced) or "rescored"
    verification: str = "rescored"
    implausible: list[str] = field(default_factory=list)  # which plausibility bounds it breaks
    reproduction: ReproductionRecord | None = None
    files: list[str] = field(default_factory=list)  # the submission's files, as the site copies them
    content_sha256: str = ""
    prompts: PromptFormat | None = field(default=None, repr=False)
    robust_responses: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)  # robust task -> responses


@dataclass
class _Family:
    """The robust-family metrics of a submission, named by :func:`metric_key`."""

    metrics: dict[str, float] = field(default_factory=dict)
    reported: dict[str, float] = field(default_factory=dict)
    diffs: dict[str, float] = field(default_factory=dict)
    responses: dict[str, dict[str, str]] = field(default_factory=dict)  # robust task -> responses


def validate_submission(directory: str | Path, task: str | None = None, *, reproduction: bool = True) -> Validated:
    """Run every check on one submission directory; raise ConsistbenchError on the first failure.

    ``task``: the track the submission must be on; None accepts any track in
    :data:`~consistbench.leaderboard.tracks.TRACKS`.
    ``reproduction=False``: ignore a reproduction record (``reproduce`` replaces it anyway).
    """
    directory = Path(directory)
    check_directory(directory)
    meta = read_metadata(directory)
    results_path = inside(directory, meta.files.results, "results")
    samples_path = inside(directory, meta.files.samples, "samples")
    check_size(results_path, LIMITS["results"], "results")
    check_samples_file(samples_path)
    res, task = results_task(results_path, task)
    spec = load_task(task, frozen_version_of(res, task))
    check_results(results_path, res, spec)
    prompts = prompt_format(results_path, res)
    check_parameters(directory, meta, res)
    responses = read_samples(samples_path, spec, prompts)
    rescored, n_pairs = rescore(spec, responses)
    reported, diffs = check_reported(results_path, spec, res, rescored)
    content_sha = submission_sha256(directory, meta)
    record = read_reproduction(directory, spec, content_sha) if reproduction else None
    implausible = plausibility(spec, responses, rescored)
    level = "reproduced" if record is not None else ("needs reproduction" if implausible else "rescored")
    robust = _robust_families(directory, meta, res, results_path, spec.name, prompts)
    files = ([METADATA_FILE, meta.files.results, meta.files.samples]
             + [name for _, name in sorted((meta.files.robust_samples or {}).items())]
             + ([REPRODUCTION_FILE] if record else []))
    return Validated(directory=directory, metadata=meta, task=spec.name, data_sha256=spec.data_sha256,
                     task_version=spec.version, n_docs=len(spec.docs), n_pairs=n_pairs,
                     metrics={m: rescored[m] for m in spec.metrics} | robust.metrics,
                     reported=reported | robust.reported, max_diff=diffs | robust.diffs,
                     lm_eval_version=res.get("lm_eval_version"),
                     model_args=(res.get("config") or {}).get("model_args"), responses=responses,
                     verification=level, implausible=implausible, reproduction=record, files=files,
                     content_sha256=content_sha, prompts=prompts, robust_responses=robust.responses)


def _robust_families(directory: Path, meta: SubmissionMetadata, res: dict, results_path: Path, track: str,
                     prompts: PromptFormat) -> _Family:
    """Each robust-family task beside the track, checked exactly like the track's task (the same
    results JSON, so the same prompt format); an error names the task, whose metrics share the
    track's names."""
    out = _Family()
    for task, name in robust_samples_files(directory, meta, res, results_path, track).items():
        try:
            spec = load_task(task, frozen_version_of(res, task))  # the version the track was run on
            check_results(results_path, res, spec)
            check_shipped_templates(results_path, res, task)
            path = inside(directory, name, f"{task} samples")
            check_samples_file(path)
            responses = read_samples(path, spec, prompts)
            rescored, _ = rescore(spec, responses)
            reported, diffs = check_reported(results_path, spec, res, rescored)
        except ConsistbenchError as exc:
            raise ConsistbenchError(f"robust task {task}: {exc}") from None
        family = TASK_FAMILY[task]
        for m in CONSISTENCY_METRICS:
            out.metrics[metric_key(m, family)] = rescored[m]
            out.reported[metric_key(m, family)] = reported[m]
            out.diffs[metric_key(m, family)] = diffs[m]
        out.responses[task] = responses
    return out
