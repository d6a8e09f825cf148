"""The leaderboard's typed records: a submission's metadata file and a ranking row.

A submission is a directory holding three files:

* ``metadata.json`` - :class:`SubmissionMetadata` (who, which model, which files);
* lm-eval's results JSON (``results_*.json``) as ``consistbench eval`` or
  ``lm_eval --log_samples`` wrote it;
* lm-eval's samples JSONL for the task (``samples_consistency_*.jsonl``, or the same file
  gzip-compressed as ``.jsonl.gz``);
* optionally, the samples of the track's robust-family tasks from the same run
  (``files.robust_samples``; :mod:`consistbench.leaderboard.tracks`).

The metadata model forbids unknown keys so a typo is an error, not a silently ignored field.
:class:`RankingRow` is the reverse: open to extra fields (for instance a ``ci`` dict of
confidence intervals per metric) so later additions do not break older readers.
``consistbench leaderboard schema`` prints the JSON Schema; a copy ships as
``leaderboard/submission.schema.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from consistbench.leaderboard.tracks import TASK_FAMILY

SCHEMA_VERSION = 1
METADATA_FILE = "metadata.json"
REPRODUCTION_FILE = "reproduction.json"  # written by `consistbench leaderboard reproduce`
VERIFICATION_LEVELS = ("rescored", "reproduced", "needs reproduction")
# A plain file name: no directory part, no leading dot, a conservative character set.
SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
# Submission directory names become page names on the site.
SAFE_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")
PRECISIONS = ("float32", "bfloat16", "float16", "int8", "int4", "fp8", "mixed", "other")


def _check_url(value: str | None) -> str | None:
    # Only http(s): a javascript: or data: link in an href would run in the visitor's browser.
    if value is None:
        return value
    if not re.match(r"^https?://[^\s<>\"']+$", value):
        raise ValueError("must be an http:// or https:// URL without spaces or quotes")
    return value


class ModelInfo(BaseModel):
    """The model that produced the responses."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="display name, e.g. 'SmolLM2-135M-Instruct'")
    link: str | None = Field(None, max_length=500, description="http(s) URL of the model card or weights")
    parameters: int = Field(gt=0, description="number of parameters (lm-eval's model_num_parameters when it recorded one)")
    precision: Literal[PRECISIONS] = Field(description="weights' precision during generation")  # type: ignore[valid-type]
    revision: str | None = Field(None, max_length=200, description="commit or version of the weights")
    base_model: str | None = Field(None, max_length=200, description="the model it was fine-tuned or merged from")
    method: str | None = Field(None, max_length=500, description="how it was made (e.g. 'SFT + triplet loss, layer-wise merge')")
    license: str | None = Field(None, max_length=100)

    @field_validator("link")
    @classmethod
    def _link(cls, value: str | None) -> str | None:
        return _check_url(value)


class Submitter(BaseModel):
    """Who submits the result (shown on the site)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    link: str | None = Field(None, max_length=500, description="http(s) URL (profile, paper, repository)")

    @field_validator("link")
    @classmethod
    def _link(cls, value: str | None) -> str | None:
        return _check_url(value)


class SubmissionFiles(BaseModel):
    """The lm-eval output files, named relative to the submission directory (plain names only)."""

    model_config = ConfigDict(extra="forbid")

    results: str = Field(description="lm-eval results JSON, e.g. results_2026-01-01T00-00-00.json")
    samples: str = Field(description="lm-eval samples JSONL for the task (.jsonl or .jsonl.gz)")
    robust_samples: dict[str, str] | None = Field(
        None, description="optional: the samples JSONL of each robust-family task the results JSON holds, by task "
                          "(e.g. {\"consistency_typo_mini\": \"samples_consistency_typo_mini_....jsonl.gz\"})")

    @field_validator("results", "samples")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not SAFE_FILE_NAME.match(value) or ".." in value:
            raise ValueError(f"{value!r} is not a plain file name inside the submission directory "
                             "(letters, digits, '.', '_', '+', '-'; no '/', no '..', no leading dot)")
        return value

    @field_validator("robust_samples")
    @classmethod
    def _robust_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for task, name in (value or {}).items():
            if task not in TASK_FAMILY:
                raise ValueError(f"{task!r} is not a robust-family task ({', '.join(sorted(TASK_FAMILY))})")
            cls._plain_name(name)
        return value


class SubmissionMetadata(BaseModel):
    """``metadata.json`` of a submission."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = Field(description="version of this metadata format")
    model: ModelInfo
    submitter: Submitter
    date: _dt.date = Field(description="date of the evaluation run (YYYY-MM-DD)")
    files: SubmissionFiles
    notes: str | None = Field(None, max_length=2000, description="anything a reader should know (shown as text)")


