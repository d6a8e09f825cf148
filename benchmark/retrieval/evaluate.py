"""``consistbench retrieval eval``: retrieval consistency of one retriever over a data split.

Every question of the split (originals and variants) is sent to the retriever in batches; each
(original, variant) pair is then scored by :mod:`consistbench.benchmark.retrieval.metrics`. The result JSON
holds the retriever and corpus description, the summary per variant type, row-level recall and
MRR, and every pair's rankings (to see which variants moved the retrieval).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from rich.progress import Progress
from rich.table import Table

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.paths import DATA_DIR
from consistbench.benchmark.retrieval.metrics import RBO_P, pair_results, summarise
from consistbench.benchmark.schema import data_checksum

SPLITS = ("train", "dev", "test")
ORDER = ("overall", "how_to", "plural_article", "paraphrase")


def _subsets(summary: dict):
    """(label, values) in a fixed order (a JSON file read back has its keys sorted)."""
    return [(label, summary[label]) for label in ORDER if label in summary]


def data_file(split: str) -> Path:
    if split not in SPLITS:
        raise ConsistbenchError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    return DATA_DIR / f"{split}.jsonl"


def retrieve_all(retriever, questions: list[str], k: int, batch_size: int = 256, label: str = "retrieving"):
    """Search every question in batches behind a progress bar; return the hit lists and seconds spent."""
    out = []
    seconds = 0.0
    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=len(questions))
        for start in range(0, len(questions), batch_size):
            chunk = questions[start:start + batch_size]
            t0 = time.perf_counter()
            out.extend(retriever.search(chunk, k))
            seconds += time.perf_counter() - t0
            bar.advance(task, len(chunk))
    return out, seconds


def evaluate(retriever, rows, k: int, rbo_p: float = RBO_P, data_path: str | None = None) -> dict:
    if k < 1:
        raise ConsistbenchError(f"--k must be at least 1, got {k}")
    hits, seconds = retrieve_all(retriever, [r.question for r in rows], k, label=f"retrieving ({retriever.name})")
    retrieved = {r.id: [h.passage_id for h in hs] for r, hs in zip(rows, hits)}
    pairs = pair_results(rows, retrieved, rbo_p)
    return {"retriever": retriever.describe(), "k": k, "rbo_p": rbo_p, "data": {
                "file": data_path, "rows": len(rows), "sha256": data_checksum(rows)},
            "summary": summarise(pairs, rows, retrieved),
            "timing": {"search_seconds": round(seconds, 3), "queries_per_second": round(len(rows) / seconds, 1)
                       if seconds else None},
            "pairs": [p.to_json() for p in pairs]}


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def result_table(result: dict, title: str | None = None):
    """One row per subset: pair metrics, then row-level recall@k of originals and variants."""
    k = result["k"]
    table = Table(title=title or f"retrieval consistency: {result['retriever']['retriever']}, k={k}")
    for col in ("subset", "pairs", f"jaccard@{k}", f"rbo(p={result['rbo_p']})", f"recall@{k} orig",
                f"recall@{k} var", "same top-1", "identical"):
        table.add_column(col, justify="left" if col == "subset" else "right")
    for label, s in _subsets(result["summary"]):
        table.add_row(label, str(s["pairs"]), _fmt(s["jaccard"]), _fmt(s["rbo"]), _fmt(s["recall_original"]),
                      _fmt(s["recall_variant"]), _fmt(s["same_top1"]), _fmt(s["identical"]))
    return table


def rows_table(result: dict):
    k = result["k"]
    table = Table(title=f"gold passage per row type ({result['retriever']['retriever']}, k={k})")
    for col in ("rows of", "rows", f"recall@{k}", f"MRR@{k}", "mean hits"):
        table.add_column(col, justify="left" if col == "rows of" else "right")
    rows = result["summary"].get("rows", {})
    for label in ("all", "original", "how_to", "plural_article", "paraphrase"):
        if label not in rows:
            continue
        s = rows[label]
        table.add_row(label, str(s["rows"]), _fmt(s["recall"]), _fmt(s["mrr"]), f"{s['mean_hits']:.2f}")
    return table


def markdown_table(results: list[dict]) -> str:
    """The docs table: one block of rows per retriever."""
    k = results[0]["k"]
    lines = [f"| retriever | subset | pairs | Jaccard@{k} | RBO (p={results[0]['rbo_p']}) | recall@{k} original "
             f"| recall@{k} variant | same top-1 | identical |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        for label, s in _subsets(res["summary"]):
            lines.append(f"| {res['retriever']['retriever']} | {label} | {s['pairs']} | {_fmt(s['jaccard'])} | "
                         f"{_fmt(s['rbo'])} | {_fmt(s['recall_original'])} | {_fmt(s['recall_variant'])} | "
                         f"{_fmt(s['same_top1'])} | {_fmt(s['identical'])} |")
    return "\n".join(lines)
