"""``consistbench leaderboard build``: a static, offline site from validated submissions.

Every submission is validated (and rescored) first (:func:`collect`); the site shows the
rescored numbers. Output:

* ``index.html``  the ranking table (sortable; overall and per variant type; accuracy and
  consistency side by side), the data version, a link to the submission guide;
* ``models/<slug>.html``  one page per model: metadata, per-type table and inline SVG charts;
* ``submit.html``  how to submit; ``leaderboard.json`` / ``leaderboard.csv`` for machines;
  ``submission.schema.json`` the metadata schema; ``submissions/<slug>/`` each entry's own files.

This module ranks (:func:`ranking`, with group-bootstrap intervals and tie marks:
:func:`attach_intervals`), splits the site into sections (:func:`sections_of`) and writes it
(:func:`build_site`); the drawing is :mod:`consistbench.leaderboard.render`. Pages carry their
CSS and JavaScript inline (no CDN, no server: they work from ``file://``). All user text goes
through Jinja2's autoescaping. The output is byte-identical for identical inputs (no
timestamps, sorted keys, fixed number formats) and is written into a temporary directory that
replaces ``SITE_DIR`` only when everything succeeded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.progress import Progress

from consistbench.benchmark import dataversions
from consistbench.benchmark import intervals as I
from consistbench.benchmark import metrics as M
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import atomic_path
from consistbench.benchmark.metrics import ACCURACY_METRICS, CONSISTENCY_METRICS
from consistbench.benchmark.variants import ALL_TYPES
from consistbench.leaderboard.limits import LIMITS, read_submission_file
from consistbench.leaderboard.render import (COVERAGE_FIELDS, environment, model_charts, ranking_columns,
                                             ranking_csv, render_ranking_table, robust_columns)
from consistbench.leaderboard.rescore import (PLAUSIBLE_IDENTICAL_GROUPS, PLAUSIBLE_MAX, PLAUSIBLE_REFERENCE_SHARE,
                                              TOLERANCE, TOLERANCE_BS)
from consistbench.leaderboard.schema import SAFE_SLUG, ReproductionRecord, RankingRow, metadata_json_schema_text
from consistbench.leaderboard.tracks import (LEADERBOARD_TASK, TASK_FAMILY, TRACKS, TaskSpec, load_task, metric_key,
                                             shipped_data_version)
from consistbench.leaderboard.cache import validate_cached
from consistbench.leaderboard.validate import Validated

SITE_MARKER = ".consistbench-leaderboard"  # refuse to replace a directory that is not a site we built
DEFAULT_SORT = ("rougeL", "rs")  # accuracy first: consistency alone rewards a model that says the same nothing


def _clean(value):
    """NaN becomes null: browsers' JSON.parse rejects NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _sort_key(row: RankingRow):
    keys = []
    for metric in DEFAULT_SORT:
        v = row.metrics.get(metric)
        keys.append(-(v if v is not None and not math.isnan(v) else -1.0))
    return (*keys, row.slug)


def ranking(validated: list[tuple[str, Validated]]) -> list[RankingRow]:
    """Ranking rows ordered by the default key (ROUGE-L, then RS, then slug); rank 1 is best."""
    rows = [RankingRow(rank=0, slug=slug, model=v.metadata.model, submitter=v.metadata.submitter,
                       date=v.metadata.date, task=v.task, data_sha256=v.data_sha256, n_docs=v.n_docs,
                       n_pairs=v.n_pairs, metrics=v.metrics, reported=v.reported, notes=v.metadata.notes,
                       verification=v.verification, implausible=v.implausible,
                       reproduction=reproduction_summary(v.reproduction))
            for slug, v in validated]
    rows.sort(key=_sort_key)
    for i, row in enumerate(rows, start=1):
        row.rank = i
    return rows


def reproduction_summary(rec: ReproductionRecord | None) -> dict | None:
    """The figures of a reproduction record that the site shows (None without a record).

    ``mode``, ``rows_checked``, ``rows_total``, ``detectable_share``, ``power``: what was
    regenerated (:func:`consistbench.leaderboard.sampling.coverage`). A record written before
    they were recorded was a seeded sample (the only mode then): its figures are inferred from its
    plan and count (``mode_recorded`` false), never "all".
    """
    if rec is None:
        return None
    p = rec.plan
    if rec.mode is None:
        covered = {"mode": "sample", "rows_checked": rec.compared_docs, "rows_total": p.n_docs,
                   "detectable_share": p.forged_share, "power": p.detection_probability}
    else:
        covered = {k: getattr(rec, k) for k in COVERAGE_FIELDS}
    return {"mode_recorded": rec.mode is not None, "verdict": rec.verdict, "groups": len(rec.groups),
            "n_groups": p.n_groups, "docs": rec.compared_docs,
            "exact_matches": rec.exact_matches, "exact_match_share": rec.exact_match_share,
            "exact_match_ci": rec.exact_match_ci, "mismatched_groups": rec.mismatched_groups,
            "max_mismatched_groups": p.max_mismatched_groups, "forged_share": p.forged_share, "asked_power": p.power,
            "detection_probability": p.detection_probability, "seed": rec.seed, "salt": rec.salt,
            "model_args": rec.model_args, "date": rec.date.isoformat(),
            "metrics": {m: d.model_dump() for m, d in rec.metrics.items()}, **covered}