class SamplingPlan(BaseModel):
    """How many whole groups a reproduction regenerates, and how many may differ.

    The sample is whole question groups (so every metric, consistency included, can be compared).
    ``sample_groups`` is the smallest number g such that, if at least ``forged_share`` of the
    responses were not produced by the model (however they are spread over groups), the sample
    holds more than ``max_mismatched_groups`` groups with a forged response with probability at
    least ``power``; ``max_mismatched_groups`` is the largest number of mismatched groups an
    honest submission shows with probability ``confidence`` when each group independently fails
    to reproduce with probability ``tolerated_share`` (0: greedy generation is deterministic, so
    every group must reproduce exactly). See docs/LEADERBOARD.md, "Reproduction".
    """

    model_config = ConfigDict(extra="forbid")

    forged_share: float = Field(gt=0, le=1)
    power: float = Field(gt=0, lt=1)
    tolerated_share: float = Field(ge=0, lt=1)
    confidence: float = Field(gt=0, lt=1)
    n_docs: int = Field(gt=0)
    n_groups: int = Field(gt=0)
    forged_groups: int = Field(ge=0, description="fewest groups that can hold the forged share of responses")
    sample_groups: int = Field(gt=0)
    max_mismatched_groups: int = Field(ge=0)
    detection_probability: float = Field(ge=0, le=1, description="P(detected) at exactly forged_share")


class MetricDifference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    logged: float | None
    reproduced: float | None
    difference: float | None = Field(description="logged - reproduced")
    low: float | None
    high: float | None


class Mismatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(max_length=200)
    logged: str = Field(max_length=400)
    reproduced: str = Field(max_length=400)


class ReproductionRecord(BaseModel):
    """``reproduction.json``: what ``consistbench leaderboard reproduce`` found for a submission."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1]
    submission_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="content hash of the files reproduced")
    salt: str = Field("", max_length=200, description="extra seed material chosen by whoever ran it")
    seed: int = Field(ge=0, lt=2**64)
    plan: SamplingPlan
    # which rows were regenerated; absent in records written before it was recorded (those were samples)
    mode: Literal["all", "sample"] | None = Field(None, description="all: every row regenerated; sample: seeded groups")
    rows_checked: int | None = Field(None, ge=0, description="rows regenerated and compared")
    rows_total: int | None = Field(None, gt=0, description="rows of the task")
    detectable_share: float | None = Field(None, gt=0, le=1, description="forged share detected with `power`")
    power: float | None = Field(None, ge=0, le=1, description="probability of detecting `detectable_share`")
    task: str = Field(max_length=100)
    groups: list[str] = Field(max_length=100_000, description="the regenerated group ids, sorted")
    model: str = Field(max_length=100, description="lm-eval model type used")
    model_args: str = Field(max_length=2000)
    compared_docs: int = Field(ge=0)
    exact_matches: int = Field(ge=0)
    exact_match_share: float = Field(ge=0, le=1)
    exact_match_ci: list[float] = Field(min_length=2, max_length=2, description="95% Clopper-Pearson interval")
    mismatched_groups: int = Field(ge=0)
    identical_prompts: int = Field(ge=0, description="documents whose regenerated prompt equals the logged one")
    chat_template_matches: bool | None = None
    metrics: dict[str, MetricDifference] = Field(default_factory=dict, max_length=200,
                                                 description="paired group bootstrap, 95%, logged minus reproduced")
    mismatches: list[Mismatch] = Field(default_factory=list, max_length=50)
    verdict: Literal["reproduced", "not reproduced"]
    reasons: list[str] = Field(default_factory=list, max_length=20)
    consistbench_version: str = Field(max_length=50)
    lm_eval_version: str | None = Field(None, max_length=50)
    wall_seconds: float = Field(ge=0)
    date: _dt.date


class RankingRow(BaseModel):
    """One model's line on the leaderboard (``leaderboard.json``'s ``rows``).

    ``metrics`` are the validator's rescored values (rounded for display only on the page).
    Extra fields are allowed on purpose: e.g. ``ci`` (``{metric: [low, high]}``) can be added
    without changing readers that do not know it.
    """

    model_config = ConfigDict(extra="allow")

    rank: int
    slug: str
    model: ModelInfo
    submitter: Submitter
    date: _dt.date
    task: str
    data_sha256: str
    n_docs: int
    n_pairs: int
    metrics: dict[str, float]
    reported: dict[str, float] = Field(default_factory=dict, description="the numbers the submission's results JSON reported")
    notes: str | None = None
    ci: dict[str, list[float]] | None = None
    # from rank 2 on: the paired bootstrap of this model against the one ranked above it on the
    # ranking metrics; ``tied_with_above`` when the difference on the first one is not significant
    vs_above: dict[str, dict[str, float | bool]] | None = None
    tied_with_above: bool | None = None
    # "rescored", "reproduced" or "needs reproduction" (see VERIFICATION_LEVELS); which
    # plausibility bounds the entry breaks; the reproduction's figures when it was reproduced
    verification: str = "rescored"
    implausible: list[str] = Field(default_factory=list)
    reproduction: dict | None = None


def metadata_json_schema() -> dict:
    """JSON Schema of ``metadata.json`` (draft 2020-12, as pydantic writes it)."""
    schema = SubmissionMetadata.model_json_schema()
    schema["$id"] = "https://github.com/consistbench/consistbench/leaderboard/submission.schema.json"
    schema["title"] = "consistbench leaderboard submission metadata"
    return schema


def metadata_json_schema_text() -> str:
    return json.dumps(metadata_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
