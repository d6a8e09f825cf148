"""The stages that weigh and merge: ``weights`` (the similarity matrices and consistency weights of each
seed's specialised models), ``merge`` (the consistency merge), ``temperature`` (the weights'
temperature, and with ``weights_distances`` their distance, chosen on dev) and ``null_merges`` (the
uniform average and task arithmetic, its scale chosen on dev: the merges the consistency merge is
read against).

A dev choice is made once, on the first seed's models, and applied to every seed's merge.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import write_text
from consistbench.reference_method.merge.engine import merge
from consistbench.reference_method.reproduce.dev_search import Candidate, best_on_dev, score_on_dev, write_chosen
from consistbench.reference_method.reproduce.presets import arm_seeds, seeded
from consistbench.reference_method.reproduce.run_folder import Run
from consistbench.reference_method.weights_chart import plot_distances
from consistbench.reference_method.reproduce.weights_jobs import (
    merge_config,
    null_config,
    specialised_weights,
    weights_options,
)


def merge_seeds(run: Run) -> list[int]:
    return arm_seeds("merged", run.preset)


def _tag(run: Run, seed: int) -> str:
    return "" if seed == run.preset.seeds[0] else f"@s{seed}"


def dev_choice(run: Run) -> bool:
    """Whether the weights' options are chosen on dev (temperatures, or several distances)."""
    return bool(run.preset.temperatures or len(run.preset.weights_distances) > 1)


def stage_weights(run: Run) -> None:
    """``weights/weights.json`` (+ heatmap, ``similarities.npz``; ``@sN`` for each further seed)."""
    for seed in merge_seeds(run):
        out = run.seed_file(run.weights_file, seed)
        if out.is_file():
            run.log(f"[weights] {out} exists: skipped")
            continue
        key = f"weights{_tag(run, seed)}"
        run.timed(key, lambda: specialised_weights(run, weights_options(run), out, key, seed))


def stage_merge(run: Run) -> None:
    """``models/merged/``: the consistency merge of the specialised models (and ``merge.yaml``); the other
    seeds' merges here too unless a dev choice of the weights' options follows (the temperature stage)."""
    for seed in merge_seeds(run):
        if seed != run.preset.seeds[0] and dev_choice(run):
            continue
        out = run.model_dir(seeded("merged", seed, run.preset))
        if (out / "config.json").is_file():
            run.log(f"[merge] {out} exists: skipped")
            continue
        cfg = merge_config(run, run.seed_file(run.weights_file, seed), seed)
        write_text(run.dir / f"merge{_tag(run, seed)}.yaml", cfg.to_yaml())
        run.timed(f"merge{_tag(run, seed)}", lambda: merge(cfg, out, log=run.log))


# ---------------------------------------------------------------------------------------------
# the weights' options on dev

def stage_temperature(run: Run) -> None:
    """Merge with each (distance, temperature) of the preset (the similarities are reused, no model runs
    again), score each merged candidate on the search task, install the best as ``models/merged`` and
    merge every other seed with it; with several distances, chart their per-layer distances."""
    if not dev_choice(run):
        run.log("[temperature] no temperatures in this preset: skipped")
        return
    chosen_file = run.search_dir / "temperature_chosen.json"
    records_file = run.search_dir / "temperature.jsonl"
    if not chosen_file.is_file():
        candidates = [_weights_candidate(run, d, t) for d in (run.preset.weights_distances or [None])
                      for t in (run.preset.temperatures or [weights_options(run).temperature])]
        keyed = bool(run.preset.weights_distances)
        records = score_on_dev(run, records_file, candidates,
                               (lambda r: f"{r['distance']}|{r['temperature']:g}") if keyed else (lambda r: float(r["temperature"])))
        best = best_on_dev(records)
        fields = ("distance",) * keyed + ("temperature", "task", "em", "rs", "score", "weights_file", "model")
        write_chosen(chosen_file, best, fields, ties="the earlier candidate of the list")
        if len(run.preset.weights_distances) > 1:
            _distances_chart(run, records)
    best = json.loads(chosen_file.read_text(encoding="utf-8"))
    _install(Path(best["model"]), run.model_dir("merged"))
    write_text(run.dir / "merge.yaml", merge_config(run, Path(best["weights_file"])).to_yaml())
    run.log(f"[temperature] models/merged: {best.get('distance') or 'the preset distance'}, temperature "
            f"{best['temperature']:g} (dev EM+RS mean {best['score']:.4f})")
    options = {"temperature": best["temperature"]} | ({"distance": best["distance"]} if best.get("distance") else {})
    for seed in merge_seeds(run)[1:]:
        out = run.model_dir(seeded("merged", seed, run.preset))
        if (out / "config.json").is_file():
            continue
        wfile = run.seed_file(run.dir / "weights" / "chosen.json", seed)
        if not wfile.is_file():
            specialised_weights(run, weights_options(run, **options), wfile, f"temperature{_tag(run, seed)}", seed)
        cfg = merge_config(run, wfile, seed)
        write_text(run.dir / f"merge{_tag(run, seed)}.yaml", cfg.to_yaml())
        run.timed(f"merge{_tag(run, seed)}", lambda: merge(cfg, out, log=run.log))


