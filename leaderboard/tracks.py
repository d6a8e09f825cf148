"""The leaderboard's tracks and the shipped tasks a submission is checked against.

A track is one lm-eval task, ranked on its own (:data:`TRACKS`); its numbers are never compared
with another track's. Beside its track, a submission may hold that track's robust-family tasks
(:data:`ROBUST_TASKS`; ``consistbench eval --tasks consistency_mini,consistency_robust_mini``):
they are validated like the track's task and their consistency metrics join the submission's as
``<metric>_<family>`` (:func:`metric_key`), shown apart from the paper-comparable ranking.

:func:`load_task` reads a shipped task (its lm-eval config and documents, in order) on the
current data version or on a frozen earlier one (:func:`frozen_version_of`), so a submission is
rescored against the data it was made on.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from consistbench.benchmark import dataversions
from consistbench.benchmark.compat import lm_eval_load_yaml
from consistbench.benchmark.errors import ConsistbenchError, DataVersionError
from consistbench.benchmark.paths import TASK_DIR
from consistbench.benchmark.taskdata import task_records
from consistbench.benchmark.variants import ROBUST_TYPES

LEADERBOARD_TASK = "consistency"
# Tracks: one ranking per task. Both use the same data version; their numbers are not comparable.
TRACKS = {
    "consistency": "Main track: every document of the test split",
    "consistency_mini": "Quick track: the whole groups listed in tasks/consistency/data/mini_groups.txt",
    "consistency_small": ("Small track: the 300 whole test groups listed in tasks/consistency/data/small_groups.txt "
                          "(stratified by variant type; the reference method's evaluation set)"),
}

# Reproduction (`consistbench leaderboard reproduce`): "all" regenerates every row of the track,
# "sample" a seeded sample of whole groups (leaderboard.sampling). A track regenerates every row
# by default when that fits the budget below: at most REPRODUCE_ALL_MAX_ROWS rows, about 10 minutes
# for a 135M-parameter model on a 2-core CPU (the small track's 836 rows take ~7 minutes to
# generate there). The main track (5,971 rows, ~50 minutes there) samples.
REPRODUCE_ALL_MAX_ROWS = 1000
REPRODUCE = {"consistency": "sample", "consistency_mini": "all", "consistency_small": "all"}


def reproduce_mode(task: str) -> str:
    """The default reproduction of a track: ``"all"`` (every row) or ``"sample"``."""
    return REPRODUCE.get(task, "sample")


# Robust families: track -> {family: task}
ROBUST_TASKS = {
    "consistency": {f: f"consistency_{f}" for f in ROBUST_TYPES},
    "consistency_mini": {f: f"consistency_{f}_mini" for f in ROBUST_TYPES},
}
TASK_FAMILY = {task: family for tasks in ROBUST_TASKS.values() for family, task in tasks.items()}


def metric_key(metric: str, family: str) -> str:
    """The name of a family's metric among a submission's metrics: ``em_typo``."""
    return f"{metric}_{family}"


def robust_tasks_in(results: dict) -> list[str]:
    """The robust-family tasks an lm-eval results JSON holds, sorted."""
    return sorted(t for t in (results.get("results") or {}) if t in TASK_FAMILY)


# ---------------------------------------------------------------------------------------------
# The shipped task

@dataclass
class TaskSpec:
    """A shipped task as the validator uses it: config, data version, metrics and documents."""

    name: str
    config: dict
    data_sha256: str
    version: Any
    metrics: list[str]
    generation_kwargs: dict
    docs: list[dict]  # in the task's order: doc_id i is docs[i]
    rs_threshold: float
    run_task: str = ""  # the lm-eval task that generates these docs (``consistency_mini_v2`` on v2)


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
    data_sha = shipped_data_version()
    yaml_name = task
    if data_sha256 is not None and data_sha256 != data_sha:
        version = dataversions.by_sha256(data_sha256)
        yaml_name, data_sha = f"{task}_{version.name}", version.sha256
    path = TASK_DIR / f"{yaml_name}.yaml"
    if not path.is_file():
        raise ConsistbenchError(f"unknown task {yaml_name!r}: no {path.name} in {TASK_DIR}")
    config = lm_eval_load_yaml(path, resolve_func=False)
    meta = config.get("metadata") or {}
    if meta.get("data_sha256") != data_sha:
        raise ConsistbenchError(f"the shipped task {yaml_name} records data version "
                                f"{str(meta.get('data_sha256'))[:16]}... but the data says {data_sha[:16]}...: "
                                "rebuild the data or the task")
    docs = task_records(data_sha256=data_sha, **(config.get("dataset_kwargs") or {}))
    return TaskSpec(name=task, config=config, data_sha256=data_sha, version=meta.get("version"),
                    # *_stderr entries are uncertainty estimates, not scores: not rescored here
                    metrics=[m["metric"] for m in config["metric_list"] if not m["metric"].endswith("_stderr")],
                    generation_kwargs=dict(config.get("generation_kwargs") or {}), docs=docs,
                    rs_threshold=float(meta.get("rs_threshold", 0.8)), run_task=yaml_name)


def frozen_version_of(res: dict, task: str) -> str | None:
    """The data version a results JSON records for ``task`` when it is a shipped earlier version
    (None when it is the current one, unknown or missing: the usual checks then apply)."""
    cfg = res["configs"].get(task)
    recorded = (cfg.get("metadata") or {}).get("data_sha256") if isinstance(cfg, dict) else None
    if not isinstance(recorded, str) or recorded == shipped_data_version():
        return None
    try:
        return dataversions.by_sha256(recorded).sha256
    except DataVersionError:
        return None
