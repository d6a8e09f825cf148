"""Training orders that put similar examples in one batch, for triplets as well as rows.

transformers' ``train_sampling_strategy="group_by_length"`` reads an ``input_ids`` column, which
a triplet (``{"anchor": row, "positive": row, "negative": row}``) does not have, and draws from the
global RNG. :class:`GroupedSampler` takes each example's length (a triplet's longest sequence:
what padding depends on) and a seed, and is reseeded per epoch through ``set_epoch`` (which
``Trainer`` calls), so a resumed run replays the same order. With ``by="passage"`` it lays a
shuffled order out passage by passage instead: examples whose prompt starts with the same tokens
(one group's original and variants) come one after the other, so ``share_prefix`` computes their
passage once. Either way every example is drawn once per epoch: only the batches' composition
changes, which changes the training trajectory (a setting, off by default).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from consistbench.reference_method.collator import TRIPLET_ROLES


def example_length(item: dict) -> int:
    """Tokens of an encoded row, or of a triplet's longest sequence."""
    if "anchor" in item:
        return max(len(item[role]["input_ids"]) for role in TRIPLET_ROLES)
    return len(item["input_ids"])


def passage_key(item: dict) -> tuple:
    """The tokens before the question (of a triplet's anchor): equal for the rows of one passage."""
    row = item["anchor"] if "anchor" in item else item
    return tuple(row["input_ids"][:row["query_start"]])


def length_grouped_order(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[int]:
    """transformers' ``get_length_grouped_indices``: shuffle, cut into mega-batches of 50 batches
    (or a quarter of the data), sort each by length (longest first), the longest batch first."""
    mult = max(1, min(len(lengths) // (batch_size * 4), 50))
    order = list(range(len(lengths)))
    rng.shuffle(order)
    size = mult * batch_size
    megas = [sorted(order[i:i + size], key=lambda k: -lengths[k]) for i in range(0, len(order), size)]
    longest = max(range(len(megas)), key=lambda m: lengths[megas[m][0]])
    megas[0][0], megas[longest][0] = megas[longest][0], megas[0][0]
    return [k for mega in megas for k in mega]


def passage_grouped_order(keys: Sequence, rng: random.Random) -> list[int]:
    """A shuffled order of the passages, each passage's examples (shuffled) one after the other."""
    by_key: dict = {}
    for i, key in enumerate(keys):
        by_key.setdefault(key, []).append(i)
    groups = list(by_key.values())
    rng.shuffle(groups)
    out = []
    for members in groups:
        members = list(members)
        rng.shuffle(members)
        out.extend(members)
    return out


class GroupedSampler:
    """A ``torch`` sampler over ``items`` grouped ``by`` "length" or "passage", seeded by
    ``seed`` and the epoch."""

    def __init__(self, items: Sequence[dict], *, by: str, batch_size: int, seed: int):
        if by not in ("length", "passage"):
            raise ValueError(f"unknown grouping {by!r}")
        self.by, self.batch_size, self.seed, self.epoch = by, batch_size, seed, 0
        self.lengths = [example_length(it) for it in items]
        self.keys = [passage_key(it) for it in items] if by == "passage" else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        rng = random.Random(f"{self.seed}|{self.epoch}|{self.by}")
        if self.by == "passage":
            return iter(passage_grouped_order(self.keys, rng))
        return iter(length_grouped_order(self.lengths, self.batch_size, rng))