def attach_intervals(rows: list[RankingRow], validated: dict[str, Validated], spec: TaskSpec, boot=None) -> dict:
    """95% group-bootstrap interval of every metric (``row.ci``) and, from rank 2 on, the paired
    bootstrap against the model ranked just above (``row.vs_above``, ``row.tied_with_above``).

    See docs/METRICS.md, "Confidence intervals": groups are resampled whole, both models of a
    pair on the same resampled groups; the seed is fixed, so rebuilds stay byte-identical.
    """
    boot = boot or I.BootstrapSettings()
    settings = M.ScoreSettings(rs_threshold=spec.rs_threshold)
    stats = []
    for row in rows:
        responses = validated[row.slug].responses
        stats.append(I.group_stats(M.scored_rows(spec.docs, responses), settings))
        iv = I.bootstrap(stats[-1], boot)["metrics"]
        row.ci = {m: [v["low"], v["high"]] for m, v in sorted(iv.items()) if not math.isnan(v["low"])}
        row.ci.update(_robust_intervals(validated[row.slug], boot, spec.rs_threshold))
    for i in range(1, len(rows)):
        diff = I.paired_bootstrap(stats[i - 1], stats[i], boot)["metrics"]
        rows[i].vs_above = {m: {k: diff[m][k] for k in ("difference", "low", "high", "p_value", "significant")}
                            for m in DEFAULT_SORT if m in diff}
        rows[i].tied_with_above = not diff[DEFAULT_SORT[0]]["significant"]
    return boot.describe()


def _robust_intervals(validated: Validated, boot, rs_threshold: float) -> dict[str, list[float]]:
    """95% group-bootstrap intervals of a submission's family metrics (``{em_typo: [low, high]}``)."""
    out = {}
    for task, responses in sorted((validated.robust_responses or {}).items()):
        spec = load_task(task)
        iv = I.bootstrap(I.group_stats(M.scored_rows(spec.docs, responses), M.ScoreSettings(rs_threshold=rs_threshold)),
                         boot)["metrics"]
        for m in CONSISTENCY_METRICS:
            if m in iv and not math.isnan(iv[m]["low"]):
                out[metric_key(m, TASK_FAMILY[task])] = [iv[m]["low"], iv[m]["high"]]
    return out