def _install(src: Path, final: Path) -> None:
    """Move a chosen candidate onto ``final`` (once; a rerun after a crash finishes the move)."""
    if not (src / "config.json").is_file():
        return
    old = final.with_name(final.name + ".replaced")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    src.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _weights_candidate(run: Run, distance: str | None, t: float) -> Candidate:
    """The merge with the weights at temperature ``t`` (and ``distance``), from the saved similarities."""
    cand = run.search_dir / "temperature" / (f"t{t:g}" if distance is None else f"{distance}-t{t:g}")
    wfile, model = cand / "weights.json", cand / "model"
    override = {"temperature": t} | ({"distance": distance} if distance else {})
    label = f"{distance} " * bool(distance) + f"temperature {t:g}"

    def build() -> Path:
        if not wfile.is_file():
            specialised_weights(run, weights_options(run, **override), wfile, label)
        if not (model / "config.json").is_file():
            run.timed(f"{label} merge", lambda: merge(merge_config(run, wfile), model, log=run.log))
        return model

    head = ({"distance": distance} if distance else {}) | {"temperature": t}
    return Candidate(name=label, key=f"{distance}|{t:g}" if distance else float(t), build=build,
                     eval_dir=cand / "eval", head=head, tail={"weights_file": str(wfile), "model": str(model)})


def _distances_chart(run: Run, records: list[dict]) -> None:
    kinds = tuple(run.preset.weights_distances[:2])
    doc = json.loads(Path(records[0]["weights_file"]).read_text(encoding="utf-8"))
    plot_distances(doc, run.search_dir / "distances.png", kinds=kinds)


# ---------------------------------------------------------------------------------------------
# the null merges

def stage_null_merges(run: Run) -> None:
    """``models/uniform/`` (the specialised models' average) and ``models/task_arithmetic/`` (its scale
    chosen on dev among ``ta_scales``: ``search/ta.jsonl``, ``ta_chosen.json``, which says when the best
    scale is at the edge of the grid), one per seed."""
    if not run.preset.null_merges:
        run.log("[null_merges] no null merges in this preset: skipped")
        return
    scale = _ta_scale(run) if "task_arithmetic" in run.preset.null_merges else None
    for kind in run.preset.null_merges:
        for seed in arm_seeds(kind, run.preset):
            out = run.model_dir(seeded(kind, seed, run.preset))
            if (out / "config.json").is_file():
                run.log(f"[null_merges] {out} exists: skipped")
                continue
            cfg = null_config(run, kind, seed, scale if kind == "task_arithmetic" else None)
            run.timed(f"{kind}{_tag(run, seed)}", lambda: merge(cfg, out, log=run.log))


def _ta_scale(run: Run) -> float:
    """Task arithmetic's scale: chosen on dev with the first seed's models (the chosen merge becomes
    ``models/task_arithmetic``)."""
    chosen_file = run.search_dir / "ta_chosen.json"
    if not chosen_file.is_file():
        scales = [float(s) for s in run.preset.ta_scales]
        if not scales:
            raise ConsistbenchError(f"preset {run.preset.name}: task_arithmetic needs ta_scales")
        candidates = [_ta_candidate(run, s) for s in scales]
        records = score_on_dev(run, run.search_dir / "ta.jsonl", candidates, lambda r: float(r["scale"]))
        best = best_on_dev(records)
        edge = best["scale"] in (min(scales), max(scales)) and len(scales) > 1
        write_chosen(chosen_file, best | {"grid": scales, "at_edge": edge},
                     ("scale", "grid", "at_edge", "task", "em", "rs", "score", "model"), ties="the earlier scale of the list")
        if edge:
            run.log(f"[null_merges] task arithmetic's best dev scale {best['scale']:g} is at the edge of the grid "
                    f"{scales}: the best scale may lie outside it")
    best = json.loads(chosen_file.read_text(encoding="utf-8"))
    _install(Path(best["model"]), run.model_dir("task_arithmetic"))
    return float(best["scale"])


def _ta_candidate(run: Run, scale: float) -> Candidate:
    model = run.search_dir / "ta" / f"scale{scale:g}"

    def build() -> Path:
        if not (model / "config.json").is_file():
            run.timed(f"task_arithmetic {scale:g}", lambda: merge(null_config(run, "task_arithmetic", None, scale),
                                                                  model, log=run.log))
        return model

    return Candidate(name=f"task_arithmetic {scale:g}", key=float(scale), build=build,
                     eval_dir=run.search_dir / "ta_eval" / f"scale{scale:g}", head={"scale": scale},
                     tail={"model": str(model)})
