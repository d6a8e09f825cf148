"""The consistency-weights file: its format, its options model, reading and writing it.

A weights file (``consistbench ref weights -o weights.json``) is one JSON document::

    {"format": "consistbench-consistency-weights", "version": 2, "consistbench_version": ...,
     "base": {"path", "label"}, "models": [{"path", "label"}, ...],
     "dev": {"path", "n_queries", "sha256", "n_groups", "within_group_pairs"}, "num_layers": L,
     "rows": ["embed", "0", ..., "final"], "options": {... WeightsOptions ...},
     "weights":        {"embed": [K], "layers": [[K] x L], "final": [K]},
     "distances":      (same shape), "raw_distances": (same shape),
     "base_distances": {"embed": x, "layers": [L], "final": x},
     "all_distances":  {KIND: {"models": (weights' shape), "base": (base_distances' shape)}, ...},
     "mean_similarity": {"reference": x, "models": (weights' shape), "base": (base_distances' shape)},
     "seconds": ...}

``distances``/``raw_distances``/``base_distances`` are those of ``options.distance`` (the weights
come from them); ``all_distances`` holds every distance kind that could be computed on the same
matrices (``within_group`` only when the dev queries' groups are known), so two kinds can be
compared without running a model again (:func:`consistbench.reference_method.weights_chart.plot_distances`).
Version 1 files (no ``all_distances``, ``options.distance`` one of ``mean_abs``, ``frobenius``,
``max_abs``) are still read: that is ``distance: paper`` with that ``norm``.

This module sits below both the computation that writes the file
(:mod:`consistbench.reference_method.consistency_weights`) and the merge method that reads it
(:mod:`consistbench.reference_method.merge.consistency`), so that neither imports the other.
A file is checked whole when it is read or written (:func:`check_weights_doc`): a merge fails
on a bad file before it writes anything.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from consistbench.benchmark.errors import ConsistbenchError, validation_message
from consistbench.benchmark.fileio import write_json

FORMAT = "consistbench-consistency-weights"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)  # version 1: before the distance kinds (its `distance` was today's `norm`)
DISTANCE_KINDS = ("paper", "centered", "cka", "within_group")
NORMS = ("mean_abs", "frobenius", "max_abs")


class WeightsOptions(BaseModel):
    """Every option of the weights computation, with its default; recorded in the file.

    - ``distance``, ``norm``: what is compared and how (:mod:`consistbench.reference_method.consistency_weights`).
    - ``compare``: ``raw``: d_k^l; ``delta``: d_k^l minus the base's d_base^l at that row. Under
      softmax both give *identical* weights (softmax ignores one number subtracted per row);
      ``raw`` is the paper's formula and also valid for ``inverse_power``, which needs positive
      distances (``delta`` with it is rejected). The base's distance is recorded either way.
    - ``normalisation``: ``softmax``: ``w = total * softmax(-d / tau)`` with ``tau = temperature *
      d_base^l`` when ``temperature_scale`` is ``base``: distances differ 2-3x between rows and
      model sizes while fine-tunes differ by a few per cent, so the temperature is in units of the
      base's own distance at that row (with 0.05, a model 5 % of it closer gets e times the
      weight); ``absolute``: ``tau = temperature``. ``inverse_power``: ``w = total * d^-p / sum_j d_j^-p``.
    - ``total``: the per-row sum of the weights; 1 makes the merge a weighted average of the
      fine-tunes, K adds every task vector at an average weight of 1 (task-arithmetic scale).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    pooling: Literal["mean", "last"] = "mean"
    distance: Literal["paper", "centered", "cka", "within_group"] = Field(
        "paper", description="what is compared: paper (S_k - S_r), centered (both double-centred and scaled to "
                             "unit RMS), cka (1 - linear CKA), within_group (S_k - S_r on same-group pairs only)")
    norm: Literal["mean_abs", "frobenius", "max_abs"] = Field(
        "mean_abs", description="how paper, centered and within_group summarise the entrywise differences")
    compare: Literal["raw", "delta"] = "raw"
    normalisation: Literal["softmax", "inverse_power"] = "softmax"
    temperature: float = Field(0.05, gt=0)
    temperature_scale: Literal["base", "absolute"] = "base"
    power: float = Field(2.0, gt=0)
    total: float = Field(1.0, gt=0)
    batch_size: int = Field(8, gt=0)
    max_queries: int | None = Field(256, gt=1, description="dev queries used (whole groups, file order); None: all")
    chat_template: bool = Field(True, description="wrap the prompt in the tokenizer's chat template if it has one")
    encoder: str | None = Field(None, description="sentence encoder for S_r (default: embedded all-MiniLM-L6-v2)")

    @model_validator(mode="before")
    @classmethod
    def _legacy_distance(cls, data):
        """A version-1 ``distance`` (``mean_abs``, ``frobenius``, ``max_abs``) was the norm of S_k - S_r:
        it reads as ``distance: paper`` with that ``norm``."""
        if isinstance(data, dict) and data.get("distance") in NORMS:
            if data.get("norm", data["distance"]) != data["distance"]:
                raise ValueError(f"distance {data['distance']!r} (a version-1 norm) contradicts norm {data['norm']!r}")
            data = {**data, "distance": "paper", "norm": data["distance"]}
        return data


