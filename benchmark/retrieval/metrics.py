"""Retrieval-consistency metrics per (original, variant) pair, and their summary per variant type.

For a pair, with ``A`` and ``B`` the ranked passage ids retrieved (top-k, after any threshold)
for the original and for the variant:

- ``jaccard``: ``|A & B| / |A | B|`` of the top-k sets (1 when both are empty: the retriever
  answered both queries the same way);
- ``rbo``: rank-biased overlap, extrapolated form ``RBO_ext`` for lists of possibly different
  lengths (Webber, Moffat and Zobel, "A similarity measure for indefinite rankings", ACM TOIS
  28(4), 2010, eq. 32). Persistence ``p`` (default :data:`RBO_P` = 0.8) sets how top-heavy it
  is: with p = 0.8 the first 5 ranks carry 86% of the weight (the paper's eq. 21), as the first
  10 do with the paper's usual p = 0.9, which suits k = 5. 1 for identical lists, 0 for disjoint;
  1 when both are empty, 0 when only one is;
- ``recall_original`` / ``recall_variant``: 1 when the group's gold passage is in A / in B
  (recall@k with one relevant passage per query);
- ``same_top1``: the first passage is the same (what a k = 1 pipeline would see);
- ``identical``: the same passages in the same order (the generator sees the same context).

Pairs are made by ``consistbench.benchmark.metrics.pair_by_group`` (by ``group_id``, never by position).
RBO is written here because no maintained package in this environment implements it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.metrics import Scored, pair_by_group
from consistbench.benchmark.variants import ALL_TYPES, VARIANT_TYPES

RBO_P = 0.8
PAIR_METRICS = ("jaccard", "rbo", "recall_original", "recall_variant", "same_top1", "identical")


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def rbo(a: Sequence[str], b: Sequence[str], p: float = RBO_P) -> float:
    """Extrapolated rank-biased overlap (Webber et al. 2010, eq. 32; eq. 30 when lengths agree)."""
    if not 0.0 < p < 1.0:
        raise ConsistbenchError(f"RBO persistence p must lie strictly between 0 and 1, got {p}")
    if len(set(a)) != len(a) or len(set(b)) != len(b):
        raise ValueError("rbo: a ranking lists the same item twice")
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    s, l = len(short), len(long_)
    seen_s: set[str] = set()
    seen_l: set[str] = set()
    overlap = 0
    x = [0] * (l + 1)  # x[d]: overlap of the first d items (the short list stops growing at s)
    for d in range(1, l + 1):
        if d <= s:
            item = short[d - 1]
            overlap += item in seen_l
            seen_s.add(item)
        item = long_[d - 1]
        overlap += item in seen_s  # each shared item is counted once: when its second copy arrives
        seen_l.add(item)
        x[d] = overlap
    total = sum(x[d] / d * p ** d for d in range(1, l + 1))
    total += sum(x[s] * (d - s) / (s * d) * p ** d for d in range(s + 1, l + 1))
    return (1 - p) / p * total + ((x[l] - x[s]) / l + x[s] / s) * p ** l


@dataclass(frozen=True)
class PairResult:
    group_id: str
    variant_id: str
    variant_type: str
    gold: str
    original: tuple[str, ...]
    variant: tuple[str, ...]
    jaccard: float
    rbo: float
    recall_original: float
    recall_variant: float
    same_top1: float
    identical: float

    def to_json(self) -> dict:
        d = asdict(self)
        d["original"], d["variant"] = list(self.original), list(self.variant)
        return d


def pair_results(rows: Sequence, retrieved: Mapping[str, Sequence[str]], p: float = RBO_P) -> list[PairResult]:
    """Score every (original, variant) pair of ``rows`` (schema rows or dicts with id, group_id,
    variant_type, passage_id); ``retrieved`` maps a row id to its ranked passage ids."""
    def get(row, name):
        return row[name] if isinstance(row, Mapping) else getattr(row, name)

    missing = [get(r, "id") for r in rows if get(r, "id") not in retrieved]
    if missing:
        raise ConsistbenchError(f"no retrieval result for row {missing[0]!r}"
                                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    gold = {get(r, "group_id"): get(r, "passage_id") for r in rows}
    # pair_by_group pairs responses; a row's "response" here is its ranking (ids hold no newline),
    # so the pairing rules (by group, one original per group) are the project's single definition.
    scored = [Scored(get(r, "id"), get(r, "group_id"), get(r, "variant_type"),
                     "\n".join(retrieved[get(r, "id")])) for r in rows]
    variant_ids = defaultdict(list)
    for r in sorted(rows, key=lambda r: get(r, "id")):
        if get(r, "variant_type") != "original":
            variant_ids[get(r, "group_id")].append(get(r, "id"))
    out, cursor = [], defaultdict(int)
    for pair in pair_by_group(scored):
        vid = variant_ids[pair.group_id][cursor[pair.group_id]]
        cursor[pair.group_id] += 1
        a = tuple(filter(None, pair.original.split("\n")))
        b = tuple(filter(None, pair.variant.split("\n")))
        g = gold[pair.group_id]
        out.append(PairResult(pair.group_id, vid, pair.variant_type, g, a, b, jaccard(a, b), rbo(a, b, p),
                              float(g in a), float(g in b), float(bool(a) and bool(b) and a[0] == b[0]),
                              float(a == b)))
    return out


def _mean(values) -> float:
    values = np.asarray(list(values), dtype=np.float64)
    return float(values.mean()) if values.size else float("nan")


def summarise(pairs: Sequence[PairResult], rows: Sequence | None = None,
              retrieved: Mapping[str, Sequence[str]] | None = None) -> dict:
    """Means overall and per variant type; with rows, also recall@k per row type and mean hits."""
    out: dict = {"overall": {"pairs": len(pairs), **{m: _mean(getattr(x, m) for x in pairs) for m in PAIR_METRICS}}}
    for vtype in VARIANT_TYPES:
        sel = [x for x in pairs if x.variant_type == vtype]
        if sel:
            out[vtype] = {"pairs": len(sel), **{m: _mean(getattr(x, m) for x in sel) for m in PAIR_METRICS}}
    if rows is not None and retrieved is not None:
        def get(row, name):
            return row[name] if isinstance(row, Mapping) else getattr(row, name)

        per_type = {}
        for vtype in ("all", *ALL_TYPES):
            sel = [r for r in rows if vtype == "all" or get(r, "variant_type") == vtype]
            if sel:
                per_type[vtype] = {
                    "rows": len(sel),
                    "recall": _mean(get(r, "passage_id") in retrieved[get(r, "id")] for r in sel),
                    "mrr": _mean(_rr(get(r, "passage_id"), retrieved[get(r, "id")]) for r in sel),
                    "mean_hits": _mean(len(retrieved[get(r, "id")]) for r in sel)}
        out["rows"] = per_type
    return out


def _rr(gold: str, ranking: Sequence[str]) -> float:
    for i, pid in enumerate(ranking, start=1):
        if pid == gold:
            return 1.0 / i
    return 0.0
