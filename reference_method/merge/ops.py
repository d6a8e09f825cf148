"""peft's merge tensor operations, loaded without importing the rest of peft.

``peft.utils.merge_utils`` (task_arithmetic, ties, dare_ties, dare_linear, prune,
calculate_majority_sign_mask, ...) only needs torch, but ``import peft`` first runs peft's
``__init__``, which imports transformers and accelerate: ~140 MB more anonymous memory and
several seconds on this machine, for every merge. We load that one file by path instead and fall
back to the ordinary import if the file is not where peft 0.17-0.21 keeps it.

Every merge method uses these functions rather than re-implementing them; see docs/MERGING.md
for where their semantics differ from mergekit's.
"""

from __future__ import annotations

import hashlib
import warnings
from types import ModuleType

from consistbench.benchmark.compat import peft_merge_utils


def merge_utils() -> ModuleType:
    """The ``peft.utils.merge_utils`` module (:func:`consistbench.benchmark.compat.peft_merge_utils`)."""
    return peft_merge_utils()


# Random methods (DARE) draw their masks per block of this many elements of the flattened
# tensor, each block with its own seed: the result does not depend on tensor order, sharding or
# ``chunk_elements``, and the method streams like any elementwise one.
RNG_BLOCK = 1 << 18


def tensor_seed(seed: int, tensor_name: str, offset: int = 0) -> int:
    """The RNG seed of the block of ``tensor_name`` starting at flat element ``offset``.

    A hash of the merge seed, the name and the offset. Anyone can reproduce a block with peft::

        torch.manual_seed(tensor_seed(seed, name, start))
        merge_utils.dare_ties([d.reshape(-1)[start:start + RNG_BLOCK] for d in deltas], weights, density)
    """
    digest = hashlib.sha256(f"{int(seed)}:{tensor_name}@{int(offset)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def prune(tensor, density: float, method: str, rescale: bool = False):
    """peft's ``prune`` without its warning for density >= 1 (which means: keep everything)."""
    if density >= 1:
        return tensor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return merge_utils().prune(tensor, density, method=method, rescale=rescale)


def weighted_delta_sum(base, models, weights):
    """``sum_k w_k (models[k] - base)``: peft's ``task_arithmetic`` on the task vectors, fused.

    Same formula and summation order as ``merge_utils().task_arithmetic([m - base ...], weights)``
    but in place (one scratch buffer instead of K deltas, a K-stack and a K-product): about a
    third of the memory traffic, which is what a merge of large tensors spends its time on.
    ``tests/test_merge.py`` checks it against peft's function.
    """
    import torch

    out = torch.zeros_like(base)
    scratch = torch.empty_like(base)
    for m, w in zip(models, weights.tolist()):
        torch.sub(m, base, out=scratch)
        out.add_(scratch, alpha=w)
    return out


def weighted_sum(models, weights):
    """``sum_k w_k models[k]`` (peft's ``task_arithmetic`` on the models themselves), fused."""
    import torch

    out = torch.zeros_like(models[0])
    for m, w in zip(models, weights.tolist()):
        out.add_(m, alpha=w)
    return out
