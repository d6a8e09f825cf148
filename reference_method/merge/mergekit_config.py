"""mergekit's configuration format, both ways: read a mergekit YAML as a consistbench merge, and
export a consistbench merge as mergekit YAML.

``consistbench merge CONFIG`` takes either format (:func:`load_merge_config` tells them apart:
a mergekit config has ``merge_method``, ours has ``method``). A mergekit config is mapped onto
:class:`~consistbench.reference_method.merge.config.MergeConfig` for the methods both tools
have, and only where the formulas agree; anything else is refused with one line naming the key:

======================  =============================================================================
mergekit                consistbench
======================  =============================================================================
``linear``              ``linear``: ``weight`` per model, ``normalize``; a ``base_model`` is averaged in too (exact)
``task_arithmetic``     ``task_arithmetic``: ``normalize`` and ``lambda`` are folded into the weights (exact)
``ties``                ``ties`` with every weight 1, one ``density``, ``normalize: true`` (exact)
``dare_ties``           ``dare_ties`` with every weight 1, one ``density``, ``normalize: true``
``dare_linear``         ``dare_linear`` with one ``density``; ``normalize``/``lambda`` folded into the weights
======================  =============================================================================

DARE draws random masks: the same method, never the same numbers (a note says so). Refused:
``slices`` and ``modules`` (layer ranges), a ``tokenizer`` block, ``tokenizer_source`` other
than the base, ``chat_template``, LoRA references (``model+lora``), gradients and filtered
parameter values, unknown parameters, and every method consistbench lacks. Relative model paths
are resolved against the current folder, as mergekit does; only local folders are merged.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import read_text, write_text
from consistbench.reference_method.merge.config import MergeConfig
from consistbench.reference_method.merge.plan import build_plan

SHARED_METHODS = ("linear", "task_arithmetic", "ties", "dare_ties", "dare_linear")
TOP_KEYS = ("merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "tokenizer_source")
REFUSED_KEYS = {
    "slices": "layer ranges (slices) are not supported: consistbench merges whole models listed under 'models'",
    "modules": "per-module definitions are not supported: consistbench merges whole models listed under 'models'",
    "tokenizer": "tokenizer merging is not supported: the base model's tokenizer is copied as it is",
    "chat_template": "a chat template override is not supported: the base model's chat template is copied",
}
# mergekit's parameters of each shared method: (merge-wide only, per model or merge-wide)
PARAMS = {"linear": ({"normalize"}, {"weight"})}
PARAMS.update({m: ({"normalize", "rescale", "lambda", "int8_mask"}, {"weight", "density"})
               for m in SHARED_METHODS[1:]})
DEFAULTS = {"linear": {"normalize": True}, "task_arithmetic": {"normalize": False, "rescale": False},
            "ties": {"normalize": True, "rescale": False}, "dare_ties": {"normalize": False, "rescale": True},
            "dare_linear": {"normalize": False, "rescale": True}}
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "half": "float16"}
DARE_NOTE = ("{m}: the drop masks are random (and mergekit rescales kept entries to the delta's L1 norm, "
             "consistbench by 1/density): the same method as mergekit's, not the same tensors")


def is_mergekit(data: Any) -> bool:
    """A mergekit configuration (``merge_method``) rather than ours (``method``)."""
    return isinstance(data, dict) and "merge_method" in data and "method" not in data


def load_merge_config(path: str | Path) -> tuple[MergeConfig, list[str]]:
    """Our merge YAML or a mergekit YAML, as a MergeConfig, with notes for the user (the format
    read, where the result can differ from mergekit's). ConsistbenchError on anything refused."""
    path = Path(path)
    if not path.is_file():
        raise ConsistbenchError(f"{path}: no such merge config")
    try:
        data = yaml.safe_load(read_text(path, what="merge config"))
    except yaml.YAMLError as exc:
        raise ConsistbenchError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if is_mergekit(data):
        return from_mergekit(data, where=str(path))
    return MergeConfig.from_dict(data, where=str(path), relative_to=path.resolve().parent), []


def from_mergekit(data: dict, *, where: str = "mergekit config",
                  relative_to: str | Path | None = None) -> tuple[MergeConfig, list[str]]:
    """The consistbench merge a mergekit configuration describes, and notes for the user.

    Relative paths are resolved against ``relative_to`` (default: the current folder, as mergekit).
    """
    def refuse(key: str, why: str):
        raise ConsistbenchError(f"{where}: {key}: {why}")

    root = Path(relative_to) if relative_to is not None else Path.cwd()
    for key in data:
        if key in REFUSED_KEYS:
            refuse(key, REFUSED_KEYS[key])
        if key not in TOP_KEYS:
            refuse(key, f"unknown mergekit key (supported: {', '.join(TOP_KEYS)})")
    method = data["merge_method"]
    if method not in SHARED_METHODS:
        refuse("merge_method", f"{method!r} is not a method consistbench has (shared with mergekit: "
                               f"{', '.join(SHARED_METHODS)})")
    source = data.get("tokenizer_source")
    if source not in (None, "base"):
        refuse("tokenizer_source", f"{source!r}: only the base model's tokenizer is supported ('base')")
    base = _local(data.get("base_model"), "base_model", root, refuse) if data.get("base_model") is not None else None
    shared, per_model = PARAMS[method]
    glob = _scalars(data.get("parameters") or {}, "parameters", shared | per_model, method, refuse)
    entries = data.get("models")
    if not isinstance(entries, list) or not entries:
        refuse("models", "a non-empty list of {model: PATH, parameters: {...}} is required")
    models, model_params = [], []
    for i, entry in enumerate(entries):
        key = f"models[{i}]"
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            refuse(key, "expected {model: PATH, parameters: {...}}")
        for k in entry:
            if k not in ("model", "parameters"):
                refuse(f"{key}.{k}", "unknown key (a model entry has 'model' and 'parameters')")
        path = _local(entry["model"], f"{key}.model", root, refuse)
        own = entry.get("parameters") or {}
        for k in own:
            if k in shared:
                refuse(f"{key}.parameters.{k}", "a merge-wide parameter: put it under the top-level 'parameters'")
        own = _scalars(own, f"{key}.parameters", per_model, method, refuse)
        if method != "linear" and base is not None and path == base:
            continue  # mergekit treats the base listed among the models as the base itself
        models.append(path)
        model_params.append({k: own.get(k, glob.get(k)) for k in per_model})
    if method == "linear" and base is not None and base not in models:  # mergekit averages the base in too
        if glob.get("weight") is None:
            refuse("base_model", "mergekit's linear merges the base model too, with the top-level "
                                 "parameters.weight: set it, or drop base_model")
        models.append(base)
        model_params.append({k: glob.get(k) for k in per_model})
    if not models:
        refuse("models", "no model besides the base model")
    if method != "linear" and base is None:
        refuse("base_model", f"{method} needs a base_model (the deltas are taken from it)")
    opts = {**DEFAULTS[method], **{k: v for k, v in glob.items() if k in shared}}
    opts.setdefault("lambda", 1.0)
    for i, p in enumerate(model_params):
        if p["weight"] is None:
            refuse(f"models[{i}].parameters.weight", "missing (mergekit requires a weight for every model)")
    weights = [float(p["weight"]) for p in model_params]
    notes = [f"{where}: mergekit configuration, merged as consistbench {method}"]
    parameters: dict[str, Any] = {}
    if method == "linear":
        parameters["normalize"] = bool(opts["normalize"])
    else:
        densities = {float(p["density"]) if p["density"] is not None else 1.0 for p in model_params}
        if method != "task_arithmetic":
            if len(densities) > 1:
                refuse("parameters.density", f"one density for all models is supported, got {sorted(densities)}")
            parameters["density"] = densities.pop()
        if method in ("ties", "dare_ties"):
            if any(w != 1.0 for w in weights):
                k = next(i for i, w in enumerate(weights) if w != 1.0)
                refuse(f"models[{k}].parameters.weight", f"{weights[k]:g}: mergekit's {method} weighs the sign "
                       "election and the mean, consistbench's (peft's) does not; they agree only with weight 1")
            if opts["normalize"] is not True:
                refuse("parameters.normalize", f"{method} without normalize sums the agreeing deltas, "
                       f"consistbench's {method} averages them: set normalize: true")
            if float(opts["lambda"]) != 1.0:
                refuse("parameters.lambda", f"{method} supports lambda 1 only")
        else:  # task arithmetic and DARE-linear: a plain weighted sum, so normalize and lambda fold in
            total = sum(weights)
            scale = float(opts["lambda"]) / (total if opts["normalize"] and abs(total) >= 1e-8 else 1.0)
            weights = [w * scale for w in weights]
        if method == "ties" and opts["rescale"]:
            refuse("parameters.rescale", "ties with rescale is not supported (consistbench's ties does not rescale)")
        if method.startswith("dare") and not opts["rescale"]:
            refuse("parameters.rescale", f"{method} without rescale is not supported (consistbench rescales by 1/density)")
        if method.startswith("dare"):
            notes.append(DARE_NOTE.format(m=method))
    dtype = data.get("out_dtype") or data.get("dtype")
    if dtype is not None:
        if str(dtype).removeprefix("torch.") not in DTYPES:
            refuse("out_dtype" if data.get("out_dtype") else "dtype", f"{dtype!r}: one of {', '.join(DTYPES)}")
        dtype = DTYPES[str(dtype).removeprefix("torch.")]
        compute = DTYPES.get(str(data.get("dtype") or "float32").removeprefix("torch."), "float32")
        if compute != "float32":
            notes.append(f"computed in float32 (mergekit computes in {compute}): the tensors agree to "
                         f"{compute} rounding")
    config = {"method": method, "base": base, "models": [{"path": m, "weight": w} for m, w in zip(models, weights)],
              "parameters": parameters, "dtype": dtype or "auto"}
    return MergeConfig.from_dict(config, where=where), notes


def _local(ref: Any, key: str, root: Path, refuse) -> str:
    """A model reference as an absolute local folder (refusing LoRA, revisions and hub ids)."""
    if not isinstance(ref, str) or not ref.strip():
        refuse(key, "expected a local model folder (a path)")
    if "+" in ref:
        refuse(key, f"{ref!r}: a LoRA reference (model+lora) is not supported: merge the adapter first")
    path = Path(ref).expanduser()
    path = path if path.is_absolute() else (root / path)
    if not path.is_dir():
        hub = ref.count("/") == 1 and not ref.startswith((".", "/", "~")) and not Path(ref).exists()
        refuse(key, f"{ref!r} is not a local folder" + (" (consistbench merges local folders only: download "
                                                          "the model first)" if hub else ""))
    return str(path.resolve())


def _scalars(params: Any, key: str, known: set[str], method: str, refuse) -> dict[str, Any]:
    """mergekit parameters as plain numbers/booleans (gradients and filters refused)."""
    if not isinstance(params, dict):
        refuse(key, "expected a mapping of parameter names to values")
    out = {}
    for name, value in params.items():
        if name not in known:
            refuse(f"{key}.{name}", f"not a parameter consistbench supports for {method} "
                                    f"(supported: {', '.join(sorted(known))})")
        if isinstance(value, list):
            refuse(f"{key}.{name}", "a gradient or a list of filtered values is not supported: give one value")
        if isinstance(value, dict):
            refuse(f"{key}.{name}", "a filtered value ({filter, value}) is not supported: give one value")
        if name in ("normalize", "rescale", "int8_mask"):
            if not isinstance(value, bool):
                refuse(f"{key}.{name}", f"expected true or false, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            refuse(f"{key}.{name}", f"expected a finite number, got {value!r}")
        out[name] = value
    return out


def export_mergekit(config: MergeConfig, path: str | Path | None = None) -> dict:
    """The mergekit YAML mapping for ``config`` (written to ``path`` when given).

    linear, task_arithmetic and consistency (sparsify none) export exactly; ties, dare_ties,
    dare_linear and sparsified consistency export mergekit's nearest method (docs/MERGING.md
    lists the differences). ConsistbenchError for a method mergekit does not have.
    """
    spec = config.method_spec()
    params = config.method_params()
    if spec.mergekit is None:
        raise ConsistbenchError(f"merge method {spec.name!r} has no mergekit equivalent to export")
    plan = build_plan(config, needs_base=spec.needs_base, check=False, per_layer=spec.weights is not None)
    try:
        doc = spec.mergekit(config, params, plan)
    finally:
        plan.close()
    if path is not None:
        exact = spec.name in ("linear", "task_arithmetic") or (spec.name == "consistency" and params.sparsify == "none")
        header = (f"# mergekit configuration exported by `consistbench merge --export-mergekit` ({spec.name}).\n"
                  + ("# Same formula as consistbench's merge.\n" if exact else
                     "# mergekit's nearest method: not bit-identical to consistbench's (see docs/MERGING.md).\n")
                  + "# Run: mergekit-yaml THIS.yaml OUT_DIR --no-write-model-card [--random-seed N]\n")
        write_text(path, header + yaml.safe_dump(doc, sort_keys=False))
    return doc
