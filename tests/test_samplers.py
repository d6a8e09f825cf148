"""The grouped training orders (reference_method/samplers.py): every example once per epoch, batches of
similar length (triplets too), passages together, seeded per epoch (a resumed run replays them)."""

from __future__ import annotations

import pytest

from consistbench.reference_method.samplers import GroupedSampler


def _row(n: int, passage: int) -> dict:
    prefix = [1, 2, 100 + passage]
    return {"input_ids": prefix + [7] * (n - len(prefix)), "query_start": len(prefix)}


def _triplet(n: int, passage: int) -> dict:
    return {"anchor": _row(n, passage), "positive": _row(n - 2, passage), "negative": _row(6, passage + 50)}


ITEMS = [_triplet(10 + (i * 37) % 200, i // 3) for i in range(96)]


@pytest.mark.parametrize("by", ["length", "passage"])
def test_every_example_once_and_seeded_per_epoch(by):
    s = GroupedSampler(ITEMS, by=by, batch_size=4, seed=0)
    first = list(s)
    assert sorted(first) == list(range(len(ITEMS))) and len(s) == len(ITEMS)
    assert list(GroupedSampler(ITEMS, by=by, batch_size=4, seed=0)) == first  # the same order after a restart
    s.set_epoch(1)
    assert list(s) != first and sorted(s) == list(range(len(ITEMS)))
    assert list(GroupedSampler(ITEMS, by=by, batch_size=4, seed=1)) != first


def test_length_grouping_shrinks_the_padding_of_triplet_batches():
    """A triplet's length is its longest sequence; batches of 4 pad far less than random ones."""
    import random

    length = [it["anchor"]["input_ids"].__len__() for it in ITEMS]

    def padding(order):
        batches = [order[i:i + 4] for i in range(0, len(order), 4)]
        return sum(max(length[k] for k in b) * len(b) - sum(length[k] for k in b) for b in batches)

    grouped = list(GroupedSampler(ITEMS, by="length", batch_size=4, seed=0))
    shuffled = list(range(len(ITEMS)))
    random.Random(0).shuffle(shuffled)
    assert padding(grouped) < 0.5 * padding(shuffled)
    assert length[grouped[0]] == max(length)  # the longest batch first (memory errors show at once)


def test_passage_grouping_keeps_each_passage_together():
    order = list(GroupedSampler(ITEMS, by="passage", batch_size=3, seed=0))
    passages = [i // 3 for i in order]
    runs = [p for k, p in enumerate(passages) if k == 0 or p != passages[k - 1]]
    assert len(runs) == len(set(passages))  # one run per passage


def test_unknown_grouping_is_refused():
    with pytest.raises(ValueError, match="grouping"):
        GroupedSampler(ITEMS, by="colour", batch_size=4, seed=0)
