"""What a merge reads: the opened (lazy) models, the tensor order and each tensor's layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.merge.checks import check_models
from consistbench.reference_method.merge.config import MergeConfig
from consistbench.reference_method.merge.io import LazyModel
from consistbench.reference_method.merge.layout import Layout, assign, layout_for, num_layers


@dataclass
class MergePlan:
    reference: LazyModel          # where names, shapes, config and tokenizer come from (the base)
    base: LazyModel | None        # None when the method needs no base
    models: list[LazyModel]
    names: list[str]              # tensors in reading order of the reference
    num_layers: int
    layout: Layout | None = None  # None: the architecture is not in the layout table (per-layer methods refuse it)
    groups: dict[str, int | str] = field(default_factory=dict)
    # float tensors no input model changed (every delta exactly 0), once a method has looked
    # (merge.consistency.unchanged_tensors); None: not looked at
    unchanged: frozenset[str] | None = None

    def group(self, name: str) -> int | str | None:
        """Decoder layer index, ``"embed"`` (input embeddings) or ``"final"`` (final norm, LM head);
        None when the architecture's layout is unknown (only for methods without per-layer weights)."""
        return self.groups.get(name)

    def close(self) -> None:
        for m in {id(m): m for m in [self.reference, *self.models]}.values():
            m.close()

    @property
    def model_bytes(self) -> int:
        return self.reference.nbytes


def build_plan(config: MergeConfig, *, needs_base: bool, check: bool = True, per_layer: bool = False) -> MergePlan:
    """Open every input lazily and run the checks (ConsistbenchError on the first problem).

    ``per_layer``: the method weighs tensors by layer, so every tensor must be assigned to a
    decoder block, the embeddings or the output side (:mod:`.layout`), or the merge is refused.
    """
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
    try:
        layout = layout_for(reference.config, reference.label)
        n = num_layers(reference.config, layout, reference.label)
        groups = assign(names, layout, n, reference.label)
    except ConsistbenchError:
        if per_layer:
            raise
        # methods that treat every tensor alike merge any architecture; layers are then unknown
        layout, groups = None, {}
        n = int(reference.config.get("num_hidden_layers") or 0)
    return MergePlan(reference=reference, base=ref if needs_base else None, models=models, names=names,
                     num_layers=n, layout=layout, groups=groups)
