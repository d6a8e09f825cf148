"""The merge methods that exist: the built-in ones and any registered since.

Importing this module registers the built-in methods (``methods``, ``consistency``); the
registry itself (:mod:`~consistbench.reference_method.merge.registry`) imports none of them, so
there is no import cycle between the registry and the methods that use it.
"""

from __future__ import annotations

import consistbench.reference_method.merge.consistency  # noqa: F401  (registers consistency)
import consistbench.reference_method.merge.methods  # noqa: F401  (registers linear, task_arithmetic, ...)
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.merge.registry import _REGISTRY, MergeMethod


def get_method(name: str) -> MergeMethod:
    """The registered method ``name``; a clear error listing the known ones otherwise."""
    if name not in _REGISTRY:
        raise ConsistbenchError(f"unknown merge method {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def registered_methods() -> dict[str, MergeMethod]:
    """All registered methods by name."""
    return dict(sorted(_REGISTRY.items()))
