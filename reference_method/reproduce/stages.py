"""The stages of a reproduction: one function per stage, run in the order of :data:`STAGES`.

Each stage takes the :class:`~consistbench.reference_method.reproduce.run_folder.Run`, writes its
output atomically and is skipped when that output exists (what each writes: the package's
docstring). A stage is added by writing ``stage_NAME(run)`` (here or in a module of its own)
and listing it in :data:`STAGES` at its place in the order; ``--stages`` and the help text
follow the table.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import write_json, write_jsonl, write_text
from consistbench.benchmark.schema import load_data
from consistbench.benchmark.variants.paraphrase import make_paraphraser
from consistbench.reference_method import doctor
from consistbench.reference_method.collator import encode_row
from consistbench.reference_method.merge.engine import merge
from consistbench.reference_method.reproduce.charts import bar_chart, search_chart
from consistbench.reference_method.reproduce.dev_search import (
    Candidate,
    best_on_dev,
    choose_setting,
    score_on_dev,
    write_chosen,
)
from consistbench.reference_method.reproduce.jobs import (
    evaluate_model,
    merge_config,
    run_config,
    specialised_weights,
    train_model,
)
from consistbench.reference_method.reproduce.presets import SPECIALISED, training_runs
from consistbench.reference_method.reproduce.run_folder import Run, results_file, trained
from consistbench.reference_method.reproduce.table import markdown_table, print_table, table_doc
from consistbench.reference_method.synth import default_train_file, synthesize_file
from consistbench.reference_method.weights_file import options_from


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

def stage_search(run: Run) -> None:
    """``search/search.jsonl``, ``chosen.json``, ``search.png``: each setting of the preset's grid
    trains the all-data SFT + triplet model, scored on dev; the best becomes ``models/sft_triplet_all``."""
    grid = run.preset.search_grid
    if not grid:
        run.log("[search] no search grid in this preset: skipped")
        return
    chosen_file, records_file = run.search_dir / "chosen.json", run.search_dir / "search.jsonl"
    if chosen_file.is_file():
        run.log(f"[search] {chosen_file} exists: skipped")
        return
    candidates = [_setting_candidate(run, i, setting) for i, setting in enumerate(grid)]
    records = score_on_dev(run, records_file, candidates, lambda r: _setting_key(r["setting"]))
    best = choose_setting(records, run.preset.train)
    search_chart(records, best, run.search_dir / "search.png")
    # the chosen model *is* the all-data SFT + triplet model (same base, data and settings): keep it
    target, src = run.model_dir("sft_triplet_all"), Path(best["model"])
    if not trained(target) and trained(src):
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        src.rename(target)
    write_chosen(chosen_file, best, ("id", "setting", "task", "em", "rs", "score"),
                 ties="fewer steps, then grid order")
    shutil.rmtree(run.search_dir / "models", ignore_errors=True)  # the others are reproducible from the grid
    run.log(f"[search] chosen {best['id']} {best['setting']} (dev EM+RS mean {best['score']:.4f})")


def _setting_key(setting: dict) -> str:
    return json.dumps(setting, sort_keys=True)


def _setting_candidate(run: Run, i: int, setting: dict) -> Candidate:
    """Setting ``i`` of the search grid: the all-data SFT + triplet model trained with it."""
    sid = f"s{i}"
    model = run.search_dir / "models" / sid

    def build() -> Path:
        if not trained(model):
            train_model(run, f"search {sid} train", model, "all",
                        run_config(run, "sft_triplet_all", run.preset.triplet_alpha, setting))
        return model

    return Candidate(name=f"search {sid}", key=_setting_key(setting), build=build,
                     eval_dir=run.search_dir / "eval" / sid, head={"id": sid, "setting": setting},
                     tail={"model": str(model)}, note=f"{setting}: ")


def chosen_setting(run: Run) -> dict | None:
    """The setting the search chose (None for a preset without a search); refuses to guess before it ran."""
    if not run.preset.search_grid:
        return None
    path = run.search_dir / "chosen.json"
    if not path.is_file():
        raise ConsistbenchError(f"[train] {path}: no chosen setting yet (run the search stage first)")
    return json.loads(path.read_text(encoding="utf-8"))["setting"]


def stage_train(run: Run) -> None:
    """``models/<name>/``: every model of :func:`~.presets.training_runs`, with the search's choice."""
    setting = chosen_setting(run)
    for name, vtype, alpha in training_runs(run.preset):
        if run.only is not None and name not in run.only:
            continue
        out = run.model_dir(name)
        if trained(out):
            run.log(f"[train {name}] {out} exists: skipped")
            continue
        train_model(run, f"train {name}", out, vtype, run_config(run, name, alpha, setting))


