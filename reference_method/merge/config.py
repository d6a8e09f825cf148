"""The merge configuration: one pydantic model, and a YAML file is that model written down.

Example (``consistbench merge merge.yaml out/``)::

    method: task_arithmetic        # a name from the registry: `consistbench merge --list-methods`
    base: ../smollm2               # config, tokenizer and the reference the deltas are taken from
    models:
      - path: ../ft-how_to
        weight: 0.5
      - path: ../ft-paraphrase     # weight defaults to 1.0
    parameters: {}                 # the method's own options (density, seed, weights_file, ...)
    dtype: auto                    # output dtype: auto (the base's) | float32 | bfloat16 | float16

Relative paths are resolved against the YAML file's directory. Unknown keys, unknown methods,
unknown or ill-typed method parameters and non-finite numbers are errors before anything runs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consistbench.benchmark.errors import ConsistbenchError, validation_message
from consistbench.reference_method.merge.catalog import get_method, path_parameters

DType = Literal["auto", "float32", "bfloat16", "float16"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


class ModelSpec(StrictModel):
    """One input model: a local folder with ``config.json`` and safetensors weights."""

    path: str
    weight: float = 1.0
    name: str | None = Field(default=None, description="label in the card and export (default: folder name)")

    @property
    def label(self) -> str:
        return self.name or Path(self.path).name


class MergeConfig(StrictModel):
    """A whole merge: the method, its inputs and where its options live."""

    method: str
    base: str | None = None
    models: list[ModelSpec] = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)
    dtype: DType = "auto"
    max_shard_size: str | int = Field(default="5GB", description="largest output shard (bytes or '500MB', '5GB')")
    chunk_elements: int = Field(default=1 << 18, gt=0,
                                description="elementwise methods process tensors in slices of this many elements")
    threads: int = Field(default=1, gt=0, description="torch intra-op threads while merging (memory-bound work: "
                                                      "more threads mostly add contention)")

    @field_validator("models", mode="before")
    @classmethod
    def _plain_paths(cls, value):
        if isinstance(value, list):
            return [{"path": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("max_shard_size")
    @classmethod
    def _shard_size(cls, value):
        parse_size(value)
        return value

    @model_validator(mode="after")
    def _finite(self):
        for key, value in self.parameters.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"parameter {key!r} is not finite ({value})")
        return self

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "merge config", relative_to: str | Path | None = None) -> MergeConfig:
        """Validate a mapping; relative paths are resolved against ``relative_to`` when given."""
        if not isinstance(data, dict):
            raise ConsistbenchError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
        try:
            cfg = cls.model_validate(data)
        except ValidationError as exc:
            raise ConsistbenchError(validation_message(exc, where)) from None
        return cfg.resolved(relative_to) if relative_to is not None else cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> MergeConfig:
        path = Path(path)
        if not path.is_file():
            raise ConsistbenchError(f"{path}: no such merge config")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConsistbenchError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
        return cls.from_dict(data, where=str(path), relative_to=path.resolve().parent)

    def resolved(self, relative_to: str | Path) -> MergeConfig:
        """A copy with every path (base, models, the method's path parameters) made absolute."""
        root = Path(relative_to)

        def absolute(p: str) -> str:
            q = Path(p).expanduser()
            return str(q if q.is_absolute() else (root / q).resolve())

        data = self.model_dump()
        if data["base"]:
            data["base"] = absolute(data["base"])
        for m in data["models"]:
            m["path"] = absolute(m["path"])
        for key in path_parameters(self.method):
            if isinstance(data["parameters"].get(key), str):
                data["parameters"][key] = absolute(data["parameters"][key])
        return type(self).model_validate(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(exclude_none=True), sort_keys=False)

    # -- views ---------------------------------------------------------------------------------

    @property
    def shard_bytes(self) -> int:
        return parse_size(self.max_shard_size)

    def method_spec(self):
        """The registered method (ConsistbenchError naming the known ones if unknown)."""
        return get_method(self.method)

    def method_params(self):
        """This method's typed parameters, validated from ``parameters``."""
        spec = self.method_spec()
        try:
            return spec.params.model_validate(self.parameters)
        except ValidationError as exc:
            raise ConsistbenchError(validation_message(exc, f"parameters of method {self.method!r}")) from None


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(value: str | int) -> int:
    """Bytes from an int or a string such as ``'500MB'`` or ``'2GiB'``."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("size must be positive")
        return value
    m = _SIZE.match(str(value))
    unit = (m.group(2) or "").upper() if m else None
    if not m or unit not in _UNITS:
        raise ValueError(f"not a size: {value!r} (use bytes or e.g. '500MB', '5GB')")
    size = int(float(m.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ValueError("size must be positive")
    return size


NULL_KINDS = ("linear", "task_arithmetic")


def null_merge_config(base: str | Path, models: list[str | Path], kind: Literal["linear", "task_arithmetic"],
                      scale: float | None = None, *, names: list[str] | None = None, dtype: DType = "auto") -> MergeConfig:
    """The merge a consistency merge of ``models`` is read against, as one config:

    - ``linear``: the uniform average ``sum_k theta_k / K`` (equal weights, ``normalize``; ``scale``
      must be None); the null of a consistency merge with ``total: 1`` (a weighted average);
    - ``task_arithmetic``: ``theta_base + scale * sum_k delta_k`` (every model's weight ``scale``);
      the null of a consistency merge with ``total: K * scale``.

    ``names`` label the models in the card (default: folder names). Paths are used as given.
    """
    if kind not in NULL_KINDS:
        raise ConsistbenchError(f"null merge kind {kind!r}: one of {', '.join(NULL_KINDS)}")
    if kind == "linear" and scale is not None:
        raise ConsistbenchError("the linear null merge is the uniform average: it takes no scale")
    if kind == "task_arithmetic" and (scale is None or not math.isfinite(scale)):
        raise ConsistbenchError("the task_arithmetic null merge needs a finite scale (each task vector's weight)")
    if names is not None and len(names) != len(models):
        raise ConsistbenchError(f"{len(names)} names for {len(models)} models")
    weight = 1.0 if kind == "linear" else float(scale)
    specs = [{"path": str(m), "weight": weight, **({"name": names[i]} if names else {})} for i, m in enumerate(models)]
    parameters = {"normalize": True} if kind == "linear" else {}
    return MergeConfig.from_dict({"method": kind, "base": str(base), "models": specs, "parameters": parameters,
                                  "dtype": dtype}, where=f"{kind} null merge")
