"""The stages that choose training settings on dev: ``search`` (a grid of learning rate, length, alpha,
margin, pooling layer), ``triplet_search`` (the triplet term: a step-0 activity screen, then brief
trainings of the survivors) and ``checkpoints`` (a curve of one arm's checkpoints on dev).

Every candidate is scored with :func:`.dev_search.score_on_dev` and chosen with the one best-on-dev
rule; every record is a line of a ``search/*.jsonl`` file written as soon as it exists, so each stage
continues where a crash left it. The test split is never read here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import write_json
from consistbench.reference_method.reproduce.charts import curve_chart, search_chart
from consistbench.reference_method.reproduce.dev_search import (
    Candidate,
    best_on_dev,
    choose_setting,
    score_on_dev,
    write_chosen,
)
from consistbench.reference_method.reproduce.jobs import (
    adapter_dir,
    card_copy,
    checkpoints_dir,
    merge_adapter,
    run_config,
    run_mining,
    step0_activity,
    train_model,
)
from consistbench.reference_method.reproduce.presets import TRIPLET_SEARCH_KEYS
from consistbench.reference_method.reproduce.run_folder import Run, append_record, read_records, trained


# ---------------------------------------------------------------------------------------------
# the grid search

def stage_search(run: Run) -> None:
    """``search/search.jsonl``, ``chosen.json``, ``search.png``: each setting of the preset's grid
    trains the all-data SFT + triplet model, scored on dev; the best becomes ``models/sft_triplet_all``
    (unless a later dev choice, the triplet search or a checkpoint curve of that arm, changes it)."""
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
    later = run.preset.triplet_search or (run.preset.eval_checkpoints and run.preset.checkpoint_arm == "sft_triplet_all")
    if not later and not trained(target) and trained(src):
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        for a, b in ((adapter_dir(src), adapter_dir(target)), (card_copy(src), card_copy(target))):
            if a.exists() and not b.exists():
                a.rename(b)
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


def triplet_choice(run: Run) -> dict | None:
    """The triplet term's settings the triplet search chose (None without one; ``{}`` when no setting's
    term acted at step 0, so the preset's own settings stay); refuses to guess before it ran."""
    if not run.preset.triplet_search:
        return None
    path = run.search_dir / "triplet_chosen.json"
    if not path.is_file():
        raise ConsistbenchError(f"[train] {path}: no triplet setting chosen yet (run the triplet_search stage first)")
    return json.loads(path.read_text(encoding="utf-8"))["setting"]


# ---------------------------------------------------------------------------------------------
# the triplet-term search

def stage_triplet_search(run: Run) -> None:
    """``search/triplet_screen.jsonl``, ``triplet_search.jsonl``, ``triplet_chosen.json``: every
    (pooled positions, pooling layer, negatives, margin quantile) of the grid measured at step 0 (the
    margin is that quantile of d(A,N) - d(A,P)); the settings whose term acts (share of active triplets
    and gradient ratio above the preset's thresholds) train the all-data model briefly with each alpha,
    scored on dev; the best is used by every SFT + triplet model."""
    ts = {**TRIPLET_DEFAULTS, **run.preset.triplet_search}
    if not run.preset.triplet_search:
        run.log("[triplet_search] no triplet search in this preset: skipped")
        return
    chosen_file = run.search_dir / "triplet_chosen.json"
    if chosen_file.is_file():
        run.log(f"[triplet_search] {chosen_file} exists: skipped")
        return
    screen = screen_grid(run, ts)
    shutil.rmtree(run.search_dir / "screen.tmp", ignore_errors=True)  # the screen's trainer folder (nothing kept)
    kept = sorted((r for r in screen if r["kept"]), key=lambda r: (-r["grad_ratio"], -r["active"]))[:ts["survivors"]]
    if not kept:
        write_chosen_note(chosen_file, "no setting's triplet term acted at step 0 (thresholds: active share "
                                       f">= {ts['min_active_share']}, gradient ratio >= {ts['min_grad_ratio']}); "
                                       "the preset's triplet settings are kept")
        run.log("[triplet_search] no setting acted at step 0: the preset's triplet settings are kept")
        return
    base = run_config(run, "sft_triplet_all", run.preset.triplet_alpha).alpha
    candidates = [_brief_candidate(run, r, alpha, ts) for r in kept for alpha in (ts["alphas"] or [base])]
    records = score_on_dev(run, run.search_dir / "triplet_search.jsonl", candidates, lambda r: _setting_key(r["setting"]))
    best = best_on_dev(records)
    write_chosen(chosen_file, best, ("setting", "task", "em", "rs", "score"), ties="the earlier candidate")
    shutil.rmtree(run.search_dir / "triplet_models", ignore_errors=True)
    run.log(f"[triplet_search] chosen {best['setting']} (dev EM+RS mean {best['score']:.4f})")


