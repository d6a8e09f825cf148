"""The consistency-aware layer-wise merge (the reference method's own merge).

    theta^l = theta_base^l + sum_k w_k^l * delta_k^l,     delta_k^l = theta_k^l - theta_base^l

with ``w_k^l`` from a weights file written by ``consistbench ref weights``
(:mod:`consistbench.reference_method.consistency_weights`; the file format:
:mod:`consistbench.reference_method.weights_file`). Which weights a tensor gets:

- a tensor of decoder block l (``model.layers.<l>.*`` for Llama, ``transformer.h.<l>.*`` for
  GPT-2 / Falcon / BLOOM, ...: :mod:`consistbench.reference_method.merge.layout` reads the
  block names from the model's ``model_type``): the row of layer l;
- the input embeddings (token and position embeddings, an embedding norm; a tied ``lm_head``
  *is* the token embedding tensor): the ``embed`` row, measured on the embeddings' output;
- the final norm and an untied LM head: the ``final`` row, measured on the final norm's output
  (what the LM head reads).

A tensor that is none of these, or an architecture missing from the layout table, is refused
before anything is written.

A tensor that *no* fine-tuned model changed (every delta exactly 0, e.g. everything LoRA did not
touch: embeddings, norms, the LM head) is the base's tensor, bit for bit, and gets no weights
(all 0): :func:`unchanged_tensors` finds them before the merge, the card counts them per row. A
tensor that some models changed gets its row's weights for every model as usual (the unchanged
ones contribute a zero delta).

``non_layer: mean`` gives the embeddings and final tensors each model's mean weight over the
layers instead; ``non_layer: base`` keeps the base's values for them (weight 0). Both only matter
where a fine-tune changed those tensors (a full fine-tune, or adapters on them): with LoRA on the
linear layers they are unchanged and stay the base's whatever ``non_layer`` says.

``sparsify``: ``none`` (default); ``dare``: each delta keeps an entry with probability
``density`` and divides kept entries by it (peft's ``prune(..., "random", rescale=True)``);
``ties``: each delta keeps its ``density`` largest magnitudes, then entries whose sign
disagrees with the elected sign (peft's ``calculate_majority_sign_mask`` over the trimmed
deltas) are zeroed. The weighted sum is then taken as above (no TIES disjoint mean: the
consistency weights already say how much of each model to take).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from consistbench.benchmark.errors import ConsistbenchError
import consistbench.reference_method.merge.ops as ops
from consistbench.reference_method.merge.io import FLOAT_DTYPES
from consistbench.reference_method.merge.methods import mergekit_doc
from consistbench.reference_method.merge.registry import MethodParams, TensorInputs, merge_method
from consistbench.reference_method.weights_file import load_weights


class ConsistencyParams(MethodParams):
    weights_file: str = Field(description="JSON written by `consistbench ref weights` (relative to the config)")
    sparsify: Literal["none", "dare", "ties"] = "none"
    density: float = Field(0.5, gt=0, le=1, description="kept share of each delta when sparsify is dare or ties")
    seed: int = Field(0, description="seed of the DARE drop masks (per block: ops.tensor_seed(seed, name, offset))")
    majority_sign_method: Literal["total", "frequency"] = "total"
    non_layer: Literal["measured", "mean", "base"] = Field(
        "measured", description="weights of embeddings / final norm / lm_head: their measured rows, the "
                                "mean over layers, or base (keep the base's values)")


def group_weights(config, params: ConsistencyParams, num_layers: int | None = None) -> dict:
    """``{"embed": [K], "layers": [[K] per layer], "final": [K]}`` in the config's model order."""
    doc = load_weights(params.weights_file)
    where = params.weights_file
    doc_models = doc["models"]
    if len(doc_models) != len(config.models):
        raise ConsistbenchError(f"{where}: weights for {len(doc_models)} models, the config merges {len(config.models)} "
                                "(the weights are normalised over one set of models)")
    order = []
    for m in config.models:
        path = str(Path(m.path).resolve())
        hits = [i for i, d in enumerate(doc_models) if d.get("path") == path]
        if not hits:
            hits = [i for i, d in enumerate(doc_models) if Path(d.get("path", "")).name == Path(path).name]
        if len(hits) != 1:
            raise ConsistbenchError(f"{where}: no weights for model {m.label} ({path}); the file has "
                                    f"{[d.get('label') for d in doc_models]}")
        order.append(hits[0])
    if len(set(order)) != len(order):
        raise ConsistbenchError(f"{where}: two config models map to the same weights column")
    if num_layers is not None and doc["num_layers"] != num_layers:
        raise ConsistbenchError(f"{where}: weights for {doc['num_layers']} layers, the base has {num_layers}")
    w = doc["weights"]

    def pick(row):
        return [float(row[i]) for i in order]

    layers = [pick(r) for r in w["layers"]]
    embed, final = pick(w["embed"]), pick(w["final"])
    if params.non_layer == "mean":
        mean = [sum(col) / len(layers) for col in zip(*layers)] if layers else embed
        embed = final = mean
    elif params.non_layer == "base":
        embed = final = [0.0] * len(order)
    return {"embed": embed, "layers": layers, "final": final, "doc": doc}


