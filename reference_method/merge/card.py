"""The merged model's card (README.md): inputs, method, weights and every option."""

from __future__ import annotations

from pathlib import Path

from consistbench.benchmark import __version__
from consistbench.reference_method.merge.config import MergeConfig
from consistbench.reference_method.merge.consistency import group_weights, unchanged_summary
from consistbench.reference_method.weights_file import WeightsOptions

NON_LAYER_TEXT = {
    "measured": "embeddings: the `embed` row (measured on the embeddings' output); final norm and lm_head: "
                "the `final` row (measured on the final norm's output)",
    "mean": "embeddings, final norm and lm_head: each model's mean weight over the layers",
    "base": "embeddings, final norm and lm_head: kept from the base (weight 0)",
}
NON_LAYER_NOTE = ("(only where a fine-tune changed those tensors: left untouched by every adapter, they are the "
                  "base's whatever this says)")


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def render_card(config: MergeConfig, params, plan, summary: dict) -> str:
    spec = config.method_spec()
    lines = ["---", "library_name: transformers", "tags:", "- merge", "- consistbench", f"- {spec.name}"]
    if config.base:
        lines.append(f"base_model: {Path(config.base).name}")
    lines += ["---", "", f"# {Path(summary['out_dir']).name}", "",
              f"A `{spec.name}` merge made by consistbench {__version__}: {spec.summary}", "",
              "Reproduce: `consistbench merge merge_config.yaml OUT_DIR` (the configuration is in this folder).", "",
              "## Inputs", "", "| role | model | path | weight | weights size |", "|---|---|---|---:|---:|"]
    if plan.base is not None or config.base:
        lines.append(f"| base | {Path(config.base).name} | `{config.base}` | - | {plan.reference.nbytes / 1e6:.1f} MB |")
    for m, lazy in zip(config.models, plan.models):
        weight = "per layer (below)" if spec.name == "consistency" else f"{m.weight:g}"
        lines.append(f"| model | {m.label} | `{m.path}` | {weight} | {lazy.nbytes / 1e6:.1f} MB |")
    lines += ["", "## Method and options", "", f"- method: `{spec.name}`"]
    for key, value in params.model_dump().items():
        lines.append(f"- {key}: `{value}`")
    lines += [f"- output dtype: `{config.dtype}`", "- computed in: float32",
              f"- tensors: {summary['tensors']}, output {summary['output_bytes'] / 1e6:.1f} MB in "
              f"{len(summary['files'])} file(s), {summary['seconds']:.1f} s"]
    if spec.name == "consistency":
        lines += _consistency_section(config, params, plan)
    else:
        lines += ["- embeddings, final norm and lm_head: merged like every other tensor, with the same weights"]
    lines += ["", "## Configuration", "", "```yaml", config.to_yaml().rstrip(), "```", ""]
    return "\n".join(lines)


def _consistency_section(config, params, plan) -> list[str]:
    gw = group_weights(config, params, plan.num_layers)
    doc = gw["doc"]
    o = WeightsOptions.model_validate(doc["options"]).model_dump()  # a version-1 file's distance read as today's
    out = [f"- non-layer tensors ({params.non_layer}): {NON_LAYER_TEXT[params.non_layer]} {NON_LAYER_NOTE}",
           "", "### Consistency weights", "",
           "`theta^l = theta_base^l + sum_k w_k^l * delta_k^l`, with `w_k^l` from `consistbench ref weights` "
           "(copied here as `consistency_weights.json`).", "",
           f"- dev set: `{doc['dev'].get('path')}`, {doc['dev'].get('n_queries')} queries, "
           f"sha256 `{str(doc['dev'].get('sha256'))[:16]}`"]
    for key in ("pooling", "distance", "norm", "compare", "normalisation", "temperature", "temperature_scale", "power",
                "total", "chat_template", "encoder", "max_queries", "batch_size"):
        out.append(f"- {key}: `{o.get(key)}`")
    changed = {r: (n - u, n) for r, u, n in unchanged_summary(plan)}
    kept = sum(n - c for c, n in changed.values())
    out += ["", f"Tensors no fine-tune changed (every delta exactly 0, e.g. what LoRA did not touch): {kept} of "
                f"{sum(n for _c, n in changed.values())} float tensors. They are the base's, bit for bit, and get no "
                "weights; a row none of whose tensors changed has weights that are not used (`changed` 0 below)."]
    labels = [m.label for m in config.models]
    out += ["", "| row | " + " | ".join(labels) + " | base distance | changed |",
            "|---|" + "---:|" * (len(labels) + 2)]
    bd = doc.get("base_distances", {})
    rows = [("embed", "embed", gw["embed"], bd.get("embed"))]
    rows += [(f"layer {i}", str(i), w, (bd.get("layers") or [None] * plan.num_layers)[i])
             for i, w in enumerate(gw["layers"])]
    rows.append(("final", "final", gw["final"], bd.get("final")))
    for name, key, ws, d in rows:
        c, n = changed.get(key, (0, 0))
        out.append(f"| {name} | " + " | ".join(_fmt(x) for x in ws) + f" | {'' if d is None else _fmt(d)} | {c}/{n} |")
    return out


def write_card(folder: Path, config: MergeConfig, params, plan, summary: dict) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(render_card(config, params, plan, summary), encoding="utf-8")
    return path
