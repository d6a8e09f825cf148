"""The results table of a reproduction: one row per model, the paper's metrics, paired tests.

:func:`table_doc` collects every evaluated model's metrics on the preset's task (``results.json``:
rows, differences to the base, what was chosen on dev, timings) and, with the preset's
``paired``, the merged model against the base, SFT and the best specialised model
(:mod:`consistbench.benchmark.compare`: paired bootstrap over the shared groups).
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
from consistbench.reference_method.reproduce.presets import ROW_LABELS, SPECIALISED
from consistbench.reference_method.reproduce.run_folder import Run, results_file

TABLE_METRICS = (("rougeL", "ROUGE-L"), ("bleu", "BLEU"), ("em", "EM"), ("rs", "RS"), ("bs", "BS"))
# the paired comparisons of the table (merged minus another model)
PAIRED_METRICS = ("em", "rs", "bs")


def collect(run: Run) -> list[dict]:
    """One row per evaluated model: label, metrics, the results file."""
    rows = []
    for name in run.models_to_eval():
        res = results_file(run.eval_dir(name))
        if res is None and run.allow_missing and name != "base":
            run.log(f"[table] no results for {name}: left out (--allow-missing)")
            continue
        if res is None:
            raise ConsistbenchError(f"[table] no results for {name} under {run.eval_dir(name)}")
        doc = json.loads(res.read_text(encoding="utf-8"))
        m = task_metrics(doc, run.preset.task)
        rows.append({"model": name, "label": ROW_LABELS.get(name, name),
                     "metrics": {k: float(m[k]) for k, _ in TABLE_METRICS if k in m},
                     "results_file": str(res)})
    return rows


def table_doc(run: Run) -> dict:
    """The whole table (``results.json``): rows, differences to the base, the dev choices, timings
    and, with the preset's ``paired``, the paired comparisons of the merged model."""
    rows = collect(run)
    base = rows[0]["metrics"]
    missing = [n for n in run.models_to_eval() if n not in {r["model"] for r in rows}]
    doc = {"format": "consistbench-reproduction", "version": 1, "preset": run.preset.name, "missing": missing,
           "task": run.preset.task, "base_model": str(run.base_model()), "rows": rows,
           "delta_vs_base": {r["model"]: {k: round(r["metrics"][k] - base[k], 4) for k in r["metrics"] if k in base}
                             for r in rows[1:]},
           "timings_s": run.timings()}
    for key, name in (("search", "chosen.json"), ("temperature", "temperature_chosen.json")):
        path = run.search_dir / name
        if path.is_file():  # what was chosen on dev, for the reader of the table
            doc[f"{key}_chosen"] = json.loads(path.read_text(encoding="utf-8"))
    if run.preset.paired:
        doc["paired"] = paired_comparisons(run, rows)
    return doc


def paired_comparisons(run: Run, rows: list[dict]) -> list[dict]:
    """Merged minus base, SFT and the best specialised model: ``consistbench compare``'s paired
    bootstrap over the shared groups (difference, 95% interval, p) for EM, RS and BS.

    The best specialised model is the one with the highest mean of EM and RS in this table (no dev
    score exists for the specialised models): choosing the strongest opponent on the test itself can
    only make the merged model's comparison harder, never easier."""
    by_name = {r["model"]: r for r in rows}
    if "merged" not in by_name:
        return []
    spec = [by_name[f"sft_triplet_{t}"] for t in SPECIALISED if f"sft_triplet_{t}" in by_name]
    others = [n for n in ("base", "sft") if n in by_name]
    if spec:
        best = max(spec, key=lambda r: (r["metrics"].get("em", 0.0) + r["metrics"].get("rs", 0.0)) / 2)
        others.append(best["model"])
    merged = load_side(run.eval_dir("merged"), run.preset.task)
    out = []
    for name in others:
        result = compare(merged, load_side(run.eval_dir(name), run.preset.task))
        out.append({"a": "merged", "b": name, "b_label": ROW_LABELS.get(name, name),
                    "why": "best specialised (EM+RS mean in this table)" if name.startswith("sft_triplet_") else "",
                    "shared_groups": result["shared_groups"], "settings": result["settings"],
                    "metrics": {k: {f: result["metrics"][k][f] for f in
                                    ("a", "b", "difference", "low", "high", "p_value", "significant")}
                                for k in PAIRED_METRICS if k in result["metrics"]}})
    return out


def markdown_table(doc: dict) -> str:
    """The paper's layout: one column per model, one row per metric (ROUGE-L, BLEU, EM, RS, BS)."""
    rows = doc["rows"]
    lines = [f"Task `{doc['task']}`, preset `{doc['preset']}`, base `{Path(doc['base_model']).name}`.", "",
             "| metric | " + " | ".join(r["label"] for r in rows) + " |",
             "|---|" + "---:|" * len(rows)]
    for key, label in TABLE_METRICS:
        vals = [r["metrics"].get(key) for r in rows]
        best = max((v for v in vals if v is not None), default=None)
        cells = ["-" if v is None else (f"**{v:.4f}**" if v == best else f"{v:.4f}") for v in vals]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if doc.get("missing"):
        lines += ["", "Not evaluated (run not finished): " + ", ".join(ROW_LABELS.get(m, m) for m in doc["missing"]) + "."]
    if doc.get("search_chosen") or doc.get("temperature_chosen"):
        chosen = []
        if doc.get("search_chosen"):
            c = doc["search_chosen"]
            chosen.append(", ".join(f"{k} {v:g}" for k, v in c["setting"].items()) + f" ({c['id']})")
        if doc.get("temperature_chosen"):
            chosen.append(f"weights temperature {doc['temperature_chosen']['temperature']:g}")
        task = (doc.get("search_chosen") or doc["temperature_chosen"])["task"]
        lines += ["", f"Chosen on `{task}`: " + "; ".join(chosen) + "."]
    if doc.get("paired"):
        first = doc["paired"][0]["settings"]
        lines += ["", (f"Paired comparisons (`consistbench compare`: bootstrap over shared groups, "
                       f"{first['n_resamples']} resamples, seed {first['seed']}): merged minus the other model, "
                       f"{first['confidence']:.0%} interval, p."), "",
                  "| merged vs | groups | metric | merged | other | difference | interval | p |",
                  "|---|---:|---|---:|---:|---:|---|---:|"]
        for c in doc["paired"]:
            for k, m in c["metrics"].items():
                lines.append(f"| {c['b_label']} | {c['shared_groups']} | {k.upper()} | {m['a']:.4f} | {m['b']:.4f} | "
                             f"{m['difference']:+.4f} | {m['low']:+.4f} .. {m['high']:+.4f} | {m['p_value']:.3f} |")
    return "\n".join(lines) + "\n"


def print_table(doc: dict) -> None:
    """The table on the terminal (rich)."""
    table = Table(title=f"reproduction ({doc['preset']}, {doc['task']})")
    table.add_column("model")
    for _, label in TABLE_METRICS:
        table.add_column(label, justify="right")
    for r in doc["rows"]:
        table.add_row(r["label"], *[f"{r['metrics'][k]:.4f}" if k in r["metrics"] else "-" for k, _ in TABLE_METRICS])
    Console().print(table)
