"""Where each tensor of a decoder-only causal LM sits: a decoder block, the input embeddings or the
output side (final norm, LM head), read from the model's config, never guessed from the names.

A per-layer merge gives every tensor of decoder block l the weights of row l, the embeddings the
``embed`` row and the final norm / LM head the ``final`` row; the consistency weights are measured
at the outputs of the same modules. Which names those are differs between the architectures
transformers ships (``model.layers.N`` for Llama, ``transformer.h.N`` for GPT-2, Falcon and BLOOM,
``gpt_neox.layers.N``, ``model.decoder.layers.N`` for OPT, ...). A name-pattern guess gets some of
them wrong without a sound (a Falcon block is not ``layers.N``), so the layout comes from the
config's ``model_type`` through :data:`LAYOUTS`, written out here (transformers has no public
table of these names; mergekit's architecture files cover a different set and would add a
dependency on its internals). Every tensor a model file holds must be assigned: a block tensor
of layer ``0 <= l < num_hidden_layers``, or one of the layout's embedding or output-side modules;
anything else is refused with an error naming the tensor.

The layer count is the config's own field for it (``num_hidden_layers``; ``n_layer`` for GPT-2,
GPT-J, CodeGen and BLOOM, ``num_layers`` for GPT-Neo and XGLM, ``n_layers`` for MPT: the fields
transformers maps to ``num_hidden_layers``), read from ``config.json`` without importing transformers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from consistbench.benchmark.errors import ConsistbenchError

EMBED, FINAL = "embed", "final"


@dataclass(frozen=True)
class Layout:
    """Module paths (as the weights are saved) of one family of architectures."""

    model_types: tuple[str, ...]
    blocks: str                 # the decoder blocks: tensors "<blocks>.<l>.<...>"
    embed: tuple[str, ...]      # input side: token (and position) embeddings, an embedding norm/projection
    final_norm: str | None      # the norm whose output the LM head reads (None: the model has none)
    head: tuple[str, ...]       # LM head(s); absent from the file when tied to the embeddings
    layers_key: str = "num_hidden_layers"  # the config.json field holding the number of blocks

    @property
    def final(self) -> tuple[str, ...]:
        return ((self.final_norm,) if self.final_norm else ()) + self.head

    def group(self, name: str, num_layers: int) -> int | str | None:
        """Layer index, ``"embed"``, ``"final"``, or None when the name belongs to none of them."""
        prefix = self.blocks + "."
        if name.startswith(prefix):
            index, _, rest = name[len(prefix):].partition(".")
            if index.isdigit() and rest and int(index) < num_layers:
                return int(index)
            return None
        for group, modules in ((EMBED, self.embed), (FINAL, self.final)):
            if any(name.startswith(m + ".") for m in modules):
                return group
        return None


_LLAMA_LIKE = ("llama", "mistral", "mixtral", "ministral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma",
               "gemma2", "gemma3_text", "vaultgemma", "cohere", "cohere2", "olmo", "olmo2", "olmo3", "olmoe", "granite",
               "granitemoe", "granitemoeshared", "helium", "stablelm", "starcoder2", "deepseek_v2", "deepseek_v3",
               "phi3", "phimoe", "nemotron", "glm", "glm4", "smollm3", "exaone4", "gpt_oss", "ernie4_5",
               "ernie4_5_moe", "hunyuan_v1_dense", "hunyuan_v1_moe", "jetmoe", "diffllama", "seed_oss", "arcee",
               "apertus", "bitnet", "minicpm3")

LAYOUTS: tuple[Layout, ...] = (
    Layout(_LLAMA_LIKE, "model.layers", ("model.embed_tokens",), "model.norm", ("lm_head",)),
    Layout(("phi", "persimmon", "jamba", "bamba"), "model.layers", ("model.embed_tokens",), "model.final_layernorm",
           ("lm_head",)),
    Layout(("recurrent_gemma",), "model.layers", ("model.embed_tokens",), "model.final_norm", ("lm_head",)),
    Layout(("xglm",), "model.layers", ("model.embed_tokens",), "model.layer_norm", ("lm_head",), "num_layers"),
    Layout(("gpt2", "gpt_bigcode"), "transformer.h", ("transformer.wte", "transformer.wpe"), "transformer.ln_f",
           ("lm_head",), "n_layer"),
    Layout(("gpt_neo",), "transformer.h", ("transformer.wte", "transformer.wpe"), "transformer.ln_f", ("lm_head",),
           "num_layers"),
    Layout(("gptj", "codegen"), "transformer.h", ("transformer.wte",), "transformer.ln_f", ("lm_head",), "n_layer"),
    Layout(("falcon",), "transformer.h", ("transformer.word_embeddings",), "transformer.ln_f", ("lm_head",)),
    Layout(("bloom",), "transformer.h", ("transformer.word_embeddings", "transformer.word_embeddings_layernorm"),
           "transformer.ln_f", ("lm_head",), "n_layer"),
    Layout(("mpt",), "transformer.blocks", ("transformer.wte",), "transformer.norm_f", ("lm_head",), "n_layers"),
    # GPT-NeoX checkpoints name the LM head embed_out (transformers 5 maps it to lm_head on load)
    Layout(("gpt_neox",), "gpt_neox.layers", ("gpt_neox.embed_in",), "gpt_neox.final_layer_norm",
           ("embed_out", "lm_head")),
    # OPT: project_in / project_out exist when word_embed_proj_dim differs from hidden_size (opt-350m)
    Layout(("opt",), "model.decoder.layers",
           ("model.decoder.embed_tokens", "model.decoder.embed_positions", "model.decoder.project_in"),
           "model.decoder.final_layer_norm", ("model.decoder.project_out", "lm_head")),
    Layout(("biogpt",), "biogpt.layers", ("biogpt.embed_tokens", "biogpt.embed_positions"), "biogpt.layer_norm",
           ("output_projection",)),
    Layout(("mamba", "mamba2", "falcon_mamba"), "backbone.layers", ("backbone.embeddings",), "backbone.norm_f",
           ("lm_head",)),
)

_BY_TYPE = {t: layout for layout in LAYOUTS for t in layout.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_TYPE)


def layout_for(config: dict, where: str = "model") -> Layout:
    """The layout of a config (``config.json`` as a dict); ConsistbenchError for an unknown architecture."""
    model_type = config.get("model_type")
    layout = _BY_TYPE.get(model_type)
    if layout is None:
        archs = ", ".join(config.get("architectures") or []) or "none recorded"
        raise ConsistbenchError(f"{where}: model_type {model_type!r} ({archs}) is not in consistbench's table of "
                                "decoder-block names, so its tensors cannot be assigned to layers; supported: "
                                + ", ".join(supported_model_types()))
    return layout


def num_layers(config: dict, layout: Layout, where: str = "model") -> int:
    """The number of decoder blocks, from the layout's field of ``config.json``."""
    n = config.get(layout.layers_key)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConsistbenchError(f"{where}: config.json has no layer count ({layout.layers_key} is {n!r})")
    return n