def site_json(tracks: dict[str, list[RankingRow]], specs: dict, intervals: dict | None = None,
              descriptions: dict[str, str] | None = None) -> str:
    """``leaderboard.json``: every section's rows with its task, data version and tolerances
    (NaN written as null, keys sorted)."""
    descriptions = descriptions or {}
    doc = {"generator": "consistbench leaderboard build", "schema_version": 1, "default_sort": list(DEFAULT_SORT),
           "tolerance": {"default": TOLERANCE, "bs": TOLERANCE_BS}, "intervals": intervals,
           "tracks": {task: {"description": descriptions.get(task, TRACKS.get(task, task)),
                             "task": specs[task].name, "task_version": specs[task].version,
                             "data_sha256": specs[task].data_sha256, "n_docs": len(specs[task].docs),
                             "rows": [r.model_dump(mode="json") for r in rows]}
                      for task, rows in tracks.items()}}
    return json.dumps(_clean(doc), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------
# Building

def collect(submissions_dir: str | Path, task: str | None = None, *, use_cache: bool = True) -> list[tuple[str, Validated]]:
    """Validate every submission directory (sorted by name); the first invalid one stops the build.
    ``use_cache``: reuse unchanged submissions' results (:mod:`~consistbench.leaderboard.cache`)."""
    root = Path(submissions_dir)
    if not root.is_dir():
        raise ConsistbenchError(f"{root}: not a directory")
    links = sorted(p.name for p in root.iterdir() if p.is_symlink())
    if links:  # a link could point anywhere; build would copy that tree into the site
        raise ConsistbenchError(f"{root / links[0]}: a symbolic link among the submissions (refused: each submission "
                                "is a plain directory)")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise ConsistbenchError(f"{root}: no submission directories")
    out = []
    with Progress(transient=True) as bar:
        job = bar.add_task("validating submissions", total=len(dirs))
        for d in dirs:
            if not SAFE_SLUG.match(d.name):
                raise ConsistbenchError(f"{d}: submission directory names use lower-case letters, digits, '.', '_' "
                                        "and '-' (they become page names)")
            try:
                out.append((d.name, validate_cached(d, task=task, use_cache=use_cache)[0]))
            except ConsistbenchError as exc:
                raise ConsistbenchError(f"submission {d.name!r} is invalid: {exc}") from None
            bar.advance(job)
    return out


def sections_of(validated: list[tuple[str, Validated]], task: str | None = None):
    """The site's sections: every track on the current data, then each track on each earlier data
    version that a submission was made on (rescored on that version, ranked only among its peers:
    scores on different data are never compared). Returns ``(keys, {key: (task, data_sha256)},
    {key: description})``; a section on an earlier version is keyed ``<task>@<version>``."""
    current = shipped_data_version()
    keys, task_of, descriptions = [], {}, {}
    for name in ([task] if task else list(TRACKS)):
        keys.append(name)
        task_of[name], descriptions[name] = (name, current), TRACKS[name]
        for sha in sorted({v.data_sha256 for _, v in validated if v.task == name and v.data_sha256 != current}):
            version = dataversions.by_sha256(sha)
            key = f"{name}@{version.name}"
            keys.append(key)
            task_of[key] = (name, sha)
            descriptions[key] = (f"{TRACKS[name]}, on the earlier data version {version.name} ({sha[:12]}...): "
                                 "kept so that published numbers stay checkable; not ranked with the current data")
    return keys, task_of, descriptions


def build_site(submissions_dir: str | Path, site_dir: str | Path, task: str | None = None, *,
               use_cache: bool = True) -> dict[str, list[RankingRow]]:
    """Validate, rank per track and write the site; ``site_dir`` is replaced atomically."""
    site_dir = Path(site_dir)
    if site_dir.exists() and (not site_dir.is_dir() or (any(site_dir.iterdir()) and not (site_dir / SITE_MARKER).exists())):
        raise ConsistbenchError(f"{site_dir}: exists and is not a leaderboard site built by consistbench; "
                                "choose an empty or new directory")
    validated = collect(submissions_dir, task, use_cache=use_cache)
    names, task_of, descriptions = sections_of(validated, task)
    specs = {key: load_task(task_of[key][0], task_of[key][1]) for key in names}
    tracks = {key: ranking([(slug, v) for slug, v in validated if (v.task, v.data_sha256) == task_of[key]])
              for key in names}
    intervals = {}
    for name in names:  # 95% intervals and tie marks
        intervals = attach_intervals(tracks[name], dict(validated), specs[name])
    columns = ranking_columns()
    all_columns = columns + robust_columns([r for rows in tracks.values() for r in rows])  # CSV: every track's
    env = environment()
    main = specs[names[0]]
    common = {"data_sha256": main.data_sha256, "tolerance": TOLERANCE, "tolerance_bs": TOLERANCE_BS,
              "limits": {k: (f"{v // 1048576} MiB" if v >= 1048576 else f"{v // 1024} KiB") for k, v in LIMITS.items()}, "default_sort": DEFAULT_SORT,
              "main_task": LEADERBOARD_TASK, "intervals": intervals,
              "plausible": {"max": PLAUSIBLE_MAX, "reference_share": PLAUSIBLE_REFERENCE_SHARE,
                            "identical_groups": PLAUSIBLE_IDENTICAL_GROUPS}}
    sections = [{"task": name, "description": descriptions[name], "version": specs[name].version,
                 "n_docs": len(specs[name].docs), "rows": tracks[name],
                 "table": render_ranking_table(tracks[name], columns + robust_columns(tracks[name]))
                 if tracks[name] else None} for name in names]
    pages = {
        "index.html": env.get_template("index.html").render(sections=sections, root="", **common),
        "submit.html": env.get_template("submit.html").render(root="", tracks=TRACKS, **common),
    }
    by_slug = dict(validated)
    for name in names:
        for row in tracks[name]:
            # the submission's own files ship with the site, so anyone can re-check the numbers
            v = by_slug[row.slug]
            files = v.files
            for f in files:
                pages[f"submissions/{row.slug}/{f}"] = read_submission_file(v.directory, v.metadata, f)
            pages[f"models/{row.slug}.html"] = env.get_template("model.html").render(
                row=row, charts=model_charts(row), types=ALL_TYPES, track=descriptions[name], n_docs=len(specs[name].docs),
                accuracy=ACCURACY_METRICS, consistency=CONSISTENCY_METRICS, files=files, root="../", **common)
    pages["leaderboard.json"] = site_json(tracks, specs, intervals, descriptions)
    pages["leaderboard.csv"] = ranking_csv(tracks, all_columns)
    pages["submission.schema.json"] = metadata_json_schema_text()
    pages[SITE_MARKER] = "built by `consistbench leaderboard build`; safe to replace\n"
    with atomic_path(site_dir, is_dir=True) as tmp:
        (tmp / "models").mkdir()
        for name, content in sorted(pages.items()):
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
            path.chmod(0o644)
    return tracks
