"""The results table of a reproduction: one row per arm, the paper's metrics, paired tests.

:func:`table_doc` collects every evaluated model's metrics on the preset's task (``results.json``:
rows, differences to the base, what was chosen on dev, each trained arm's budget, timings). An arm
trained with several seeds is one row of seed means (each seed's values kept beside them). With
the preset's ``paired``, the merged model is compared with the base, SFT (and the dose-matched
SFT), the best specialised model and the null merges (:func:`consistbench.benchmark.compare.compare`:
paired bootstrap over the shared groups; with several seeds a side is the arm of its seeds and the
interval includes the seed variance; with ``equivalence_margin``, the TOST on EM and RS).
:func:`markdown_table` writes it in the paper's layout (``results.md``).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from consistbench.benchmark.compare import compare, load_side
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.evaluate import task_metrics
from consistbench.reference_method.reproduce.presets import ROW_LABELS, SPECIALISED, arm_of, arm_seeds, seeded
from consistbench.reference_method.reproduce.run_folder import Run, results_file

TABLE_METRICS = (("rougeL", "ROUGE-L"), ("bleu", "BLEU"), ("em", "EM"), ("rs", "RS"), ("bs", "BS"))
# the paired comparisons of the table (merged minus another model)
PAIRED_METRICS = ("em", "rs", "bs")
EQUIVALENCE_METRICS = ("em", "rs")
# the dev choices recorded beside the table: key in results.json -> file under search/
CHOICES = {"search": "chosen.json", "temperature": "temperature_chosen.json", "triplet": "triplet_chosen.json",
           "task_arithmetic": "ta_chosen.json", "checkpoints": "checkpoints_chosen.json"}


def fmt(value) -> str:
    """A setting's value for the table (numbers compactly, words as they are)."""
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def collect(run: Run) -> list[dict]:
    """One row per arm (seed means when it has several seeds): label, metrics, each seed's, the results files."""
    rows = []
    for arm in [*run.arms(), *run.extra]:
        names = [seeded(arm, s, run.preset) for s in arm_seeds(arm, run.preset)] if arm not in run.extra else [arm]
        per_seed, files = {}, {}
        for name in names:
            res = results_file(run.eval_dir(name))
            if res is None and run.allow_missing and arm != "base":
                run.log(f"[table] no results for {name}: left out (--allow-missing)")
                continue
            if res is None:
                raise ConsistbenchError(f"[table] no results for {name} under {run.eval_dir(name)}")
            m = task_metrics(json.loads(res.read_text(encoding="utf-8")), run.preset.task)
            per_seed[name] = {k: float(m[k]) for k, _ in TABLE_METRICS if k in m}
            files[name] = str(res)
        if not per_seed:
            continue
        keys = [k for k, _ in TABLE_METRICS if all(k in v for v in per_seed.values())]
        mean = {k: sum(v[k] for v in per_seed.values()) / len(per_seed) for k in keys}
        row = {"model": arm, "label": ROW_LABELS.get(arm, arm), "metrics": mean, "results_file": files[names[0]]
               if names[0] in files else next(iter(files.values()))}
        if len(names) > 1:
            row |= {"seeds": per_seed, "n_seeds": len(per_seed), "results_files": files}
        rows.append(row)
    return rows


def table_doc(run: Run, budgets: dict | None = None) -> dict:
    """The whole table (``results.json``): rows, differences to the base, the dev choices, budgets, timings
    and, with the preset's ``paired``, the paired comparisons of the merged model."""
    rows = collect(run)
    base = rows[0]["metrics"]
    present = {n for r in rows for n in r.get("seeds", {r["model"]: None})}
    missing = [n for n in run.model_names() if n not in present]
    doc = {"format": "consistbench-reproduction", "version": 2, "preset": run.preset.name, "missing": missing,
           "task": run.preset.task, "base_model": str(run.base_model()), "seeds": list(run.preset.seeds), "rows": rows,
           "delta_vs_base": {r["model"]: {k: round(r["metrics"][k] - base[k], 4) for k in r["metrics"] if k in base}
                             for r in rows[1:]},
           "timings_s": run.timings()}
    if budgets:
        doc["budgets"] = {name: b for name, b in budgets.items() if "@" not in name}
    for key, name in CHOICES.items():
        path = run.search_dir / name
        if path.is_file():  # what was chosen on dev, for the reader of the table
            doc[f"{key}_chosen"] = json.loads(path.read_text(encoding="utf-8"))
    if run.preset.paired:
        doc["paired"] = paired_comparisons(run, rows)
    return doc


