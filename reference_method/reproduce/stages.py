"""The stages of a reproduction: one function per stage, run in the order of :data:`STAGES`.

Each stage takes the :class:`~consistbench.reference_method.reproduce.run_folder.Run`, writes its
output atomically and is skipped when that output exists (what each writes: the package's
docstring). A stage is added by writing ``stage_NAME(run)`` (here or in a module of its own:
:mod:`.search_stages`, :mod:`.merge_stages`) and listing it in :data:`STAGES` at its place in the
order; ``--stages`` and the help text follow the table.

With a launcher on several machines, the machine of rank 0 runs the stages and posts each launched
job; every other machine only follows (:class:`~.launch.JobBoard`).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import write_json, write_jsonl, write_text
from consistbench.benchmark.schema import load_data
from consistbench.benchmark.variants.paraphrase import make_paraphraser
from consistbench.reference_method import doctor
from consistbench.reference_method.collator import encode_row
from consistbench.reference_method.reproduce.charts import bar_chart
from consistbench.reference_method.reproduce.evaluation import evaluate_model
from consistbench.reference_method.reproduce.jobs import (
    arm_budget,
    card_of,
    rebuild,
    run_config,
    run_mining,
    train_data,
    train_model,
)
from consistbench.reference_method.reproduce.launch import JobBoard
from consistbench.reference_method.reproduce.merge_stages import (
    stage_merge,
    stage_null_merges,
    stage_temperature,
    stage_weights,
)
from consistbench.reference_method.reproduce.presets import SPECIALISED, arm_of, training_runs
from consistbench.reference_method.reproduce.run_folder import Run, results_file, trained
from consistbench.reference_method.reproduce.search_stages import (
    chosen_setting,
    stage_checkpoints,
    stage_search,
    stage_triplet_search,
    triplet_choice,
)
from consistbench.reference_method.reproduce.table import markdown_table, print_table, table_doc
from consistbench.reference_method.synth import default_train_file, synthesize_file


# ---------------------------------------------------------------------------------------------
# data

def stage_base(run: Run) -> None:
    """``base/``: the doctor's corrected copy of the base model, only when the doctor finds an error."""
    src, fixed = run.source_model(), run.dir / "base"
    if (fixed / "config.json").is_file():
        run.log(f"[base] {fixed} exists: skipped")
        return
    errors = [f for f in doctor.check(src) if f.severity == "error"]
    if not errors:
        run.log(f"[base] {src}: doctor found no error, used as it is")
        return
    run.log(f"[base] {src}: " + "; ".join(f.message for f in errors) + f" -> corrected copy in {fixed}")
    actions, _ = run.timed("base", lambda: doctor.fix(src, fixed))
    for a in actions:
        run.log(f"[base] fixed: {a}")


def stage_synth(run: Run) -> None:
    """``synth/synth.jsonl``: synthetic variants of the train questions."""
    if run.synth_file.is_file():
        run.log(f"[synth] {run.synth_file} exists: skipped")
        return
    s = dict(run.preset.synth)
    backend, pmodel = s.pop("paraphraser", "local_lm"), s.pop("paraphrase_model", None)
    if backend == "local_lm" and pmodel is None and run.preset.model:
        pmodel = str(run.source_model())  # paraphrases from the base model itself (paper preset)
    paraphraser = make_paraphraser(backend, model=pmodel) if "paraphrase" in s["types"] else None

    def synthesize():
        t0 = time.monotonic()
        # a line per variant type: the stage takes minutes on CPU and has no finer-grained step
        stats = synthesize_file(default_train_file(), run.synth_file, paraphraser=paraphraser, **s,
                                progress=lambda kind, n: run.log(f"[synth] {kind}: candidates for {n} "
                                                                 f"questions ({time.monotonic() - t0:.0f} s)"))
        run.log(f"[synth] {stats.originals} originals, variants {stats.variants}, "
                f"{stats.duplicates} duplicates dropped")

    run.timed("synth", synthesize)


def stage_select(run: Run) -> None:
    """``synth/train.jsonl`` (and ``train_all.jsonl``): the training questions that fit ``max_length``."""
    if run.train_file.is_file() and run.train_all_file.is_file():
        run.log(f"[select] {run.train_file} exists: skipped")
        return
    run.timed("select", lambda: _select(run))


