"""Arguments shared by every training command (``ref train``, ``ref wrpo``, ``ref mrpo``).

Mixins for the config dataclasses, so that each field is defined once and spelled the same on
every command line (``--use-lora``, ``--lora-r``, ...): :class:`LoraArguments` (peft LoRA) and
:class:`ModelArguments` (what may be loaded and trained). A config combines them with its
trainer's arguments, e.g. ``class ConsistencyConfig(LoraArguments, ModelArguments, TrainingArguments)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consistbench.reference_method.merge.layout import layout_for


def _chain_post_init(obj, cls) -> None:
    parent = getattr(super(cls, obj), "__post_init__", None)
    if parent is not None:
        parent()


@dataclass
class ModelArguments:
    r"""
    trust_remote_code (`bool`, *optional*, defaults to `False`):
        Allow model code from the model folder. Off: only architectures built into transformers.
    allow_pad_eq_eos (`bool`, *optional*, defaults to `False`):
        Train even when the tokenizer's pad token is its eos token. Off by default: with pad == eos,
        common collators mask the eos with the padding and the model never learns to stop
        (``consistbench doctor --fix`` gives the model a distinct pad token). This project's
        collators mask by length, so enabling it is safe here, but the model stays a trap for
        other tools.
    """

    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the model folder."})
    allow_pad_eq_eos: bool = field(default=False, metadata={"help": "Train although the pad token is the eos token."})

    def __post_init__(self):
        _chain_post_init(self, ModelArguments)


@dataclass
class LoraArguments:
    r"""
    use_lora (`bool`, *optional*, defaults to `False`):
        Train LoRA adapters (peft) instead of all weights; adapters are merged into the weights on
        save, so the output loads as a plain model (needed for merging).
    lora_r (`int`, *optional*, defaults to `16`):
        LoRA rank (peft ``LoraConfig.r``; 16 is a common choice for models of this size).
    lora_alpha (`int`, *optional*, defaults to `32`):
        LoRA scaling numerator (peft ``lora_alpha``; 2 x r, the usual convention).
    lora_dropout (`float`, *optional*, defaults to `0.0`):
        Dropout on the LoRA path. 0 keeps a step deterministic, so a resumed run reproduces an
        uninterrupted one exactly.
    lora_target_modules (`list[str]`, *optional*, defaults to `["all-linear"]`):
        Modules that get adapters (peft ``target_modules``; ``all-linear`` is peft's shortcut for
        every linear layer except the output head).
    lora_layers (`int`, *optional*, defaults to `None`):
        Put adapters only in the last N decoder layers (peft ``layers_to_transform``); ``None``
        adapts every layer. The layers below then need no gradient, so backpropagation stops at
        the first adapted layer: a cheaper step on CPU, at the cost of adapting less of the model
        (and of a merge whose per-layer weights cannot differ below it).
    """

    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters, merged into the weights on save."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scaling numerator)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"],
                                           metadata={"help": "peft target_modules (all-linear: every linear layer "
                                                             "but the output head)."})
    lora_layers: int | None = field(default=None, metadata={"help": "Adapt only the last N decoder layers "
                                                                      "(default: all)."})

    def __post_init__(self):
        if self.use_lora and (self.lora_r < 1 or self.lora_alpha < 1):
            raise ValueError("lora_r and lora_alpha must be positive")
        if self.lora_layers is not None and self.lora_layers < 1:
            raise ValueError(f"lora_layers must be at least 1, got {self.lora_layers}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [self.lora_target_modules]
        _chain_post_init(self, LoraArguments)

    def lora_config(self, model=None):
        """The peft ``LoraConfig`` these settings describe (``model`` is needed for ``lora_layers``)."""
        from peft import LoraConfig, TaskType

        targets = self.lora_target_modules
        extra = {}
        if self.lora_layers is not None:
            if model is None:
                raise ValueError("lora_layers needs the model to count its layers")
            n = model.config.num_hidden_layers
            if self.lora_layers > n:
                raise ValueError(f"lora_layers={self.lora_layers} but the model has {n} layers")
            blocks = layout_for(model.config.to_dict(), type(model).__name__).blocks
            extra["layers_to_transform"] = list(range(n - self.lora_layers, n))
            extra["layers_pattern"] = blocks.rsplit(".", 1)[-1]  # "layers", "h", "blocks": the block list's name
            blocks += "."
            if targets == ["all-linear"]:  # peft needs names with layers_to_transform: every linear of a block
                import torch
                from transformers.pytorch_utils import Conv1D

                targets = sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                                  if isinstance(mod, (torch.nn.Linear, Conv1D)) and name.startswith(blocks)})
        return LoraConfig(task_type=TaskType.CAUSAL_LM, r=self.lora_r, lora_alpha=self.lora_alpha,
                          lora_dropout=self.lora_dropout,
                          target_modules=targets[0] if targets == ["all-linear"] else list(targets), **extra)

    def lora_settings(self) -> dict:
        return {n: getattr(self, n) for n in ("use_lora", "lora_r", "lora_alpha", "lora_dropout",
                                              "lora_target_modules", "lora_layers")}


@dataclass
class CheckpointArguments:
    """``output_dir`` of the trainer is the *checkpoint* folder; the final model goes to ``--output``."""

    output_dir: str | None = field(default=None, metadata={
        "help": "Checkpoint directory (default: <output>.checkpoints); the final model goes to --output.",
        "aliases": ["--checkpoint-dir"]})

    def __post_init__(self):
        # TrainingArguments replaces a missing output_dir with "trainer_output"; the trainers then put
        # checkpoints beside the final model instead
        self._checkpoint_dir_given = self.output_dir is not None
        _chain_post_init(self, CheckpointArguments)

    @property
    def checkpoint_dir_given(self) -> bool:
        """Whether ``output_dir`` (the checkpoint directory) was set explicitly."""
        return getattr(self, "_checkpoint_dir_given", True)