# ---------------------------------------------------------------------------------------------
# merging

def stage_weights(run: Run) -> None:
    """``weights/weights.json`` (+ heatmap; + ``similarities.npz`` for the temperature stage)."""
    if run.weights_file.is_file():
        run.log(f"[weights] {run.weights_file} exists: skipped")
        return
    options = options_from(**run.preset.weights)
    sims = run.similarities_file if run.preset.temperatures else None
    run.timed("weights", lambda: specialised_weights(run, options, run.weights_file, "weights",
                                                     log=run.log, similarities_out=sims))


def stage_merge(run: Run) -> None:
    """``models/merged/``: the consistency merge of the specialised models (and ``merge.yaml``)."""
    out = run.model_dir("merged")
    if (out / "config.json").is_file():
        run.log(f"[merge] {out} exists: skipped")
        return
    cfg = merge_config(run, run.weights_file)
    write_text(run.dir / "merge.yaml", cfg.to_yaml())
    run.timed("merge", lambda: merge(cfg, out, log=run.log))


def stage_temperature(run: Run) -> None:
    """Merge with each of the preset's weights temperatures (the similarities are reused, no model runs
    again), score each merged candidate on the search task, and install the best as ``models/merged``."""
    temps = run.preset.temperatures
    if not temps:
        run.log("[temperature] no temperatures in this preset: skipped")
        return
    chosen_file, records_file = run.search_dir / "temperature_chosen.json", run.search_dir / "temperature.jsonl"
    if not chosen_file.is_file():
        if not run.similarities_file.is_file():
            raise ConsistbenchError(f"[temperature] {run.similarities_file}: missing (the weights stage keeps "
                                    "it; remove weights/ and run the weights stage again)")
        candidates = [_temperature_candidate(run, t) for t in temps]
        records = score_on_dev(run, records_file, candidates, lambda r: float(r["temperature"]))
        best = best_on_dev(records)
        write_chosen(chosen_file, best, ("temperature", "task", "em", "rs", "score", "weights_file", "model"),
                     ties="the earlier temperature of the list")
    best = json.loads(chosen_file.read_text(encoding="utf-8"))
    src, final = Path(best["model"]), run.model_dir("merged")
    if (src / "config.json").is_file():  # install it (once; a rerun after a crash finishes the move)
        old = final.with_name("merged.replaced")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        src.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        write_text(run.dir / "merge.yaml", merge_config(run, Path(best["weights_file"])).to_yaml())
    run.log(f"[temperature] models/merged: temperature {best['temperature']:g} "
            f"(dev EM+RS mean {best['score']:.4f})")


def _temperature_candidate(run: Run, t: float) -> Candidate:
    """The merge with the weights at temperature ``t`` (from the similarities the weights stage kept)."""
    cand = run.search_dir / "temperature" / f"t{t:g}"
    wfile, model = cand / "weights.json", cand / "model"

    def build() -> Path:
        if not wfile.is_file():
            options = options_from(**{**run.preset.weights, "temperature": t})
            specialised_weights(run, options, wfile, f"temperature {t:g}", similarities_in=run.similarities_file)
        if not (model / "config.json").is_file():
            run.timed(f"temperature {t:g} merge", lambda: merge(merge_config(run, wfile), model, log=run.log))
        return model

    return Candidate(name=f"temperature {t:g}", key=float(t), build=build, eval_dir=cand / "eval",
                     head={"temperature": t}, tail={"weights_file": str(wfile), "model": str(model)})


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


def stage_table(run: Run) -> dict:
    """``results/results.{json,md,png}``: the table (:mod:`.table`), always rebuilt."""
    doc = table_doc(run)
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
    "train": stage_train,
    "weights": stage_weights,
    "merge": stage_merge,
    "temperature": stage_temperature,
    "eval": stage_eval,
    "table": stage_table,
}


def run_stages(run: Run, stages: Sequence[str] = tuple(STAGES)) -> None:
    """Check the base model (the paper preset without --model fails here, before the run folder is
    created), record the run and run ``stages`` in the given order."""
    run.source_model()
    run.record()
    for stage in stages:
        STAGES[stage](run)
