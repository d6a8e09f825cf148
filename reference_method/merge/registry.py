"""The registry of merge methods: a name, a parameters model and one function per tensor.

Adding a method is a decorator and a small function (docs/MERGING.md, "Create a merge method")::

    class ScaledParams(MethodParams):
        scale: float = 1.0

    @merge_method("scaled_task_arithmetic", params=ScaledParams)
    def scaled(t: TensorInputs, p: ScaledParams) -> torch.Tensor:
        deltas = [m - t.base for m in t.models]
        return t.base + p.scale * ops.merge_utils().task_arithmetic(deltas, t.weights)

The engine calls the function once per tensor (or per slice of a tensor when the method is
``elementwise``), with float32 inputs; it writes the result in the output dtype and drops it. A
method never sees more than one tensor name at a time. A ``random`` method runs inside a torch
RNG seeded from ``t.seed``; if it is also elementwise its slices are the fixed blocks of
``ops.RNG_BLOCK`` elements, each with its own seed, so its masks never depend on how the engine
slices. A method that is elementwise and not random must be deterministic.

A parameter holding a file path (such as ``consistency``'s ``weights_file``) is declared with
``path_params=("weights_file",)``: a merge config resolves it against the config's folder, like
the model paths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict


if TYPE_CHECKING:  # pragma: no cover
    import torch


class MethodParams(BaseModel):
    """Base class of every method's parameters: unknown keys and NaN/inf are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


@dataclass
class TensorInputs:
    """What a method sees for one tensor (or one slice of it); all tensors float32, same shape."""

    name: str                      # the tensor's name, e.g. "model.layers.3.mlp.up_proj.weight"
    base: torch.Tensor | None      # the base model's tensor (None for methods with needs_base=False)
    models: list[torch.Tensor]     # one per input model, in config order
    weights: torch.Tensor          # shape (K,): this tensor's per-model weights
    seed: int                      # seed of this tensor / block (torch is seeded with it for random methods)
    layer: int | None = None       # decoder layer index, None for embeddings / final norm / lm_head

    @property
    def deltas(self) -> list[torch.Tensor]:
        """Task vectors ``theta_k - theta_base``."""
        return [m - self.base for m in self.models]


WeightsFn = Callable[[str], Sequence[float]]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    fn: Callable[[TensorInputs, Any], torch.Tensor]
    params: type[MethodParams]
    needs_base: bool = True
    # True if the result for a slice of a tensor is the slice of the result (no tensor-wide
    # statistic, no randomness): the engine then streams large tensors in slices.
    elementwise: bool | Callable[[Any], bool] = True
    # True if the method draws random numbers (torch's global RNG, seeded per tensor or block).
    random: bool | Callable[[Any], bool] = False
    # Per-tensor, per-model weights, from (MergeConfig, params, MergePlan); default: each model's
    # `weight` from the config.
    weights: Callable[[Any, Any, Any], WeightsFn] | None = None
    # Build the mergekit YAML mapping from (MergeConfig, params, MergePlan), or None if mergekit has
    # no such method.
    mergekit: Callable[[Any, Any, Any], dict] | None = None
    # Parameters holding a path: resolved against the config's folder like the model paths.
    path_params: tuple[str, ...] = ()
    summary: str = ""
    extra: dict = field(default_factory=dict)

    def is_elementwise(self, params) -> bool:
        return self.elementwise(params) if callable(self.elementwise) else bool(self.elementwise)

    def is_random(self, params) -> bool:
        return self.random(params) if callable(self.random) else bool(self.random)


# Every registered method by name, filled by :func:`merge_method`. Read it through
# :mod:`~consistbench.reference_method.merge.catalog`, which first registers the built-in methods.
REGISTRY: dict[str, MergeMethod] = {}


def merge_method(name: str, *, params: type[MethodParams] = MethodParams, needs_base: bool = True,
                 elementwise: bool | Callable[[Any], bool] = True, random: bool | Callable[[Any], bool] = False,
                 weights=None, mergekit=None, path_params: tuple[str, ...] = ()):
    """Register the decorated function as merge method ``name`` (see the module docstring)."""

    def decorate(fn):
        if name in REGISTRY and REGISTRY[name].fn is not fn:
            raise ValueError(f"merge method {name!r} is already registered")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        REGISTRY[name] = MergeMethod(name=name, fn=fn, params=params, needs_base=needs_base,
                                     elementwise=elementwise, random=random, weights=weights, mergekit=mergekit,
                                     path_params=tuple(path_params), summary=summary)
        return fn

    return decorate