def paired_comparisons(run: Run, rows: list[dict]) -> list[dict]:
    """Merged minus base, SFT, the dose-matched SFT, the best specialised model and the null merges
    (:func:`consistbench.benchmark.compare.compare`): difference, 95% interval, p, the smallest difference
    it would detect, and with the preset's ``equivalence_margin`` the TOST, for EM, RS and BS.

    The best specialised model is the one with the highest mean of EM and RS in this table (no dev
    score exists for the specialised models): choosing the strongest opponent on the test itself can
    only make the merged model's comparison harder, never easier."""
    by_name = {r["model"]: r for r in rows}
    if "merged" not in by_name:
        return []
    spec = [by_name[f"sft_triplet_{t}"] for t in SPECIALISED if f"sft_triplet_{t}" in by_name]
    others = [n for n in ("base", "sft", "sft_dose") if n in by_name]
    if spec:
        best = max(spec, key=lambda r: (r["metrics"].get("em", 0.0) + r["metrics"].get("rs", 0.0)) / 2)
        others.append(best["model"])
    others += [n for n in run.preset.null_merges if n in by_name]
    margin = run.preset.equivalence_margin
    margins = {k: margin for k in EQUIVALENCE_METRICS} if margin else None
    merged = _sides(run, by_name["merged"])
    out = []
    for name in others:
        result = compare(merged, _sides(run, by_name[name]), margins=margins, label_a="merged", label_b=name)
        fields = ("a", "b", "difference", "low", "high", "p_value", "significant", "mdd",
                  "margin", "tost_low", "tost_high", "tost_p", "equivalent")
        out.append({"a": "merged", "b": name, "b_label": ROW_LABELS.get(name, name),
                    "why": "best specialised (EM+RS mean in this table)" if name.startswith("sft_triplet_") else "",
                    "shared_groups": result["shared_groups"], "settings": result["settings"],
                    "runs": result.get("runs", {"a": 1, "b": 1}),
                    "metrics": {k: {f: result["metrics"][k][f] for f in fields if f in result["metrics"][k]}
                                for k in PAIRED_METRICS if k in result["metrics"]}})
    return out


def _sides(run: Run, row: dict) -> list:
    names = list(row.get("seeds", {row["model"]: None}))
    return [load_side(run.eval_dir(n), run.preset.task) for n in names]


def markdown_table(doc: dict) -> str:
    """The paper's layout: one column per model, one row per metric (ROUGE-L, BLEU, EM, RS, BS)."""
    rows = doc["rows"]
    seeds = len(doc.get("seeds", [0]))
    lines = [f"Task `{doc['task']}`, preset `{doc['preset']}`, base `{Path(doc['base_model']).name}`"
             + (f"; rows marked * are means over {seeds} seeds." if seeds > 1 else "."), "",
             "| metric | " + " | ".join(r["label"] + (" *" if r.get("n_seeds", 1) > 1 else "") for r in rows) + " |",
             "|---|" + "---:|" * len(rows)]
    for key, label in TABLE_METRICS:
        vals = [r["metrics"].get(key) for r in rows]
        best = max((v for v in vals if v is not None), default=None)
        cells = ["-" if v is None else (f"**{v:.4f}**" if v == best else f"{v:.4f}") for v in vals]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if doc.get("missing"):
        lines += ["", "Not evaluated (run not finished): " + ", ".join(doc["missing"]) + "."]
    if doc.get("budgets"):
        lines += ["", "Training budgets (per model; counted from each model's card and training data):", "",
                  "| model | epochs | updates | sequences | tokens |", "|---|---:|---:|---:|---:|"]
        for name, b in doc["budgets"].items():
            lines.append(f"| {ROW_LABELS.get(arm_of(name), name)} | {b['epochs']:g} | {b['updates']} | "
                         f"{b['sequences']} | {b['tokens']} |")
    lines += _choices(doc)
    if doc.get("paired"):
        lines += _paired(doc["paired"])
    return "\n".join(lines) + "\n"


