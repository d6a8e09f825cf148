"""The memory plan of a reproduction: bytes per GPU for a model, from its ``config.json`` alone.

Nothing is loaded and nothing needs a GPU: the parameter count is read off the architecture
(embeddings, attention and MLP projections, norms, the LM head unless tied, a vision tower when
the config has one), and each part of a training step is sized from the preset's settings and the
launcher's layout (:meth:`.launch.Launcher.settings`). An *estimate*, with its assumptions said
here and printed beside it:

- weights in the model dtype (``model_dtype``; bf16 = 2 bytes), sharded over the processes under
  DeepSpeed ZeRO-3 or FSDP (plus two decoder layers gathered at a time), whole in each under DDP;
- LoRA: the adapters in fp32 with their gradients and AdamW's two states (16 bytes per adapter
  parameter); full fine-tuning under DDP: gradients and AdamW states in the weights' dtype
  (pure bf16: 8 bytes per parameter with the weights, fp32: 16); under ZeRO-3/FSDP: fp32 master
  weights, gradients and AdamW states sharded (16 bytes per parameter over the processes; 18 with
  DeepSpeed's bf16 working copy);
- activations of a micro-batch at ``max_length`` (every sequence padded to the longest, the worst
  case): per token and decoder layer ``7 h + 3 kv + 4 i`` values in the compute dtype (the norms'
  inputs and outputs, q/k/v, the attention output, the MLP's gate, up, activation and product;
  attention through SDPA/flash kernels, so no ``T x T`` score matrix); with gradient checkpointing,
  one ``h``-vector per token and layer plus one layer recomputed;
- logits: ``positions x vocab`` in the compute dtype plus an fp32 copy and its gradient; with
  ``answer_logits_only`` only the answer positions, :data:`ANSWER_SHARE` of them (measured on the
  benchmark's prompts: about one position in ten is an answer token);
- :data:`OVERHEAD_GIB` for the CUDA context and allocator, and 10 % of the activations for
  fragmentation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError

GIB = 1024 ** 3
ANSWER_SHARE = 0.1
OVERHEAD_GIB = 2.0
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}


@dataclass(frozen=True)
class Shape:
    """What the plan needs of an architecture (the text decoder's, for a multimodal model)."""

    architecture: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    params: int  # every parameter, a vision tower included
    decoder_params: int  # one decoder layer's

    def linears(self) -> list[tuple[int, int]]:
        """(in, out) of every linear of one decoder layer: q, k, v, o, gate, up, down."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]


def read_shape(model_dir: str | Path) -> Shape:
    """The shape of the model in ``model_dir`` from its ``config.json`` (no weights needed)."""
    path = Path(model_dir) / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConsistbenchError(f"{path}: cannot read the model's config ({exc})") from None
    return shape_from_config(cfg, str(path))


def shape_from_config(cfg: dict, where: str = "config.json") -> Shape:
    text = cfg.get("text_config") or cfg
    try:
        h, layers, i = int(text["hidden_size"]), int(text["num_hidden_layers"]), int(text["intermediate_size"])
        heads = int(text["num_attention_heads"])
        kv = int(text.get("num_key_value_heads") or heads)
        hd = int(text.get("head_dim") or h // heads)
        vocab = int(text.get("vocab_size") or cfg["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConsistbenchError(f"{where}: not a decoder config this plan can size (missing or bad {exc})") from None
    tied = bool(cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", True)))
    norms = 4 * h + 2 * hd if "gemma3" in str(text.get("model_type", cfg.get("model_type", ""))) else 2 * h
    shape = Shape(architecture=(cfg.get("architectures") or ["?"])[0], layers=layers, hidden=h, intermediate=i,
                  heads=heads, kv_heads=kv, head_dim=hd, vocab=vocab, tied=tied, params=0, decoder_params=0)
    per_layer = sum(a * b for a, b in shape.linears()) + norms
    params = vocab * h * (1 if tied else 2) + layers * per_layer + h + _vision_params(cfg.get("vision_config"), h)
    return Shape(**{**shape.__dict__, "params": params, "decoder_params": per_layer})


def _vision_params(vision: dict | None, text_hidden: int) -> int:
    """A ViT tower's parameters (SigLIP-style: attention 4 h^2, MLP 2 h i, patch and position embeddings)
    and its projection into the text model."""
    if not vision:
        return 0
    h, i, n = int(vision["hidden_size"]), int(vision["intermediate_size"]), int(vision["num_hidden_layers"])
    patch, image = int(vision.get("patch_size", 14)), int(vision.get("image_size", 224))
    embed = patch * patch * int(vision.get("num_channels", 3)) * h + (image // patch) ** 2 * h
    return n * (4 * h * h + 2 * h * i + 4 * h) + embed + h * text_hidden


def lora_params(shape: Shape, r: int, lora_layers: int | None = None) -> int:
    """Adapter parameters of LoRA rank ``r`` on every linear of each adapted layer (``all-linear``)."""
    per_layer = sum(r * (a + b) for a, b in shape.linears())
    return per_layer * (lora_layers or shape.layers)


def training_memory(shape: Shape, train: dict, layout: dict, *, sequences_per_item: int = 3) -> dict:
    """Bytes per GPU of one training step, by part (GiB), under ``layout`` (:meth:`.launch.Launcher.settings`);
    a CPU training (``use_cpu``) has no CUDA context: the figure is the process's RAM."""
    w_bytes = DTYPE_BYTES.get(str(train.get("model_dtype", "float32")), 4)
    c_bytes = 2 if (train.get("bf16") or train.get("fp16") or w_bytes == 2) else 4
    sharded = layout["sharding"] in ("deepspeed", "fsdp")
    n = layout["num_processes"] if sharded else 1
    parts: dict[str, float] = {}
    gathered = 2 * shape.decoder_params * c_bytes if sharded else 0
    if train.get("use_lora"):
        adapters = lora_params(shape, int(train.get("lora_r", 16)), train.get("lora_layers"))
        parts["weights"] = shape.params * w_bytes / n + gathered
        parts["trainable (LoRA adapters, fp32)"] = adapters * 4 / n
        parts["gradients"] = adapters * 4 / n
        parts["optimizer (AdamW, 2 states)"] = adapters * 8 / n
        trainable = adapters
    elif sharded:  # fp32 master weights (+ DeepSpeed's bf16 working copy), sharded
        parts["weights"] = shape.params * (4 + (2 if layout["sharding"] == "deepspeed" else 0)) / n + gathered
        parts["gradients"] = shape.params * 4 / n
        parts["optimizer (AdamW, 2 states)"] = shape.params * 8 / n
        trainable = shape.params
    else:
        parts["weights"] = shape.params * w_bytes
        parts["gradients"] = shape.params * w_bytes
        parts["optimizer (AdamW, 2 states)"] = shape.params * 2 * w_bytes
        trainable = shape.params
    tokens = int(train.get("per_device_train_batch_size", 8)) * sequences_per_item * int(train.get("max_length", 1024))
    kv = shape.kv_heads * shape.head_dim
    per_layer = (7 * shape.hidden + 3 * kv + 4 * shape.intermediate) * c_bytes
    full = tokens * per_layer * shape.layers
    ckpt = tokens * (shape.hidden * c_bytes * shape.layers + per_layer)
    checkpointing = bool(train.get("gradient_checkpointing"))
    logit_positions = tokens * (ANSWER_SHARE if train.get("answer_logits_only") else 1.0)
    parts["activations"] = (ckpt if checkpointing else full) * 1.1
    parts["logits"] = logit_positions * shape.vocab * (c_bytes + 8)
    if not train.get("use_cpu"):
        parts["CUDA context and allocator"] = OVERHEAD_GIB * GIB
    gib = {k: v / GIB for k, v in parts.items()}
    return {"parts": gib, "total": sum(gib.values()), "tokens_per_step": tokens, "trainable_params": trainable,
            "activations_with_checkpointing": ckpt * 1.1 / GIB, "activations_without_checkpointing": full * 1.1 / GIB,
            "weights_dtype_bytes": w_bytes, "compute_dtype_bytes": c_bytes, "sharded_over": n}


def inference_memory(shape: Shape, dtype: str, batch: int, max_length: int) -> float:
    """GiB per GPU to run the model forward (weights stage) or to generate (evaluation): the weights in
    ``dtype``, a KV cache of ``batch`` sequences of ``max_length`` tokens, the context."""
    b = DTYPE_BYTES.get(dtype, 4)
    kv_cache = 2 * shape.layers * shape.kv_heads * shape.head_dim * b * batch * max_length
    return (shape.params * b + kv_cache) / GIB + OVERHEAD_GIB
