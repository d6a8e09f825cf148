"""Triplet mining for the triplet term: which query is pulled towards which, and pushed from which.

Anchors are queries; positives are other queries of the *same group* (its variants, which share
the passage and the reference answer); optionally also queries of other groups among the
anchor's ``k`` nearest neighbours in sentence-encoder space that have the same answer.
Negatives come from other groups: the anchor's ``k`` *least* similar queries (``bottom``, as the
paper mines them), its ``k`` most similar queries with a different answer (``hard``), or any
query of another group (``random``). One triplet per (anchor, positive); its negative is drawn
from the anchor's candidates with a seeded RNG, so the list depends only on the rows and the
settings.

The encoder is the embedded all-MiniLM-L6-v2 (``consistbench.benchmark.embedded.encode``) unless
``MiningConfig.encoder`` names another sentence-transformers model.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

import numpy as np

from consistbench.benchmark.embedded import encode
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.variants import VARIANT_TYPES

Anchors = Literal["original", "all"]
Positives = Literal["group", "group+neighbours"]
Negatives = Literal["bottom", "hard", "random"]
TRAIN_TYPES = (*VARIANT_TYPES, "all")


@dataclass
class MiningConfig:
    """How triplets are mined (recorded in every trained model's card).

    anchors (defaults to ``"original"``): ``original`` uses each group's original question as
        the anchor; ``all`` makes every query of the selected types an anchor.
    positives (defaults to ``"group"``): ``group`` = the anchor's own group members (its
        variants); ``group+neighbours`` adds top-``k`` encoder neighbours from other groups whose
        reference answer is the same (the top-10 neighbours of the reference method).
    negatives (defaults to ``"bottom"``): ``bottom`` = the anchor's ``k`` least similar queries
        of other groups (the reference method's bottom-10); ``hard`` = its ``k`` most similar queries of
        other groups with a different answer; ``random`` = any query of another group.
    k (defaults to ``10``): neighbourhood size for both (10, as in the reference method).
    seed (defaults to ``0``): draws the negative of each triplet.
    encoder (defaults to ``None``, the embedded MiniLM): sentence-transformers model for the
        neighbourhoods.
    """

    anchors: Anchors = "original"
    positives: Positives = "group"
    negatives: Negatives = "bottom"
    k: int = 10
    seed: int = 0
    encoder: str | None = field(default=None)

    def __post_init__(self):
        for name, kind in (("anchors", Anchors), ("positives", Positives), ("negatives", Negatives)):
            if getattr(self, name) not in get_args(kind):
                raise ConsistbenchError(f"{name} must be one of {', '.join(get_args(kind))}, got {getattr(self, name)!r}")
        if self.k < 1:
            raise ConsistbenchError(f"k must be at least 1, got {self.k}")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Triplet:
    anchor: str  # row ids
    positive: str
    negative: str
    positive_source: str  # "group" | "neighbour"


def select_rows(rows: Sequence, variant_type: str) -> list:
    """The rows one model trains on: originals plus the variants of ``variant_type`` (``all``: every type)."""
    if variant_type not in TRAIN_TYPES:
        raise ConsistbenchError(f"unknown variant type {variant_type!r} (expected one of {', '.join(TRAIN_TYPES)})")
    keep = set(VARIANT_TYPES) if variant_type == "all" else {variant_type}
    return [r for r in rows if r.variant_type == "original" or r.variant_type in keep]


def _norm_answer(text: str) -> str:
    return " ".join(text.lower().split())


def mine_triplets(rows: Sequence, config: MiningConfig | None = None, embeddings=None) -> list[Triplet]:
    """Triplets over ``rows`` (schema rows with ``id``, ``group_id``, ``variant_type``, ``question``,
    ``reference``). ``embeddings`` (one L2-normalised row per input row) skips the encoder."""
    config = config or MiningConfig()
    rows = list(rows)
    if not rows:
        return []
    if len({r.id for r in rows}) != len(rows):
        raise ConsistbenchError("row ids are not unique")
    if embeddings is None:
        embeddings = encode([r.question for r in rows], config.encoder)
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.shape[0] != len(rows):
        raise ConsistbenchError(f"{emb.shape[0]} embeddings for {len(rows)} rows")
    sims = emb @ emb.T
    groups = np.array([r.group_id for r in rows])
    answers = np.array([_norm_answer(r.reference) for r in rows])
    members: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        members[r.group_id].append(i)
    k = config.k
    out: list[Triplet] = []
    for a, row in enumerate(rows):
        if config.anchors == "original" and row.variant_type != "original":
            continue
        others = np.flatnonzero(groups != row.group_id)
        if others.size == 0:
            continue  # a single group: nothing to push away from
        order = others[np.argsort(-sims[a, others], kind="stable")]  # most similar first
        positives = [(p, "group") for p in members[row.group_id] if p != a]
        if config.positives == "group+neighbours":
            positives += [(int(p), "neighbour") for p in order[:k] if answers[p] == answers[a]]
        if not positives:
            continue
        if config.negatives == "bottom":
            candidates = order[::-1][:k]
        elif config.negatives == "hard":
            candidates = np.array([p for p in order if answers[p] != answers[a]][:k], dtype=int)
        else:
            candidates = others
        candidates = [int(c) for c in candidates if answers[c] != answers[a]]
        if not candidates:
            continue
        for p, source in positives:
            rng = random.Random(f"{config.seed}|{row.id}|{rows[p].id}")
            n = candidates[rng.randrange(len(candidates))]
            out.append(Triplet(row.id, rows[p].id, rows[n].id, source))
    return out