def assign(names: Iterable[str], layout: Layout, n_layers: int, where: str = "model") -> dict[str, int | str]:
    """Group of every tensor name; ConsistbenchError naming the first tensor that fits no group."""
    out: dict[str, int | str] = {}
    for name in names:
        g = layout.group(name, n_layers)
        if g is None:
            raise ConsistbenchError(
                f"{where}: tensor {name} is neither in a decoder block ({layout.blocks}.0 .. {layout.blocks}."
                f"{n_layers - 1}) nor one of the embeddings ({', '.join(layout.embed)}) or output modules "
                f"({', '.join(layout.final)}) of its architecture; refusing to guess its layer")
        out[name] = g
    return out


def model_modules(model) -> tuple:
    """(embeddings, decoder blocks, final norm) modules of a loaded causal LM, from its layout."""
    import torch

    config = model.config.to_dict()
    layout = layout_for(config, type(model).__name__)
    try:
        blocks = model.get_submodule(layout.blocks)
        norm = model.get_submodule(layout.final_norm) if layout.final_norm else None
    except AttributeError as exc:
        raise ConsistbenchError(f"{type(model).__name__}: no module {exc} where its layout says") from None
    n = num_layers(config, layout, type(model).__name__)
    if not isinstance(blocks, torch.nn.ModuleList) or len(blocks) != n:
        raise ConsistbenchError(f"{type(model).__name__}: {layout.blocks} is not a list of {n} decoder blocks")
    if norm is None:
        raise ConsistbenchError(f"{type(model).__name__}: the model has no final norm ({layout.final_norm}) to "
                                "measure the final row at")
    return model.get_input_embeddings(), blocks, norm