TRIPLET_DEFAULTS = {"pooled_positions": ["question"], "pooling_layers": [-1], "negatives": ["bottom"],
                    "margin_quantiles": [0.5], "alphas": [], "min_active_share": 0.05, "min_grad_ratio": 0.01,
                    "survivors": 2, "screen_triplets": 64, "brief_steps": 40}
assert set(TRIPLET_DEFAULTS) == set(TRIPLET_SEARCH_KEYS)


def screen_grid(run: Run, ts: dict) -> list[dict]:
    """The step-0 screen of every grid point (a line each in ``triplet_screen.jsonl``; a rerun measures
    only what is missing)."""
    path = run.search_dir / "triplet_screen.jsonl"
    done = {_screen_key(r) for r in read_records(path)}
    for pp in ts["pooled_positions"]:
        for layer in ts["pooling_layers"]:
            for neg in ts["negatives"]:
                point = {"pooled_positions": pp, "pooling_layer": layer, "negatives": neg}
                todo = [q for q in ts["margin_quantiles"] if _screen_key({**point, "quantile": q}) not in done]
                if not todo:
                    continue
                first = _measure(run, point, 0.0, ts)  # the distances do not depend on the margin
                gaps = sorted(an - ap for ap, an in zip(first["d_ap_each"], first["d_an_each"]))
                for q in todo:
                    margin = max(0.0, _quantile(gaps, q))
                    m = _measure(run, point, margin, ts)
                    record = {**point, "quantile": q, "margin": round(margin, 6), "active": m["active"],
                              "grad_ratio": m.get("grad_ratio") or 0.0, "d_ap": m["d_ap"], "d_an": m["d_an"]}
                    record["kept"] = (record["active"] >= ts["min_active_share"]
                                      and record["grad_ratio"] >= ts["min_grad_ratio"])
                    append_record(path, record)
                    run.log(f"[triplet_search] {point} q{q:g}: margin {margin:.4f}, active {m['active']:.2f}, "
                            f"gradient ratio {record['grad_ratio']:.4f}{'' if record['kept'] else ' (dropped)'}")
    keys = {_screen_key({"pooled_positions": pp, "pooling_layer": layer, "negatives": neg, "quantile": q})
            for pp in ts["pooled_positions"] for layer in ts["pooling_layers"] for neg in ts["negatives"]
            for q in ts["margin_quantiles"]}
    return [r for r in read_records(path) if _screen_key(r) in keys]


def _screen_key(r: dict) -> str:
    return json.dumps([r["pooled_positions"], r["pooling_layer"], r["negatives"], r["quantile"]])


