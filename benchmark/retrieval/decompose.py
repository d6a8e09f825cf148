"""Decomposition report: how much of a model's inconsistency the retriever causes.

The same model answers the same questions twice: with the fixed gold passage as context
(``consistency`` / ``consistency_mini``) and with retrieved passages (``consistency_e2e_<r>``,
``..._mini``). For every (original, variant) pair, paired by ``group_id``:

- consistency in both settings (``em``, ``rs`` = ROUGE-L F1 >= threshold, ``bs`` = BERTScore F1);
- ``context_differed``: the two questions were given different retrieved contexts (not the
  same passages in the same order);
- each pair inconsistent with retrieved contexts (by ``rs`` unless ``by="em"``) falls in one cell:
  ``retrieval_only`` (contexts differed, and the pair was consistent with the gold context:
  the retriever caused it), ``both`` (contexts differed, and it was inconsistent with the gold
  context too), ``generator_only`` (the same retrieved context: only the generator can differ).

``share_differed`` = (retrieval_only + both) / inconsistent is the "share of
inconsistent pairs whose retrieved passages differed"; compare it with ``context_differed``
over all pairs (the base rate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.table import Table

from consistbench.benchmark import metrics as M
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import atomic_path, read_jsonl
from consistbench.benchmark.metrics import Scored, pair_by_group
from consistbench.benchmark.retrieval.metrics import jaccard
from consistbench.benchmark.variants import VARIANT_TYPES

CELLS = ("retrieval_only", "both", "generator_only")


def read_samples(path: str | Path) -> dict[str, dict]:
    """Doc id -> {group_id, variant_type, response, reference, retrieved_ids} from an lm-eval samples JSONL."""
    out = {}
    for obj in read_jsonl(path):
        doc = obj.get("doc")
        if not isinstance(doc, dict) or "id" not in doc or "group_id" not in doc:
            raise ConsistbenchError(f"{path}:{obj['__line__']}: not a consistbench lm-eval sample (no doc id/group_id)")
        resp = obj.get("filtered_resps", obj.get("resps", [""]))
        while isinstance(resp, list):
            resp = resp[0] if resp else ""
        out[doc["id"]] = {"group_id": doc["group_id"], "variant_type": doc["variant_type"], "response": str(resp),
                          "reference": doc.get("reference", ""), "retrieved_ids": doc.get("retrieved_ids")}
    if not out:
        raise ConsistbenchError(f"{path}: no samples")
    return out


def _pairs(samples: dict[str, dict]):
    """(variant id, variant_type, original doc, variant doc) for every pair, via benchmark.metrics pairing."""
    # pair_by_group returns responses only; ask it for ids by passing the id as the response
    scored = [Scored(i, s["group_id"], s["variant_type"], i) for i, s in samples.items()]
    return [(p.variant, p.variant_type, samples[p.original], samples[p.variant]) for p in pair_by_group(scored)]


def decompose(gold: dict[str, dict], retrieved: dict[str, dict], settings=None, by: str = "rs") -> dict:
    """``settings``: the :class:`~consistbench.benchmark.metrics.ScoreSettings` (RS threshold, BERTScore)."""
    settings = settings or M.ScoreSettings()
    rs_threshold, compute_bs = settings.rs_threshold, settings.compute_bs

    if by not in ("rs", "em"):
        raise ConsistbenchError(f"--by must be rs or em, got {by!r}")
    threshold = M.RS_THRESHOLD if rs_threshold is None else rs_threshold
    if set(gold) != set(retrieved):
        only = sorted(set(gold) ^ set(retrieved))
        raise ConsistbenchError(f"the two runs cover different rows (e.g. {only[0]!r}); run the matching tasks "
                                "(consistency_mini with consistency_e2e_<r>_mini, or consistency with consistency_e2e_<r>)")
    if any(s["retrieved_ids"] is None for s in retrieved.values()):
        raise ConsistbenchError("the retrieved-context samples carry no retrieved_ids: they are not from a "
                                "consistency_e2e_* task")
    pg, pr = _pairs(gold), _pairs(retrieved)
    per_pair = []
    for (vid, vtype, go, gv), (vid2, _, ro, rv) in zip(pg, pr):
        if vid != vid2:  # both runs hold the same ids, so the sorted pairings must line up
            raise ConsistbenchError(f"pairing mismatch between the two runs at {vid!r} / {vid2!r}")
        per_pair.append({"variant_id": vid, "variant_type": vtype,
                         "context_differed": ro["retrieved_ids"] != rv["retrieved_ids"],
                         "jaccard": _jaccard(ro["retrieved_ids"], rv["retrieved_ids"]),
                         "gold": (go["response"], gv["response"]), "retrieved": (ro["response"], rv["response"])})
    for setting in ("gold", "retrieved"):
        pairs = [p[setting] for p in per_pair]
        em = [M.exact_match(a, b) for a, b in pairs]
        rouge = M.rouge_l_many((b, a) for a, b in pairs)
        bs = M.bertscore_f1([(b, a) for a, b in pairs], settings.bertscore) if compute_bs and pairs else [float("nan")] * len(pairs)
        for p, e, r, b in zip(per_pair, em, rouge, bs):
            p[f"em_{setting}"], p[f"rougeL_{setting}"], p[f"bs_{setting}"] = e, float(r), float(b)
            p[f"rs_{setting}"] = float(r >= threshold)
    for p in per_pair:
        inconsistent = p[f"{by}_retrieved"] < 1.0
        p["inconsistent"] = inconsistent
        p["cell"] = None if not inconsistent else ("generator_only" if not p["context_differed"] else
                                                   "both" if p[f"{by}_gold"] < 1.0 else "retrieval_only")
    acc = {s: _accuracy(samples) for s, samples in (("gold", gold), ("retrieved", retrieved))}
    summary = {"overall": _summary(per_pair)}
    for vtype in VARIANT_TYPES:
        sel = [p for p in per_pair if p["variant_type"] == vtype]
        if sel:
            summary[vtype] = _summary(sel)
    for p in per_pair:
        del p["gold"], p["retrieved"]
    return {"by": by, "rs_threshold": threshold, "settings": settings.describe(), "accuracy_rougeL": acc, "summary": summary, "pairs": per_pair}


def _jaccard(a, b) -> float:
    return jaccard(a, b)


def _accuracy(samples: dict[str, dict]) -> float:
    vals = M.rouge_l_many((s["response"], s["reference"]) for s in samples.values())
    return float(vals.mean()) if len(vals) else float("nan")


def _mean(values) -> float:
    values = np.asarray(list(values), dtype=np.float64)
    return float(values.mean()) if values.size else float("nan")


def _summary(pairs: Sequence[dict]) -> dict:
    n_inc = sum(p["inconsistent"] for p in pairs)
    cells = {c: sum(p["cell"] == c for p in pairs) for c in CELLS}
    out = {"pairs": len(pairs), "context_differed": _mean(p["context_differed"] for p in pairs),
           "jaccard": _mean(p["jaccard"] for p in pairs), "inconsistent": n_inc,
           "share_differed": (cells["retrieval_only"] + cells["both"]) / n_inc if n_inc else float("nan"),
           **{f"{c}_share": cells[c] / n_inc if n_inc else float("nan") for c in CELLS},
           "cells": cells}
    for m in ("em", "rs", "bs"):
        for s in ("gold", "retrieved"):
            out[f"{m}_{s}"] = _mean(p[f"{m}_{s}"] for p in pairs)
    return out


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def table(report: dict, title: str = "decomposition"):
    by = report["by"]
    t = Table(title=title)
    for col in ("subset", "pairs", "em gold", "em retr", "rs gold", "rs retr", "bs gold", "bs retr",
                "ctx differed", f"inconsistent ({by})", "of which ctx differed", "retrieval only", "both",
                "generator only"):
        t.add_column(col, justify="left" if col == "subset" else "right")
    for label, s in report["summary"].items():
        t.add_row(label, str(s["pairs"]), _fmt(s["em_gold"]), _fmt(s["em_retrieved"]), _fmt(s["rs_gold"]),
                  _fmt(s["rs_retrieved"]), _fmt(s["bs_gold"]), _fmt(s["bs_retrieved"]), _fmt(s["context_differed"]),
                  str(s["inconsistent"]), _fmt(s["share_differed"]), _fmt(s["retrieval_only_share"]),
                  _fmt(s["both_share"]), _fmt(s["generator_only_share"]))
    return t


def markdown(report: dict) -> str:
    by = report["by"]
    lines = [f"| subset | pairs | EM gold | EM retrieved | RS gold | RS retrieved | BS gold | BS retrieved "
             f"| contexts differed (all pairs) | inconsistent ({by}, retrieved) | share with differing contexts "
             f"| retrieval only | both | generator only |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, s in report["summary"].items():
        lines.append(f"| {label} | {s['pairs']} | {_fmt(s['em_gold'])} | {_fmt(s['em_retrieved'])} | "
                     f"{_fmt(s['rs_gold'])} | {_fmt(s['rs_retrieved'])} | {_fmt(s['bs_gold'])} | "
                     f"{_fmt(s['bs_retrieved'])} | {_fmt(s['context_differed'])} | {s['inconsistent']} | "
                     f"{_fmt(s['share_differed'])} | {_fmt(s['retrieval_only_share'])} | {_fmt(s['both_share'])} | "
                     f"{_fmt(s['generator_only_share'])} |")
    return "\n".join(lines)


def chart(report: dict, path: str | Path, title: str = "decomposition") -> Path:
    """PNG: consistency gold vs retrieved per variant type; where the inconsistent pairs come from."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(report["summary"])
    s = report["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
    ax = axes[0]
    series = [("em_gold", "EM gold ctx"), ("em_retrieved", "EM retrieved ctx"),
              ("rs_gold", "RS gold ctx"), ("rs_retrieved", "RS retrieved ctx")]
    width = 0.8 / len(series)
    for j, (key, name) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(labels))]
        bars = ax.bar(xs, [s[lab][key] for lab in labels], width, label=name)
        ax.bar_label(bars, labels=[f"{s[lab][key]:.2f}" for lab in labels], fontsize=6)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(0, 1.05)
    ax.set_title("consistency: fixed gold context vs retrieved context")
    ax.legend(fontsize=7)
    ax = axes[1]
    bottom = np.zeros(len(labels))
    for cell, color in zip(CELLS, ("tab:red", "tab:orange", "tab:blue")):
        vals = np.array([0.0 if math.isnan(s[lab][f"{cell}_share"]) else s[lab][f"{cell}_share"] for lab in labels])
        ax.bar(range(len(labels)), vals, 0.6, bottom=bottom, label=cell.replace("_", " "), color=color)
        bottom += vals
    for i, lab in enumerate(labels):
        ax.text(i, 1.01, f"n={s[lab]['inconsistent']}", ha="center", fontsize=7)
        ax.plot([i - 0.3, i + 0.3], [s[lab]["context_differed"]] * 2, color="black", lw=1.5,
                label="contexts differed, all pairs" if i == 0 else None)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(0, 1.08)
    ax.set_title(f"inconsistent pairs with retrieved context ({report['by']}): cause")
    ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
