"""The baseline merge methods: linear, task arithmetic, TIES, DARE-TIES, DARE-linear.

Each is peft's tensor operation (``peft.utils.merge_utils``) applied to one tensor (the plain
weighted sums of linear and task arithmetic use ``ops.weighted_sum`` / ``ops.weighted_delta_sum``,
the same formula as peft's ``task_arithmetic`` computed in place); the formulas, with ``delta_k = theta_k - theta_base`` and the models' config weights ``w_k``:

- ``linear``:          ``sum_k w_k theta_k / sum_k w_k`` (``normalize: false`` drops the division)
- ``task_arithmetic``: ``theta_base + sum_k w_k delta_k``
- ``ties``:            ``theta_base + disjoint_mean_k(w_k * trim(delta_k))`` where ``trim`` keeps
  the ``density`` largest magnitudes of each delta, the sign of each entry is elected by the
  sum of the trimmed deltas, and the mean is over the models agreeing with it (peft's ``ties``)
- ``dare_ties``:       as ``ties`` with ``trim`` replaced by DARE: keep each entry with
  probability ``density`` and divide the kept ones by ``density`` (peft's ``dare_ties``)
- ``dare_linear``:     ``theta_base + sum_k w_k dare(delta_k)`` (peft's ``dare_linear``)

Every tensor is treated alike, embeddings, final norm and ``lm_head`` included. Random methods
draw their masks per block of ``ops.RNG_BLOCK`` elements, seeded with
``ops.tensor_seed(seed, name, offset)``, and so stream like the rest. docs/MERGING.md lists where
mergekit's versions of these methods differ.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import Field

from consistbench.benchmark.errors import ConsistbenchError
import consistbench.reference_method.merge.ops as ops
from consistbench.reference_method.merge.registry import MethodParams, TensorInputs, merge_method

SignMethod = Literal["total", "frequency"]


class LinearParams(MethodParams):
    normalize: bool = Field(True, description="divide by the sum of the weights (a weighted mean)")


class TiesParams(MethodParams):
    density: float = Field(0.5, gt=0, le=1, description="share of each delta's entries kept (largest magnitudes)")
    majority_sign_method: SignMethod = Field("total", description="elect signs by summed values or by counts")


class DareParams(MethodParams):
    density: float = Field(0.5, gt=0, le=1, description="probability of keeping each delta entry")
    seed: int = Field(0, description="seed of the per-tensor drop masks")


class DareTiesParams(DareParams):
    majority_sign_method: SignMethod = "total"


# ---------------------------------------------------------------------------------------------
# mergekit export helpers

def out_dtype_name(config, plan) -> str:
    if config.dtype != "auto":
        return config.dtype
    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float32"}
    counts = Counter(t.dtype for t in plan.reference.tensors.values() if t.dtype in names)
    return names[counts.most_common(1)[0][0]] if counts else "float32"


def mergekit_doc(config, plan, method: str, per_model: list[dict], parameters: dict | None = None,
                 with_base: bool = True) -> dict:
    doc = {"merge_method": method}
    if with_base and config.base:
        doc["base_model"] = config.base
    doc["models"] = [{"model": m.path, "parameters": p} for m, p in zip(config.models, per_model)]
    if parameters:
        doc["parameters"] = parameters
    doc["dtype"] = "float32"          # the compute dtype: consistbench computes in float32
    doc["out_dtype"] = out_dtype_name(config, plan)
    return doc


def _mk_linear(config, p: LinearParams, plan):
    return mergekit_doc(config, plan, "linear", [{"weight": m.weight} for m in config.models],
                        {"normalize": p.normalize}, with_base=False)


def _mk_task_arithmetic(config, p, plan):
    return mergekit_doc(config, plan, "task_arithmetic", [{"weight": m.weight} for m in config.models])


def _mk_ties(config, p: TiesParams, plan):
    return mergekit_doc(config, plan, "ties", [{"weight": m.weight, "density": p.density} for m in config.models],
                        {"normalize": True})


def _mk_dare_ties(config, p: DareTiesParams, plan):
    return mergekit_doc(config, plan, "dare_ties",
                        [{"weight": m.weight, "density": p.density} for m in config.models],
                        {"normalize": True, "rescale": True})


def _mk_dare_linear(config, p: DareParams, plan):
    return mergekit_doc(config, plan, "dare_linear",
                        [{"weight": m.weight, "density": p.density} for m in config.models],
                        {"normalize": False, "rescale": True})


# ---------------------------------------------------------------------------------------------
# methods

@merge_method("linear", params=LinearParams, needs_base=False, mergekit=_mk_linear)
def linear(t: TensorInputs, p: LinearParams):
    """Weighted average of the models: sum_k w_k theta_k / sum_k w_k (the base is not included)."""
    out = ops.weighted_sum(t.models, t.weights)
    if p.normalize:
        total = float(t.weights.sum())
        if abs(total) < 1e-12:
            raise ConsistbenchError("linear merge with normalize: the model weights sum to 0")
        out /= total
    return out


@merge_method("task_arithmetic", mergekit=_mk_task_arithmetic)
def task_arithmetic(t: TensorInputs, p: MethodParams):
    """Base plus the weighted sum of task vectors: theta_base + sum_k w_k (theta_k - theta_base)."""
    return ops.weighted_delta_sum(t.base, t.models, t.weights).add_(t.base)


@merge_method("ties", params=TiesParams, elementwise=lambda p: p.density >= 1, mergekit=_mk_ties)
def ties(t: TensorInputs, p: TiesParams):
    """TIES: trim each task vector to its largest entries, elect signs, average the agreeing ones."""
    if p.density >= 1:  # nothing trimmed: sign election and disjoint mean only
        return _ties_full(t, p)
    return t.base + ops.merge_utils().ties(t.deltas, t.weights, p.density, p.majority_sign_method)


def _ties_full(t: TensorInputs, p: TiesParams):
    """peft's ties without the trimming step (density 1), from peft's own pieces."""
    import torch

    mu = ops.merge_utils()
    stacked = torch.stack(t.deltas, dim=0)
    mask = mu.calculate_majority_sign_mask(stacked, method=p.majority_sign_method)
    weights = mu.reshape_weight_task_tensors(stacked, t.weights)
    return t.base + mu.disjoint_merge(stacked * weights, mask)


@merge_method("dare_ties", params=DareTiesParams, random=True, mergekit=_mk_dare_ties)
def dare_ties(t: TensorInputs, p: DareTiesParams):
    """DARE-TIES: drop delta entries at random (rescaling the rest), elect signs, average agreeing ones."""
    if p.density >= 1:
        return _ties_full(t, TiesParams(density=1.0, majority_sign_method=p.majority_sign_method))
    return t.base + ops.merge_utils().dare_ties(t.deltas, t.weights, p.density, p.majority_sign_method)


@merge_method("dare_linear", params=DareParams, random=True, mergekit=_mk_dare_linear)
def dare_linear(t: TensorInputs, p: DareParams):
    """DARE-linear: drop delta entries at random (rescaling the rest), then task arithmetic."""
    if p.density >= 1:
        return t.base + ops.merge_utils().task_arithmetic(t.deltas, t.weights)
    return t.base + ops.merge_utils().dare_linear(t.deltas, t.weights, p.density)
