"""The merge methods that exist: the built-in ones and any registered since.

Importing this module registers the built-in methods (``methods``, ``consistency``); the
registry itself (:mod:`~consistbench.reference_method.merge.registry`) imports none of them, so
there is no import cycle between the registry and the methods that use it.
"""

from __future__ import annotations

import consistbench.reference_method.merge.consistency  # noqa: F401  (registers consistency)
import consistbench.reference_method.merge.methods  # noqa: F401  (registers linear, task_arithmetic, ...)
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.merge.registry import REGISTRY, MergeMethod


def get_method(name: str) -> MergeMethod:
    """The registered method ``name``; a clear error listing the known ones otherwise."""
    if name not in REGISTRY:
        raise ConsistbenchError(f"unknown merge method {name!r} (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def registered_methods() -> dict[str, MergeMethod]:
    """All registered methods by name."""
    return dict(sorted(REGISTRY.items()))


def path_parameters(name: str) -> tuple[str, ...]:
    """The parameters of method ``name`` that hold a path (none for an unknown name: that is
    reported when the method is used, :func:`get_method`)."""
    spec = REGISTRY.get(name)
    return spec.path_params if spec else ()