def options_from(**kwargs) -> WeightsOptions:
    """Validated options (ConsistbenchError naming the bad one); pass only the options you set."""
    try:
        return WeightsOptions(**kwargs)
    except ValidationError as exc:
        raise ConsistbenchError(validation_message(exc, "weights options")) from None


# ---------------------------------------------------------------------------------------------
# rows

def row_keys(num_layers: int) -> list[str]:
    """Row names in network order: embed, 0 .. L-1, final."""
    return ["embed", *[str(i) for i in range(num_layers)], "final"]


def row_label(row: str) -> str:
    """A row name for messages: ``embeddings``, ``layer N`` or ``final norm``."""
    return "embeddings" if row == "embed" else "final norm" if row == "final" else f"layer {row}"


def rows_of(part: dict) -> list:
    """The values of one part of a document (``weights``, ``distances``, ...) as a list in network
    order: the ``embed`` value, one per layer, the ``final`` value."""
    return [part["embed"], *part["layers"], part["final"]]


def weight_spread(doc: dict) -> dict[str, float]:
    """Per row (``embed``, ``0`` .. ``L-1``, ``final``): the largest minus the smallest weight over the
    models. Near 0 everywhere means a near-uniform merge (plain averaging); the distances show why."""
    w = doc["weights"]
    return {r: float(max(v) - min(v)) for r, v in zip(row_keys(len(w["layers"])), rows_of(w))}


def spread_summary(doc: dict) -> str:
    """One line on how far the weights are from uniform: the largest and the median per-row spread."""
    spread = weight_spread(doc)
    row, top = max(spread.items(), key=lambda kv: kv[1])
    return (f"weights spread (max - min over models, per row): largest {top:.4f} at {row_label(row)}, "
            f"median {statistics.median(spread.values()):.4f}")


# ---------------------------------------------------------------------------------------------
# the document

class _Entry(BaseModel):
    model_config = ConfigDict(extra="allow")

    path: str
    label: str


class _Dev(BaseModel):
    model_config = ConfigDict(extra="allow")

    path: str | None
    n_queries: int = Field(ge=0)
    sha256: str


class _BaseDistances(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=True)

    embed: float
    layers: list[float]
    final: float


class WeightsDocument(BaseModel):
    """Everything a weights file must hold besides the weights themselves (checked by
    :func:`check_weights_doc`), so a merge fails on a bad file before it writes anything, not at
    its model-card step."""

    model_config = ConfigDict(extra="allow")

    version: int
    base: _Entry
    models: list[_Entry] = Field(min_length=1)
    dev: _Dev
    num_layers: int = Field(ge=0)
    options: WeightsOptions
    weights: dict
    base_distances: _BaseDistances | None = None


def check_weights_doc(doc: dict, where: str = "weights") -> dict:
    """Validate a whole weights document: its sections (models, base, dev set, options, base
    distances), the shape of the weights and that every weight is finite (ConsistbenchError)."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConsistbenchError(f"{where}: not a consistbench consistency-weights file")
    try:
        parsed = WeightsDocument.model_validate(doc)
    except ValidationError as exc:
        raise ConsistbenchError(validation_message(exc, f"{where}: malformed weights file")) from None
    if parsed.version not in READ_VERSIONS:
        raise ConsistbenchError(f"{where}: weights file format version {parsed.version}, this consistbench reads "
                                f"versions {', '.join(map(str, READ_VERSIONS))}")
    try:
        k = len(doc["models"])
        n = int(doc["num_layers"])
        w = doc["weights"]
        rows = [("embeddings", w["embed"])] + [(f"layer {i}", r) for i, r in enumerate(w["layers"])]
        rows.append(("final norm", w["final"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConsistbenchError(f"{where}: malformed weights file ({exc})") from None
    if len(w["layers"]) != n:
        raise ConsistbenchError(f"{where}: {len(w['layers'])} layer rows but num_layers is {n}")
    if parsed.base_distances is not None and len(parsed.base_distances.layers) != n:
        raise ConsistbenchError(f"{where}: base_distances has {len(parsed.base_distances.layers)} layer values "
                                f"but num_layers is {n}")
    for row, values in rows:
        if not isinstance(values, list) or len(values) != k:
            raise ConsistbenchError(f"{where}: {row} has {len(values) if isinstance(values, list) else '?'} "
                                    f"weights for {k} models")
        for j, v in enumerate(values):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ConsistbenchError(f"{where}: non-finite weight {v!r} for model {doc['models'][j].get('label')} "
                                        f"at {row}")
    return doc


def load_weights(path: str | Path) -> dict:
    """Read and check a weights file (ConsistbenchError naming the file and the problem)."""
    path = Path(path)
    if not path.is_file():
        raise ConsistbenchError(f"{path}: no such weights file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))  # NaN / Infinity parse; rejected below
    except json.JSONDecodeError as exc:
        raise ConsistbenchError(f"{path}: invalid JSON ({exc.msg})") from None
    return check_weights_doc(doc, str(path))


def save_weights(doc: dict, path: str | Path) -> Path:
    """Check ``doc`` and write it as JSON (atomically)."""
    check_weights_doc(doc, str(path))
    write_json(path, doc)
    return Path(path)
