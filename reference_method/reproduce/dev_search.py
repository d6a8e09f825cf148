"""Choosing on dev: score a list of candidate models on the preset's ``search_task``, pick the best.

Both searches of a reproduction use it: the ``search`` stage (a grid of training settings, each
candidate a trained model) and the ``temperature`` stage (weights temperatures, each candidate a
merged model). A candidate is built when it is missing, evaluated once on the dev task and
recorded as a line of the stage's records file as soon as it is scored, so a rerun after a crash
scores only what is left. The test split is never read here.

The rule, written once (:func:`best_on_dev`): the highest dev mean of EM and RS; a tie goes to
the stage's tie-break (fewer training steps for the search), then to the earlier candidate.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from consistbench.benchmark import evaluate
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import write_json
from consistbench.reference_method.reproduce.evaluation import evaluate_model
from consistbench.reference_method.reproduce.run_folder import Run, append_record, read_records, results_file

RULE = "highest dev mean of EM and RS"


@dataclass
class Candidate:
    """One model to score on dev."""

    name: str                    # in log lines and timings: "search s0", "temperature 0.05"
    key: Hashable                # identifies the candidate's line in the records file
    build: Callable[[], Path]    # makes the model when it is missing; returns its folder
    eval_dir: Path               # where its dev evaluation goes
    head: dict = field(default_factory=dict)  # the record's fields before the scores
    tail: dict = field(default_factory=dict)  # the record's fields after the scores
    note: str = ""               # said in the log line before the scores


def dev_score(run: Run, key: str, model: Path, folder: Path) -> dict:
    """EM and RS of ``model`` on the search task (evaluated once; the results are reused on a rerun)."""
    task = run.preset.search_task
    evaluate_model(run, key, model, folder, task)
    found = results_file(folder)
    m = evaluate.task_metrics(json.loads(found.read_text(encoding="utf-8")), task)
    em, rs = float(m["em"]), float(m["rs"])
    return {"task": task, "em": em, "rs": rs, "score": (em + rs) / 2, "results_file": str(found)}


def score_on_dev(run: Run, records_file: Path, candidates: Sequence[Candidate],
                 record_key: Callable[[dict], Hashable]) -> list[dict]:
    """Build and score every candidate not yet in ``records_file`` (a line each, as it finishes);
    return the records of ``candidates`` in file order. ``record_key`` gives a record's key."""
    done = {record_key(r) for r in read_records(records_file)}
    for c in candidates:
        if c.key in done:
            run.log(f"[{c.name}] scored already: skipped")
            continue
        model = c.build()
        score = dev_score(run, f"{c.name} eval", model, c.eval_dir)
        append_record(records_file, {**c.head, **score, **c.tail})
        run.log(f"[{c.name}] {c.note}dev EM {score['em']:.4f}, RS {score['rs']:.4f}")
    keys = {c.key for c in candidates}
    return [r for r in read_records(records_file) if record_key(r) in keys]


def best_on_dev(records: Sequence[dict], tiebreak: Callable[[dict], float] | None = None) -> dict:
    """The record with the highest dev score (mean of EM and RS); a tie goes to the smaller
    ``tiebreak(record)``, then to the earlier record."""
    return min(enumerate(records), key=lambda ir: (-ir[1]["score"], tiebreak(ir[1]) if tiebreak else 0, ir[0]))[1]


def choose_setting(results: list[dict], train: dict) -> dict:
    """The search's rule: the highest dev mean of EM and RS; a tie goes to fewer training steps, then to
    the earlier setting of the grid. ``results`` are search.jsonl records in grid order."""
    if not results:
        raise ConsistbenchError("[search] no scored setting to choose from")

    def steps(r: dict) -> float:
        s = {**train, **r["setting"]}
        return s["max_steps"] if s.get("max_steps", -1) > 0 else float("inf")

    return best_on_dev(results, steps)


def write_chosen(path: Path, best: dict, fields: Sequence[str], ties: str) -> None:
    """Write the chosen candidate's ``fields`` and the rule (``ties``: how a tie was broken)."""
    write_json(path, {k: best[k] for k in fields} | {"rule": f"{RULE}; ties: {ties}"})