PROBE = 4096  # elements compared first: a changed tensor almost always differs in them


def _same(a, b) -> bool:
    import torch

    if a.dtype != b.dtype:  # compared as the merge computes deltas (float32, float64 for F64 inputs)
        dt = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
        a, b = a.to(dt), b.to(dt)
    return bool(torch.equal(a, b))


def unchanged_tensors(plan) -> frozenset[str]:
    """The float tensors every input model holds exactly as the base does (all deltas 0): read once
    from the memory-mapped files (the first ``PROBE`` elements, then the rest only if those agree)
    and kept on the plan (``plan.unchanged``) for the card."""
    if plan.unchanged is None:
        out = set()
        for name in plan.names:
            if plan.base.tensors[name].dtype not in FLOAT_DTYPES:
                continue
            b = plan.base.get(name).reshape(-1)
            if all(_same(m.get(name).reshape(-1)[:PROBE], b[:PROBE]) and _same(m.get(name).reshape(-1), b)
                   for m in plan.models):
                out.add(name)
        plan.unchanged = frozenset(out)
    return plan.unchanged


def unchanged_summary(plan) -> list[tuple[str, int, int]]:
    """Per row (``embed``, ``0`` .. ``L-1``, ``final``): (row, unchanged float tensors, float tensors)."""
    unchanged = unchanged_tensors(plan)
    counts: dict[str, list[int]] = {}
    for name in plan.names:
        if plan.base.tensors[name].dtype in FLOAT_DTYPES:
            c = counts.setdefault(str(plan.group(name)), [0, 0])
            c[0] += name in unchanged
            c[1] += 1
    order = ["embed", *map(str, range(plan.num_layers)), "final"]
    return [(r, *counts[r]) for r in order if r in counts]


def _weights(config, params: ConsistencyParams, plan):
    gw = group_weights(config, params, plan.num_layers)
    unchanged = unchanged_tensors(plan)
    none = [0.0] * len(config.models)

    def weights_for(name: str):
        if name in unchanged:
            return none
        g = plan.group(name)  # every tensor is assigned (build_plan with per_layer=True)
        return gw["layers"][g] if isinstance(g, int) else gw[g]

    return weights_for


def _mk_consistency(config, p: ConsistencyParams, plan):
    gw = group_weights(config, p, plan.num_layers)
    outside = [n for n in plan.names if not isinstance(plan.group(n), int)]
    per_model = []
    for k, _m in enumerate(config.models):
        # mergekit evaluates the first matching filter: exact names outside the layers first, then
        # the per-layer list (a "gradient" with one value per layer, exact at every layer index).
        conds = [{"filter": n, "value": gw[plan.group(n)][k]} for n in outside]
        conds.append({"value": [row[k] for row in gw["layers"]]})
        params = {"weight": conds}
        if p.sparsify != "none":
            params["density"] = p.density
        per_model.append(params)
    if p.sparsify == "none":
        return mergekit_doc(config, plan, "task_arithmetic", per_model)
    if p.sparsify == "dare":
        return mergekit_doc(config, plan, "dare_linear", per_model, {"normalize": False, "rescale": True})
    return mergekit_doc(config, plan, "ties", per_model, {"normalize": False})


@merge_method("consistency", params=ConsistencyParams, weights=_weights, mergekit=_mk_consistency,
              path_params=("weights_file",),
              elementwise=lambda p: p.sparsify != "ties" or p.density >= 1,
              random=lambda p: p.sparsify == "dare" and p.density < 1)
def consistency(t: TensorInputs, p: ConsistencyParams):
    """Layer-wise consistency-aware task arithmetic: theta_base^l + sum_k w_k^l delta_k^l."""
    import torch

    if not bool(t.weights.any()):  # no weights (a tensor no model changed, or non_layer: base): the base's values
        return t.base.clone()
    if p.sparsify == "none":
        return ops.weighted_delta_sum(t.base, t.models, t.weights).add_(t.base)
    mu = ops.merge_utils()
    deltas = t.deltas
    if p.sparsify == "dare":
        deltas = [ops.prune(d, p.density, "random", rescale=True) for d in deltas]
    elif p.sparsify == "ties":
        stacked = torch.stack([ops.prune(d, p.density, "magnitude") for d in deltas], dim=0)
        deltas = list(stacked * mu.calculate_majority_sign_mask(stacked, method=p.majority_sign_method))
    return t.base + mu.task_arithmetic(deltas, t.weights)
