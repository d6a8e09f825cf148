"""Pico Llama models for the merge tests: a random base and three perturbed "fine-tunes".

Built once per test session (``family`` caches by process), saved with safetensors; ``ft1``
is sharded across several files. Nothing is downloaded: the tokenizer is the embedded
SmolLM2's (conftest's ``smollm2_dir``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

_CACHE: dict[str, dict] = {}

NOISE = {"ft1": (1, 0.004), "ft2": (2, 0.008), "ft3": (3, 0.016)}  # name: (seed, noise std)
NUM_LAYERS = 3


def pico_config(tok, **overrides):
    from transformers import LlamaConfig

    kw = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=NUM_LAYERS,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
              tie_word_embeddings=True)
    kw.update(overrides)
    return LlamaConfig(**kw)


def family(root: Path, tokenizer_dir: Path) -> dict[str, Path]:
    """``{"base": dir, "ft1": dir, "ft2": dir, "ft3": dir}`` (built on first call)."""
    if "family" in _CACHE:
        return _CACHE["family"]
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = LlamaForCausalLM(pico_config(tok)).eval()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    paths = {"base": root / "base"}
    model.save_pretrained(paths["base"])
    tok.save_pretrained(paths["base"])
    for name, (seed, std) in NOISE.items():
        g = torch.Generator().manual_seed(seed)
        state = {k: v + std * torch.randn(v.shape, generator=g) for k, v in base_state.items()}
        model.load_state_dict(state)
        paths[name] = root / name
        # ft1 in several shards (the embeddings alone are ~6 MB)
        model.save_pretrained(paths[name], max_shard_size="2MB" if name == "ft1" else "1GB")
        tok.save_pretrained(paths[name])
    model.load_state_dict(base_state)
    _CACHE["family"] = paths
    return paths


def load_state(path: Path) -> dict:
    """All tensors of a model folder (any sharding), as float32 CPU tensors."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out.update({k: v.float() for k, v in load_file(f).items()})
    return out


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite_tensor(model_dir: Path, name: str, fn) -> None:
    """Replace tensor ``name`` in whichever shard holds it by ``fn(tensor)``."""
    from safetensors.torch import load_file, save_file

    index = model_dir / "model.safetensors.index.json"
    fname = json.loads(index.read_text())["weight_map"][name] if index.exists() else "model.safetensors"
    tensors = load_file(model_dir / fname)
    tensors[name] = fn(tensors[name]).contiguous()
    save_file(tensors, model_dir / fname, metadata={"format": "pt"})