def _quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``values`` (linear interpolation)."""
    pos = q * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def _measure(run: Run, point: dict, margin: float, ts: dict) -> dict:
    setting = {"pooled_positions": point["pooled_positions"], "pooling_layer": point["pooling_layer"],
               "margin": margin}
    config = run_config(run, "sft_triplet_all", run.preset.triplet_alpha, chosen_setting(run), setting)
    mining = run_mining(run, "sft_triplet_all", config.alpha, {"negatives": point["negatives"]})
    return step0_activity(run, config, mining, ts["screen_triplets"], seed=0)


def _brief_candidate(run: Run, screened: dict, alpha: float, ts: dict) -> Candidate:
    setting = {k: screened[k] for k in ("pooled_positions", "pooling_layer", "negatives", "margin")} | {"alpha": alpha}
    cid = _candidate_id(setting)
    model = run.search_dir / "triplet_models" / cid

    def build() -> Path:
        if not trained(model):
            config = run_config(run, "sft_triplet_all", run.preset.triplet_alpha, chosen_setting(run), setting)
            config.max_steps = int(ts["brief_steps"])  # brief: a fixed number of steps, whatever the epochs
            train_model(run, f"triplet_search {cid} train", model, "all", config,
                        run_mining(run, "sft_triplet_all", config.alpha, setting))
        return model

    return Candidate(name=f"triplet_search {cid}", key=_setting_key(setting), build=build,
                     eval_dir=run.search_dir / "triplet_eval" / cid, head={"id": cid, "setting": setting},
                     note=f"{setting}: ")


def _candidate_id(setting: dict) -> str:
    return "-".join(f"{v:g}" if isinstance(v, float) else str(v) for v in setting.values()).replace("/", "_")


def write_chosen_note(path: Path, note: str) -> None:
    write_json(path, {"setting": {}, "note": note})


# ---------------------------------------------------------------------------------------------
# the checkpoint curve

def curve_steps(total: int, saved: list[int], fractions: list[float]) -> dict[float, int]:
    """For each fraction of ``total`` steps, the saved step nearest to it (``saved``: the checkpoints' steps;
    the final model is step ``total``; a tie goes to the earlier step)."""
    steps = sorted({*saved, total})
    return {f: min(steps, key=lambda s: (abs(s - f * total), s)) for f in fractions}


def stage_checkpoints(run: Run) -> None:
    """``search/checkpoints.jsonl``, ``checkpoints_chosen.json``, ``checkpoints.png``: the checkpoint arm's
    model at each fraction of its steps, scored on dev (the alternative to a fixed number of epochs);
    the chosen point says whether it lies inside the grid. The arm's checkpoints are removed after."""
    fractions = sorted(run.preset.eval_checkpoints)
    if not fractions:
        run.log("[checkpoints] no checkpoint curve in this preset: skipped")
        return
    chosen_file = run.search_dir / "checkpoints_chosen.json"
    if chosen_file.is_file():
        run.log(f"[checkpoints] {chosen_file} exists: skipped")
        return
    arm = run.model_dir(run.preset.checkpoint_arm)
    if not trained(arm):
        raise ConsistbenchError(f"[checkpoints] {arm}: not trained yet (run the train stage first)")
    total = json.loads((arm / "consistbench_train.json").read_text(encoding="utf-8"))["global_step"]
    saved = [int(p.name.split("-")[1]) for p in checkpoints_dir(arm).glob("checkpoint-*") if p.is_dir()]
    steps = curve_steps(total, saved, fractions)
    candidates = [_checkpoint_candidate(run, arm, f, s, total) for f, s in steps.items()]
    records = score_on_dev(run, run.search_dir / "checkpoints.jsonl", candidates, lambda r: float(r["fraction"]))
    best = best_on_dev(records, lambda r: r["step"])
    inside = fractions[0] < best["fraction"] < fractions[-1]
    write_chosen(chosen_file, best | {"inside_grid": inside, "arm": run.preset.checkpoint_arm},
                 ("arm", "fraction", "step", "task", "em", "rs", "score", "inside_grid"), ties="fewer steps")
    curve_chart(records, best, run.search_dir / "checkpoints.png", f"{run.preset.checkpoint_arm}: checkpoints on dev")
    shutil.rmtree(run.search_dir / "checkpoint_models", ignore_errors=True)
    shutil.rmtree(checkpoints_dir(arm), ignore_errors=True)
    run.log(f"[checkpoints] best at {best['fraction']:g} of the steps (step {best['step']})"
            + ("" if inside else ": at the edge of the grid, the best point may lie outside it"))


def _checkpoint_candidate(run: Run, arm: Path, fraction: float, step: int, total: int) -> Candidate:
    model = arm if step == total else run.search_dir / "checkpoint_models" / f"step{step}"

    def build() -> Path:
        if step != total and not (model / "config.json").is_file():
            ckpt = checkpoints_dir(arm) / f"checkpoint-{step}"
            if not ckpt.is_dir():
                raise ConsistbenchError(f"[checkpoints] {ckpt}: missing (the arm was trained without keeping "
                                        "its checkpoints; remove the model to train it again)")
            merge_adapter(run, ckpt, model)
        return model

    return Candidate(name=f"checkpoints {fraction:g}", key=float(fraction), build=build,
                     eval_dir=run.search_dir / "checkpoint_eval" / f"step{step}",
                     head={"fraction": fraction, "step": step, "of_steps": round(step / total, 4)})

