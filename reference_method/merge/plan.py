"""What a merge reads: the opened (lazy) models, the tensor order and each tensor's layer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.merge.checks import check_models
from consistbench.reference_method.merge.config import MergeConfig
from consistbench.reference_method.merge.io import LazyModel

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_EMBED = ("embed_tokens", "wte.", "word_embeddings", "embed_in")


def tensor_group(name: str) -> int | str:
    """Which part of the network a tensor belongs to.

    - ``int`` l: a tensor of decoder layer l (``...layers.<l>....``);
    - ``"embed"``: the input token embeddings (``embed_tokens`` and the like);
    - ``"final"``: everything else outside the decoder layers: the final norm, ``lm_head``.
    """
    m = _LAYER.search(name)
    if m:
        return int(m.group(1))
    if any(h in name for h in _EMBED):
        return "embed"
    return "final"


@dataclass
class MergePlan:
    reference: LazyModel          # where names, shapes, config and tokenizer come from (the base)
    base: LazyModel | None        # None when the method needs no base
    models: list[LazyModel]
    names: list[str]              # tensors in reading order of the reference
    num_layers: int

    def close(self) -> None:
        for m in {id(m): m for m in [self.reference, *self.models]}.values():
            m.close()

    @property
    def model_bytes(self) -> int:
        return self.reference.nbytes


def build_plan(config: MergeConfig, *, needs_base: bool, check: bool = True) -> MergePlan:
    """Open every input lazily and run the checks (ConsistbenchError on the first problem)."""
    if config.base is None:
        if needs_base:
            raise ConsistbenchError(f"merge method {config.method!r} needs a 'base' model")
        ref = None
    else:
        ref = LazyModel(config.base, label=f"base ({Path(config.base).name})")
    models = [LazyModel(m.path, label=m.label) for m in config.models]
    reference = ref or models[0]
    if check:
        check_models(reference, [m for m in models if m is not reference])
    names = sorted(reference.tensors, key=lambda n: (reference.tensors[n].file, reference.tensors[n].offset, n))
    layers = [g for g in (tensor_group(n) for n in names) if isinstance(g, int)]
    num_layers = int(reference.config.get("num_hidden_layers") or (max(layers) + 1 if layers else 0))
    if layers and max(layers) >= num_layers:
        raise ConsistbenchError(f"{reference.label}: tensor of layer {max(layers)} but config says {num_layers} layers")
    return MergePlan(reference=reference, base=ref if needs_base else None, models=models, names=names,
                     num_layers=num_layers)
