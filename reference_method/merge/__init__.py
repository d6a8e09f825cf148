"""Model merging for the reference method: a registry of methods and a streaming engine.

Python API (what ``consistbench merge`` and ``consistbench ref reproduce`` call)::

    from consistbench.reference_method.merge import MergeConfig, merge, export_mergekit

    cfg = MergeConfig.from_yaml("merge.yaml")            # or MergeConfig.from_dict({...}, relative_to=".")
    summary = merge(cfg, "out/merged")                    # checks, streams, writes atomically
    export_mergekit(cfg, "merge.mergekit.yaml")          # the same merge for mergekit
    cfg, notes = load_merge_config("mk.yaml")            # ours or a mergekit YAML (mergekit_config)

Methods: ``linear``, ``task_arithmetic``, ``ties``, ``dare_ties``, ``dare_linear`` and
``consistency`` (reference_method.merge.methods / .consistency); add one with
:func:`consistbench.reference_method.merge.registry.merge_method`. See docs/MERGING.md.
"""

import importlib

_EXPORTS = {"MergeConfig": "config", "ModelSpec": "config", "null_merge_config": "config", "merge": "engine", "export_mergekit": "mergekit_config", "load_merge_config": "mergekit_config", "from_mergekit": "mergekit_config",
            "merge_method": "registry", "MethodParams": "registry", "TensorInputs": "registry", "registered_methods": "catalog"}
__all__ = list(_EXPORTS)


def __getattr__(name):  # lazy, so that `consistbench --help` does not import pydantic and torch
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"consistbench.reference_method.merge.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'consistbench.reference_method.merge' has no attribute {name!r}")
