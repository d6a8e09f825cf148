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

import functools
import hashlib
import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType


@functools.lru_cache(maxsize=1)
def merge_utils() -> ModuleType:
    """The ``peft.utils.merge_utils`` module (loaded standalone when possible)."""
    spec = importlib.util.find_spec("peft")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "utils" / "merge_utils.py"
        if path.is_file():
            name = "consistbench_peft_merge_utils"
            file_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[name] = module
            file_spec.loader.exec_module(module)
            return module
    from peft.utils import merge_utils as module  # pragma: no cover - layout changed

    return module


def tensor_seed(seed: int, tensor_name: str) -> int:
    """The RNG seed used for one tensor: a hash of the merge seed and the tensor's name.

    Per-tensor seeds make a random merge (DARE) independent of tensor order and chunking, and
    let anyone reproduce one tensor with peft directly::

        torch.manual_seed(tensor_seed(seed, name)); merge_utils.dare_ties(deltas, weights, density)
    """
    digest = hashlib.sha256(f"{int(seed)}:{tensor_name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def prune(tensor, density: float, method: str, rescale: bool = False):
    """peft's ``prune`` without its warning for density >= 1 (which means: keep everything)."""
    if density >= 1:
        return tensor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return merge_utils().prune(tensor, density, method=method, rescale=rescale)
