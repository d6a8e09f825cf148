"""Laying a collated training batch out for the model's forward pass without padding, with the
prompt prefix that several sequences share computed once (``ConsistencyConfig.padding_free`` and
``share_prefix``).

The collator pads every sequence of a batch to its longest, and the model computes the padding
too (28 % of the positions of the ``cpu`` preset's random batches). A triplet's anchor and
positive share the instruction and the passage up to the question (about a quarter of a triplet's
tokens), which the padded batch computes twice. Here a batch becomes *units*, one row of a
forward pass each:

- a *single* unit is one sequence, unpadded;
- a *tree* unit is the prefix that several sequences share (the tokens before the question, and
  as far into the question as they agree), laid out once, then each sequence's own suffix; a
  4-D mask lets every suffix token see the prefix and the tokens of its own suffix before it, and
  each token keeps the position it has in its own sequence.

Identical sequences of a batch (an anchor that is the anchor of several triplets in one batch)
are computed once and weighted by how often they occur. With ``padding_free`` each unit is its own
forward call (no padding at all); without it the units are one call, padded to the longest unit.

Why it is the same computation: with causal attention a token's hidden state depends only on the
tokens before it and their positions, which are the same in the unit as in the padded batch, so
every hidden state, hence the CE, the pooled states and the gradients, equals the padded path's
to float rounding (``tests/test_packing.py`` compares losses and gradients). A prefix never
reaches an answer token (it stops at least one token before the prompt ends), so every position
that has a label lies in exactly one sequence's suffix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from consistbench.reference_method.collator import IGNORE_INDEX


@dataclass
class Call:
    """One forward call: ``G`` units padded to ``L`` positions."""

    input_ids: torch.Tensor  # G x L
    position_ids: torch.Tensor  # G x L
    attention_mask: torch.Tensor | None  # None (one unpadded sequence), G x L (padding only), G x 1 x L x L bool (trees)
    targets: torch.Tensor  # G x L: the label of the next token of the same sequence, -100 elsewhere
    weights: torch.Tensor | None  # G x L: how many identical sequences each target stands for (None: all 1)


@dataclass
class Layout:
    """How a collated batch of N sequences (padded to Lo) is computed."""

    calls: list[Call]
    index: torch.Tensor  # N x Lo: each token's row in the calls' outputs, flattened and concatenated (0 on padding)
    positions: int  # positions the calls compute, padding included
    tokens: int  # tokens of the collated batch (padding excluded)
    shared: int  # tokens not computed again: shared prefixes and repeated sequences


@dataclass
class _Unit:
    members: list[int]  # sequence indices (representatives of identical sequences)
    prefix: int  # shared prefix length (0 for a single sequence)


def _first_index(mask: torch.Tensor) -> torch.Tensor:
    """Per row, the first column where ``mask`` is true (the row length where it never is)."""
    cols = torch.arange(mask.shape[1]).expand_as(mask)
    return torch.where(mask, cols, torch.full_like(cols, mask.shape[1])).min(1).values


def _common_prefix(rows: list[torch.Tensor]) -> int:
    first, size = rows[0], min(len(r) for r in rows)
    same = torch.ones(size, dtype=torch.bool)
    for r in rows[1:]:
        same &= r[:size] == first[:size]
    differ = (~same).nonzero()
    return int(differ[0]) if len(differ) else size


def plan_layout(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                query_mask: torch.Tensor | None = None, *, share_prefix: bool = True, padding_free: bool = True,
                trees: bool = True, max_tree_length: int | None = None) -> Layout:
    """The units of a right-padded collated batch and the forward calls that compute them.

    Sequences are grouped when they have the same tokens up to their first query token
    (``query_mask``; the instruction and the passage); ``trees=False`` (an attention
    implementation that takes no 4-D mask) or a sequence longer than ``max_tree_length`` (a
    model's sliding window) keeps them apart. Identical sequences are always computed once.
    """
    input_ids, attention_mask, labels = input_ids.cpu(), attention_mask.cpu(), labels.cpu()
    n_seq, width = input_ids.shape
    lengths = attention_mask.sum(1)
    if not torch.equal(attention_mask.bool(), torch.arange(width).expand(n_seq, width) < lengths[:, None]):
        raise ValueError("padding_free / share_prefix need right-padded sequences")
    lengths = lengths.tolist()
    first_label = _first_index(labels != IGNORE_INDEX).tolist()
    query_start = _first_index(query_mask.cpu() > 0).tolist() if query_mask is not None else [width] * n_seq
    rows = [input_ids[i, :lengths[i]] for i in range(n_seq)]
    # identical sequences: computed once
    rep, mult, order = list(range(n_seq)), {}, []
    seen: dict[tuple, int] = {}
    for i in range(n_seq):
        key = (first_label[i], rows[i].numpy().tobytes())
        if key in seen:
            rep[i] = seen[key]
        else:
            seen[key] = i
            order.append(i)
        mult[rep[i]] = mult.get(rep[i], 0) + 1
    # sequences with the same tokens before their question: one tree
    groups: dict[bytes, list[int]] = {}
    units: list[_Unit] = []
    for i in order:
        qs = query_start[i]
        if not (share_prefix and trees) or qs >= lengths[i] or qs < 1:
            units.append(_Unit([i], 0))
            continue
        groups.setdefault(rows[i][:qs].numpy().tobytes(), []).append(i)
    for members in groups.values():
        prefix = min(_common_prefix([rows[m] for m in members]), min(first_label[m] for m in members) - 1)
        too_long = max_tree_length is not None and max(lengths[m] for m in members) > max_tree_length
        if len(members) < 2 or prefix < 1 or too_long:
            units.extend(_Unit([m], 0) for m in members)
        else:
            units.append(_Unit(members, prefix))
    units.sort(key=lambda u: u.members[0])
    batches = [[u] for u in units] if padding_free else [units]
    return _lay_out(batches, rows, labels, rep, mult, n_seq, width)


def _lay_out(batches: list[list[_Unit]], rows, labels, rep, mult, n_seq: int, width: int) -> Layout:
    index = torch.zeros((n_seq, width), dtype=torch.long)
    calls, base, positions, any_repeat = [], 0, 0, any(m > 1 for m in mult.values())
    for units in batches:
        sizes = [u.prefix + sum(len(rows[m]) - u.prefix for m in u.members) for u in units]
        g, length = len(units), max(sizes)
        ids = torch.zeros((g, length), dtype=torch.long)
        pos = torch.zeros((g, length), dtype=torch.long)
        branch = torch.full((g, length), -2, dtype=torch.long)  # -2 padding, -1 shared prefix, b: member b
        targets = torch.full((g, length), IGNORE_INDEX, dtype=torch.long)
        weights = torch.zeros((g, length)) if any_repeat else None
        for u_i, unit in enumerate(units):
            p, offset = unit.prefix, unit.prefix
            if p:
                ids[u_i, :p] = rows[unit.members[0]][:p]
                pos[u_i, :p] = torch.arange(p)
                branch[u_i, :p] = -1
            for b, m in enumerate(unit.members):
                n = len(rows[m])
                slots = torch.cat([torch.arange(p), torch.arange(offset, offset + n - p)])
                ids[u_i, offset:offset + n - p] = rows[m][p:]
                pos[u_i, offset:offset + n - p] = torch.arange(p, n)
                branch[u_i, offset:offset + n - p] = b
                targets[u_i, slots[:-1]] = labels[m, 1:n]
                if weights is not None:
                    weights[u_i, slots[:-1]] = float(mult[m])
                index[m, :n] = base + u_i * length + slots
                offset += n - p
        valid = branch > -2
        trees = any(u.prefix for u in units)
        if trees:
            allowed = (valid[:, None, :] & (pos[:, None, :] <= pos[:, :, None])
                       & ((branch[:, None, :] == -1) | (branch[:, None, :] == branch[:, :, None])))
            allowed[:, :, 0] |= ~valid  # a padding query sees one key: no empty softmax row
            mask = allowed[:, None]
        elif g == 1:
            mask = None
        else:
            mask = valid.long()
        calls.append(Call(ids, pos, mask, targets, weights))
        base += g * length
        positions += g * length
    for i in range(n_seq):
        if rep[i] != i:
            index[i] = index[rep[i]]
    tokens = sum(len(rows[i]) for i in range(n_seq))
    computed = sum(int((c.attention_mask.sum() if c.attention_mask is not None and c.attention_mask.dim() == 2
                        else _valid_count(c))) for c in calls)
    return Layout(calls, index, positions, tokens, tokens - computed)


def _valid_count(call: Call) -> int:
    if call.attention_mask is None:
        return call.input_ids.numel()
    return int(call.attention_mask[:, 0].diagonal(dim1=-2, dim2=-1).sum())


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean 4-D mask (True: attend) as the additive float mask eager attention adds to its scores."""
    return torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)


def layout_of(batch: dict, *, share_prefix: bool, padding_free: bool, trees: bool = True,
              max_tree_length: int | None = None) -> Layout:
    """:func:`plan_layout` of a collated batch (``input_ids``, ``attention_mask``, ``labels``, ``query_mask``)."""
    return plan_layout(batch["input_ids"], batch["attention_mask"], batch["labels"], batch.get("query_mask"),
                       share_prefix=share_prefix, padding_free=padding_free, trees=trees,
                       max_tree_length=max_tree_length)