def _choices(doc: dict) -> list[str]:
    chosen, notes = [], []
    task = next((doc[f"{k}_chosen"].get("task") for k in CHOICES if doc.get(f"{k}_chosen", {}).get("task")), None)
    if doc.get("search_chosen"):
        c = doc["search_chosen"]
        chosen.append(", ".join(f"{k} {fmt(v)}" for k, v in c["setting"].items()) + f" ({c['id']})")
    if doc.get("triplet_chosen"):
        c = doc["triplet_chosen"]
        if c["setting"]:
            chosen.append("triplet term: " + ", ".join(f"{k} {fmt(v)}" for k, v in c["setting"].items()))
        else:
            notes.append(f"Triplet search: {c.get('note', 'no setting chosen')}.")
    if doc.get("temperature_chosen"):
        c = doc["temperature_chosen"]
        chosen.append((f"weights distance {c['distance']}, " if c.get("distance") else "")
                      + f"weights temperature {c['temperature']:g}")
    if doc.get("task_arithmetic_chosen"):
        c = doc["task_arithmetic_chosen"]
        chosen.append(f"task arithmetic scale {c['scale']:g}")
        if c.get("at_edge"):
            notes.append(f"Task arithmetic's best dev scale ({c['scale']:g}) is at the edge of its grid "
                         f"({', '.join(f'{s:g}' for s in c['grid'])}): the best scale may lie outside it.")
    if doc.get("checkpoints_chosen"):
        c = doc["checkpoints_chosen"]
        notes.append(f"Checkpoint curve ({c['arm']}): best dev score at {c['fraction']:g} of the steps (step {c['step']})"
                     + ("." if c["inside_grid"] else ", at the edge of the grid: the best point may lie outside it."))
    out = ["", f"Chosen on `{task}`: " + "; ".join(chosen) + "."] if chosen else []
    return out + (["", *notes] if notes else [])


def _paired(paired: list[dict]) -> list[str]:
    first = paired[0]
    runs = first.get("runs", {"a": 1, "b": 1})
    tost = any("tost_p" in m for c in paired for m in c["metrics"].values())
    lines = ["", (f"Paired comparisons (`consistbench compare`: bootstrap over shared groups, "
                  f"{first['settings']['n_resamples']} resamples, seed {first['settings']['seed']}"
                  + ("; each side the mean of its seeds, the interval including the seed variance" if max(runs.values()) > 1 else "")
                  + f"): merged minus the other model, {first['settings']['confidence']:.0%} interval, p"
                  + ("; TOST of equivalence within the margin" if tost else "") + "."), "",
             "| merged vs | groups | metric | merged | other | difference | interval | p |" + (" TOST p | equivalent |" if tost else ""),
             "|---|---:|---|---:|---:|---:|---|---:|" + ("---:|---|" if tost else "")]
    for c in paired:
        for k, m in c["metrics"].items():
            line = (f"| {c['b_label']} | {c['shared_groups']} | {k.upper()} | {m['a']:.4f} | {m['b']:.4f} | "
                    f"{m['difference']:+.4f} | {m['low']:+.4f} .. {m['high']:+.4f} | {m['p_value']:.3f} |")
            if tost:
                line += (f" {m['tost_p']:.3f} | {'yes' if m['equivalent'] else 'no'} (margin {m['margin']:g}) |"
                         if "tost_p" in m else " - | - |")
            lines.append(line)
    return lines


def print_table(doc: dict) -> None:
    """The table on the terminal (rich)."""
    table = Table(title=f"reproduction ({doc['preset']}, {doc['task']})")
    table.add_column("model")
    for _, label in TABLE_METRICS:
        table.add_column(label, justify="right")
    for r in doc["rows"]:
        table.add_row(r["label"], *[f"{r['metrics'][k]:.4f}" if k in r["metrics"] else "-" for k, _ in TABLE_METRICS])
    Console().print(table)
