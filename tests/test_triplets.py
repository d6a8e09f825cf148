"""Triplet mining: positives from the group (and same-answer neighbours), bottom/hard/random negatives."""

from __future__ import annotations

import numpy as np
import pytest

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.schema import parse_row
from consistbench.reference_method.triplets import MiningConfig, mine_triplets, select_rows


def row(gid: str, vtype: str, question: str, reference: str = None, n: int = 1):
    suffix = {"original": "orig", "how_to": "howto", "plural_article": "plural", "paraphrase": "para"}[vtype]
    obj = {"id": f"{gid}-{suffix}{n if n > 1 else ''}", "group_id": gid, "split": "train", "variant_type": vtype,
           "question": question, "context": f"passage of {gid}", "reference": reference or f"answer {gid}",
           "passage_id": f"doc.html#{gid}", "source": "https://docs.python.org/3.11/doc.html"}
    return parse_row(obj, "test")


def unit(angle_deg: float) -> list[float]:
    a = np.deg2rad(angle_deg)
    return [float(np.cos(a)), float(np.sin(a))]


@pytest.fixture
def rows():
    """Four groups on a circle of embeddings: g1 near g0, g2 further, g3 opposite; g4 shares g0's answer."""
    return [
        row("g0", "original", "How do I copy a list?"), row("g0", "how_to", "How to copy a list"),
        row("g0", "paraphrase", "What is the way to duplicate a list?"),
        row("g1", "original", "How do I copy a dict?"), row("g1", "how_to", "How to copy a dict"),
        row("g2", "original", "How do I sort a list?"),
        row("g3", "original", "What is the GIL?"),
        row("g4", "original", "How can a list be cloned?", reference="answer g0"),
    ]


@pytest.fixture
def emb():
    return np.array([unit(a) for a in (0, 5, 10, 30, 35, 60, 180, 8)], dtype=np.float32)


def by_anchor(triplets):
    out = {}
    for t in triplets:
        out.setdefault(t.anchor, []).append(t)
    return out


def test_select_rows_keeps_originals_and_the_type(rows):
    assert {r.variant_type for r in select_rows(rows, "how_to")} == {"original", "how_to"}
    assert len(select_rows(rows, "all")) == len(rows)
    with pytest.raises(ConsistbenchError, match="unknown variant type"):
        select_rows(rows, "typo")


def test_positives_are_the_group_and_bottom_negatives_the_least_similar(rows, emb):
    triplets = mine_triplets(rows, MiningConfig(k=1), embeddings=emb)
    groups = by_anchor(triplets)
    assert set(groups) == {"g0-orig", "g1-orig"}  # only originals anchor; g2..g4 have no variant
    assert sorted(t.positive for t in groups["g0-orig"]) == ["g0-howto", "g0-para"]
    assert {t.negative for t in triplets} == {"g3-orig"}  # k=1: the opposite point is the least similar
    assert all(t.positive_source == "group" for t in triplets)


def test_hard_negatives_are_the_nearest_with_another_answer(rows, emb):
    triplets = mine_triplets(rows, MiningConfig(negatives="hard", k=1), embeddings=emb)
    g0 = by_anchor(triplets)["g0-orig"]
    # g4 (8 degrees) is nearer but has the same answer, so it is not a negative; g1 (30 degrees) is next
    assert {t.negative for t in g0} == {"g1-orig"}
    g1 = by_anchor(triplets)["g1-orig"]
    assert {t.negative for t in g1} == {"g0-para"}  # 20 degrees: the nearest query of another group


def test_neighbours_with_the_same_answer_become_positives(rows, emb):
    triplets = mine_triplets(rows, MiningConfig(positives="group+neighbours", k=3), embeddings=emb)
    g0 = by_anchor(triplets)["g0-orig"]
    assert {(t.positive, t.positive_source) for t in g0} == {("g0-howto", "group"), ("g0-para", "group"),
                                                            ("g4-orig", "neighbour")}
    assert all(t.negative.split("-")[0] not in {"g0", "g4"} for t in g0)  # never a same-answer negative
    plain = mine_triplets(rows, MiningConfig(k=3), embeddings=emb)
    assert "g4-orig" not in {t.positive for t in plain}


def test_all_queries_as_anchors(rows, emb):
    triplets = mine_triplets(select_rows(rows, "how_to"), MiningConfig(anchors="all"), embeddings=emb[[0, 1, 3, 4, 5, 6, 7]])
    pairs = {(t.anchor, t.positive) for t in triplets}
    assert pairs == {("g0-orig", "g0-howto"), ("g0-howto", "g0-orig"), ("g1-orig", "g1-howto"),
                     ("g1-howto", "g1-orig")}


def test_negatives_are_seeded_and_from_other_groups(rows, emb):
    cfg = MiningConfig(negatives="random", seed=3)
    a = mine_triplets(rows, cfg, embeddings=emb)
    assert a == mine_triplets(rows, cfg, embeddings=emb)
    for t in a:
        assert t.negative.split("-")[0] != t.anchor.split("-")[0]
    draws = {tuple(t.negative for t in mine_triplets(rows, MiningConfig(negatives="random", seed=s), embeddings=emb))
             for s in range(8)}
    assert len(draws) > 1  # the seed matters


def test_real_encoder_bottom_negatives_are_unrelated(rows):
    triplets = mine_triplets(rows, MiningConfig(k=1))
    assert {t.negative for t in triplets} == {"g3-orig"}  # "What is the GIL?" is furthest from copying


def test_config_is_validated():
    with pytest.raises(ConsistbenchError, match="negatives"):
        MiningConfig(negatives="hardest")
    with pytest.raises(ConsistbenchError, match="k must"):
        MiningConfig(k=0)
