"""The robust families on the leaderboard: optional extra tasks of a submission, shown apart.

A submission on a track may also hold that track's robust-family tasks, from the same run
(``consistbench eval --tasks consistency_mini,consistency_robust_mini``): their results sit in
the same results JSON and each has its own samples file, named in ``metadata.json`` under
``files.robust_samples`` (``{task: file}``). Each is validated exactly like the track's task
(data version, task version, documents, prompts, generation settings, every metric rescored)
and must use the shipped template set (a run with a user's ``templates_file`` is refused).

Their consistency metrics join the submission's metrics as ``<metric>_<family>`` (``em_typo``,
``rs_surface``, ``bs_template``: original against family variant); the site shows them as one
column group per family, only when a submission on the track includes them. The paper-
comparable ranking (the track's own metrics) is not changed by them.
"""

from __future__ import annotations

from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.metrics import CONSISTENCY_METRICS
from consistbench.benchmark.variants import ROBUST_TYPES

# track -> {family: task}
ROBUST_TASKS = {
    "consistency": {f: f"consistency_{f}" for f in ROBUST_TYPES},
    "consistency_mini": {f: f"consistency_{f}_mini" for f in ROBUST_TYPES},
}
TASK_FAMILY = {task: family for tasks in ROBUST_TASKS.values() for family, task in tasks.items()}
GROUP_LABELS = {f: f"{f} (robust)" for f in ROBUST_TYPES}


def metric_key(metric: str, family: str) -> str:
    """The name of a family's metric among a submission's metrics: ``em_typo``."""
    return f"{metric}_{family}"


def robust_tasks_in(results: dict) -> list[str]:
    return sorted(t for t in (results.get("results") or {}) if t in TASK_FAMILY)


def _fail(msg: str) -> None:
    raise ConsistbenchError(msg)


def validate_robust(directory: Path, meta, res: dict, results_path: Path, track: str):
    """Validate the submission's robust-family tasks; ``(metrics, reported, diffs, responses)``
    with metrics named by :func:`metric_key` and responses by task."""
    from consistbench.leaderboard import validate as V

    present = robust_tasks_in(res)
    files = dict(meta.files.robust_samples or {})
    allowed = ROBUST_TASKS.get(track, {})
    metrics, reported, diffs, responses = {}, {}, {}, {}
    for task in present:
        if task not in allowed.values():
            _fail(f"{results_path}: robust task {task!r} does not go with track {track!r} (expected "
                  + ", ".join(map(repr, allowed.values())) + ")")
        if task not in files:
            _fail(f"{directory / 'metadata.json'}: files.robust_samples names no samples file for {task!r}, which the "
                  "results JSON holds")
    for task in sorted(files):
        if task not in present:
            _fail(f"{directory / 'metadata.json'}: files.robust_samples names {task!r}, which the results JSON "
                  "does not hold")
    for task in present:
        try:
            got, rescored, rep, diff = _validate_task(V, directory, files[task], res, results_path, task)
        except ConsistbenchError as exc:  # name the robust task: its metrics share the track's names
            raise ConsistbenchError(f"robust task {task}: {exc}") from None
        family = TASK_FAMILY[task]
        for m in CONSISTENCY_METRICS:
            metrics[metric_key(m, family)] = rescored[m]
            reported[metric_key(m, family)] = rep[m]
            diffs[metric_key(m, family)] = diff[m]
        responses[task] = got
    return metrics, reported, diffs, responses


def _validate_task(V, directory: Path, name: str, res: dict, results_path: Path, task: str):
    """One robust task, checked exactly like the track's task (``validate.validate_submission``)."""
    spec = V.load_task(task)
    V._results(results_path, res, spec)
    if ((res["configs"].get(task) or {}).get("metadata") or {}).get("templates_file"):
        _fail(f"{results_path}: run with a user's template set (templates_file); the leaderboard takes the "
              "shipped set only")
    path = V._inside(directory, name, f"{task} samples")
    V._check_size(path, V.LIMITS["samples_compressed" if path.name.endswith(".gz") else "samples"], "samples")
    if not (path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz")):
        _fail(f"{path}: samples file must be .jsonl or .jsonl.gz")
    got = V._samples(path, spec, V.prompt_format(results_path, res))
    effective = ((res.get("n-samples") or {}).get(task) or {}).get("effective")
    if effective is not None and effective != len(spec.docs):
        _fail(f"{results_path}: n-samples.{task}.effective is {effective}, the task has {len(spec.docs)} documents")
    rescored, _ = V.rescore(spec, got)
    rep, diff = V.compare(results_path, spec, res, rescored)
    return got, rescored, rep, diff


def robust_intervals(validated, boot, rs_threshold: float) -> dict[str, list[float]]:
    """95% group-bootstrap intervals of a submission's family metrics (``{em_typo: [low, high]}``)."""
    import math

    from consistbench.benchmark import intervals as I
    from consistbench.benchmark import metrics as M
    from consistbench.leaderboard.validate import load_task

    out = {}
    for task, responses in sorted((getattr(validated, "robust_responses", None) or {}).items()):
        spec = load_task(task)
        scored = [M.Scored(d["id"], d["group_id"], d["variant_type"], responses[d["id"]], d["reference"])
                  for d in spec.docs]
        iv = I.bootstrap(I.group_stats(scored, M.ScoreSettings(rs_threshold=rs_threshold)), boot)["metrics"]
        for m in CONSISTENCY_METRICS:
            if m in iv and not math.isnan(iv[m]["low"]):
                out[metric_key(m, TASK_FAMILY[task])] = [iv[m]["low"], iv[m]["high"]]
    return out


def robust_columns(rows) -> list:
    """The ranking table's extra columns: one group per family that some row has (EM, RS, BS)."""
    from consistbench.leaderboard.site import METRIC_LABELS, Column

    have = {k for row in rows for k in row.metrics}
    return [Column(metric_key(m, f), METRIC_LABELS[m], f, "consistency")
            for f in ROBUST_TYPES if any(metric_key(m, f) in have for m in CONSISTENCY_METRICS)
            for m in CONSISTENCY_METRICS]


def robust_charts(row) -> list[str]:
    """The model page's chart of the robust families, when the row has them."""
    from consistbench.leaderboard.site import METRIC_LABELS, bar_chart_svg

    families = [f for f in ROBUST_TYPES if any(metric_key(m, f) in row.metrics for m in CONSISTENCY_METRICS)]
    if not families:
        return []
    return [bar_chart_svg("Robust families: consistency with the original's answer", families,
                          [(METRIC_LABELS[m], [row.metrics.get(metric_key(m, f)) for f in families])
                           for m in CONSISTENCY_METRICS])]


def robust_files(meta) -> list[str]:
    """The submission's robust samples files (shipped with the site beside its other files)."""
    return [name for _, name in sorted((meta.files.robust_samples or {}).items())]