def _select(run: Run) -> None:
    n = run.preset.questions_per_type
    raw = [json.loads(line) for line in run.synth_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if n is None and run.preset.all_data_questions:
        raise ConsistbenchError("all_data_questions needs questions_per_type")
    rows = load_data(run.synth_file)
    tok = doctor.load_tokenizer(run.base_model())
    limit = run.preset.train.get("max_length", 1024)
    by_group: dict[str, list] = {}
    for r in rows:
        by_group.setdefault(r.group_id, []).append(r)
    fits = {g for g, rs in by_group.items()
            if max(len(encode_row(tok, r.context, r.question, r.reference)["input_ids"]) for r in rs) <= limit}
    if n is None:
        # every question with all its variants, whole groups that fit: triplets and rows then drop nothing,
        # so plain SFT (rows) and SFT + triplet train on exactly the same rows
        out = [r for r in raw if r["group_id"] in fits]
        write_jsonl(run.train_file, out)
        run.log(f"[select] every question: {len(fits)} groups, {len(out)} rows within {limit} tokens "
                f"(of {len(by_group)} groups)")
        return
    keep: dict[str, set[str]] = {}  # group -> variant types kept
    counts = {}
    for t in SPECIALISED:
        cands = sorted(g for g in fits if any(r.variant_type == t for r in by_group[g]))
        chosen = random.Random(f"{run.preset.synth.get('seed', 0)}|{t}").sample(cands, min(n, len(cands)))
        counts[t] = len(chosen)
        for g in chosen:
            keep.setdefault(g, set()).add(t)
    short = {t: c for t, c in counts.items() if c < n}
    if short:
        raise ConsistbenchError(f"[select] too few synthetic questions within max_length={limit} tokens: "
                                f"{short} (want {n} per type); raise the synth limit")
    out = [r for r in raw if r["group_id"] in keep
           and (r["variant_type"] == "original" or r["variant_type"] in keep[r["group_id"]])]
    if run.preset.all_data_questions:
        m = run.preset.all_data_questions
        rng = random.Random(f"{run.preset.synth.get('seed', 0)}|all")
        pick: dict[str, str] = {}  # group -> its one variant type, types in turn
        pools = {t: sorted(g for g, ts in keep.items() if t in ts) for t in SPECIALISED}
        for pool in pools.values():
            rng.shuffle(pool)
        while len(pick) < m and any(pools.values()):
            for t in SPECIALISED:
                while pools[t] and pools[t][-1] in pick:
                    pools[t].pop()
                if pools[t] and len(pick) < m:
                    pick[pools[t].pop()] = t
        if len(pick) < m:
            raise ConsistbenchError(f"[select] only {len(pick)} questions for the all-data models (want {m})")
        write_jsonl(run.train_all_file, [r for r in raw if r["group_id"] in pick
                                         and r["variant_type"] in ("original", pick[r["group_id"]])])
    write_jsonl(run.train_file, out)
    run.log(f"[select] {n} questions per type ({len(keep)} groups, {len(out)} rows) of {len(fits)} groups "
            f"within {limit} tokens (of {len(by_group)})")


# ---------------------------------------------------------------------------------------------
# training

def stage_train(run: Run) -> None:
    """``models/<name>/``: every model of :func:`~.presets.training_runs`, with the dev choices (a model
    whose folder is gone but whose adapter and card are kept is rebuilt, not trained)."""
    setting, triplet = chosen_setting(run), triplet_choice(run)
    curve = run.preset.eval_checkpoints
    for name, vtype, alpha in training_runs(run.preset):
        if run.only is not None and name not in run.only:
            continue
        out = run.model_dir(name)
        if trained(out) or rebuild(run, name, out):
            run.log(f"[train {name}] {out} exists: skipped")
            continue
        config = run_config(run, name, alpha, setting, triplet)
        keep = bool(curve) and name == run.preset.checkpoint_arm
        if keep:  # a checkpoint at every fraction of the curve's grid (its smallest step)
            config.save_steps = min(curve)
        if arm_of(name) == "sft_dose":
            dose_rows(run)
        train_model(run, f"train {name}", out, vtype, config, run_mining(run, name, config.alpha, triplet),
                    train_data(run, name, vtype), keep_checkpoints=keep)


def dose_rows(run: Run) -> None:
    """``synth/train_dose.jsonl``: the SFT rows repeated (whole copies, then whole groups in a seeded order)
    until there are as many training sequences per epoch as the three specialised models have together
    (their cards); each copy renamed (``id~k``, ``group_id~k``) so the file stays valid data."""
    if run.dose_file.is_file():
        return
    target = 0
    for t in SPECIALISED:
        card = card_of(run.model_dir(f"sft_triplet_{t}"))
        if card is None:
            raise ConsistbenchError(f"[train sft_dose] sft_triplet_{t}: not trained yet (the specialised models come "
                                    "first: their sequences set the dose)")
        target += card["data"]["training_sequences_per_epoch"]
    raw = [json.loads(line) for line in run.train_all_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    groups: dict[str, list[dict]] = {}
    for r in raw:
        groups.setdefault(r["group_id"], []).append(r)
    order = sorted(groups)
    out: list[dict] = []
    copy = 0
    while len(out) < target:
        random.Random(f"{run.preset.synth.get('seed', 0)}|dose|{copy}").shuffle(order)
        for g in order:
            if len(out) >= target:
                break
            out += [dict(r, id=f"{r['id']}~{copy}", group_id=f"{g}~{copy}") for r in groups[g]]
        copy += 1
    write_jsonl(run.dose_file, out)
    run.log(f"[train sft_dose] {len(out)} rows per epoch (the specialised models' {target} sequences; "
            f"{copy} passes over the {len(raw)} SFT rows)")


# ---------------------------------------------------------------------------------------------
# evaluation

def stage_eval(run: Run) -> None:
    """``eval/<name>/``: every model of the table through lm-eval on the preset's task."""
    for name, path in run.models_to_eval().items():
        if run.only is not None and name not in run.only:
            continue
        folder = run.eval_dir(name)
        if results_file(folder):
            run.log(f"[eval {name}] {folder} exists: skipped")
            continue
        if not (path / "config.json").is_file():
            if run.allow_missing:
                run.log(f"[eval {name}] {path}: no model yet, left out (--allow-missing)")
                continue
            raise ConsistbenchError(f"[eval {name}] {path}: no model (run the earlier stages)")
        evaluate_model(run, f"eval {name}", path, folder, run.preset.task)


def budgets(run: Run) -> dict:
    """``budgets.json``: each trained model's updates, sequences and tokens (counted once, from its card)."""
    path = run.dir / "budgets.json"
    known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for name, _, _ in training_runs(run.preset):
        card = card_of(run.model_dir(name))
        if name not in known and card is not None:
            known[name] = arm_budget(run, card)
            write_json(path, known)
    return known


def stage_table(run: Run) -> dict:
    """``results/results.{json,md,png}``: the table (:mod:`.table`), always rebuilt."""
    doc = table_doc(run, budgets(run))
    run.results_dir.mkdir(parents=True, exist_ok=True)
    write_json(run.results_dir / "results.json", doc)
    write_text(run.results_dir / "results.md", markdown_table(doc))
    bar_chart(doc, run.results_dir / "results.png")
    print_table(doc)
    run.log(f"[table] wrote {run.results_dir}/results.md, .json, .png")
    return doc


# ---------------------------------------------------------------------------------------------
# the order

STAGES: dict[str, Callable[[Run], object]] = {
    "base": stage_base,
    "synth": stage_synth,
    "select": stage_select,
    "search": stage_search,
    "triplet_search": stage_triplet_search,
    "train": stage_train,
    "checkpoints": stage_checkpoints,
    "weights": stage_weights,
    "merge": stage_merge,
    "temperature": stage_temperature,
    "null_merges": stage_null_merges,
    "eval": stage_eval,
    "table": stage_table,
}


def run_stages(run: Run, stages: Sequence[str] = tuple(STAGES)) -> None:
    """Check the base model (the paper preset without --model fails here, before the run folder is
    created), record the run and run ``stages`` in the given order. On several machines, a machine
    of rank above 0 follows the main one's launched jobs instead."""
    run.source_model()
    if run.launcher.follower:
        JobBoard(run.dir).follow(run.launcher, run.log)
        return
    run.record()
    board = JobBoard(run.dir) if run.launcher.settings()["num_machines"] > 1 else None
    if board:
        board.start()
    try:
        for stage in stages:
            STAGES[stage](run)
    finally:
        if board:
            board.end()
