"""Settings of the SFT + triplet-loss trainer (:class:`ConsistencyTrainer`).

A dataclass extending :class:`transformers.TrainingArguments`, in the manner of TRL's
``<method>_config.py``: every field below is documented with its default and where the default
comes from. "Paper" is Peng et al., *Harmonizing Diverse Models: A Layer-wise Merging Strategy
for Consistent Generation*, EMNLP 2025 Industry (arXiv 2510.14915), which defines the loss
``L = L_CE + alpha * L_triplet`` with ``L_triplet = max(0, d(f(A), f(P)) - d(f(A), f(N)) + margin)``
over pooled hidden states of the query, but publishes no values for alpha, margin, the
distance, the layer or the pooling. Those defaults are this project's choices and say so.

Fields inherited from ``TrainingArguments`` keep their meaning; a few defaults are changed here
(``remove_unused_columns=False`` because batches carry a ``query_mask``, ``report_to="none"``,
one epoch, a learning rate for full fine-tuning of a small model). ``per_device_train_batch_size``
counts *triplets*: each is three sequences (anchor, positive, negative) in one forward pass.

A YAML file holding these fields is the same object written down: ``ConsistencyConfig(**yaml)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from transformers import TrainingArguments

Distance = Literal["cosine", "euclidean"]
Pooling = Literal["mean", "last", "max"]


@dataclass
class ConsistencyConfig(TrainingArguments):
    r"""Configuration of :class:`consistbench.reference_method.consistency_trainer.ConsistencyTrainer`.

    Parameters (beyond ``TrainingArguments``):

    > Loss

    alpha (`float`, *optional*, defaults to `1.0`):
        Weight of the triplet term in ``L = L_CE + alpha * L_triplet`` (paper, eq. for the total
        loss; the paper gives no value: 1.0 weighs both terms equally). ``0`` is plain SFT, and
        then the loss is exactly the causal-LM cross-entropy ``transformers.Trainer`` computes.
    margin (`float`, *optional*, defaults to `0.2`):
        Triplet margin (paper's ``margin``; no value published). 0.2 in cosine distance, whose
        range is [0, 2]. With ``distance="euclidean"`` choose it on the scale of hidden-state norms.
    distance (`Literal["cosine", "euclidean"]`, *optional*, defaults to `"cosine"`):
        ``d`` in the triplet term: ``1 - cos(u, v)`` or ``||u - v||_2``. The paper leaves it
        open; cosine is scale-free, so one margin works across layers and models.
    pooling_layer (`int`, *optional*, defaults to `-1`):
        Index into the model's ``hidden_states`` (0 = embeddings, -1 = last layer) whose query
        tokens are pooled (DESIGN.md: last hidden layer by default). Any index the model has.
    pooling (`Literal["mean", "last", "max"]`, *optional*, defaults to `"mean"`):
        How the query tokens' states become one vector ``f(.)``: their mean (DESIGN.md default),
        the last query token, or an element-wise max.

    > Data

    max_length (`int`, *optional*, defaults to `1024`):
        Longest training sequence in tokens (prompt + answer + eos). Longer triplets are dropped
        and counted, never truncated: truncation would train on a prompt evaluation never shows.
        1024 covers every row of the shipped train split with SmolLM2's tokenizer.

    > Model

    use_lora (`bool`, *optional*, defaults to `False`):
        Train LoRA adapters (peft) instead of all weights; adapters are merged into the base
        weights on save, so the output loads as a plain model (needed for merging in part 2).
    lora_r (`int`, *optional*, defaults to `16`):
        LoRA rank (peft ``LoraConfig.r``; 16 is a common choice for models of this size).
    lora_alpha (`int`, *optional*, defaults to `32`):
        LoRA scaling numerator (peft ``lora_alpha``; 2 x r, the usual convention).
    lora_dropout (`float`, *optional*, defaults to `0.0`):
        Dropout on the LoRA path (peft ``lora_dropout``). 0 keeps a step deterministic, so a
        resumed run reproduces an uninterrupted one exactly.
    lora_target_modules (`list[str]`, *optional*, defaults to `["all-linear"]`):
        Modules that get adapters (peft ``target_modules``; ``all-linear`` is peft's shortcut for
        every linear layer except the output head).
    lora_layers (`int`, *optional*, defaults to `None`):
        Put adapters only in the last N decoder layers (peft ``layers_to_transform``); ``None``
        adapts every layer. The layers below then need no gradient, so backpropagation stops at
        the first adapted layer: a cheaper step on CPU, at the cost of adapting less of the model.
        This project's choice for its CPU reproduction, not from the paper.
    allow_pad_eq_eos (`bool`, *optional*, defaults to `False`):
        Train even when the tokenizer's pad token is its eos token. Off by default: with
        pad == eos, common collators mask the eos with the padding and the model never learns to
        stop (``consistbench doctor --fix`` gives the model a distinct pad token). This project's
        collator masks by length, so enabling it is safe here, but the model stays a trap for
        other tools.
    trust_remote_code (`bool`, *optional*, defaults to `False`):
        Allow model code from the model folder. Off: only architectures built into transformers.
    """

    # TrainingArguments defaults changed for this trainer.
    output_dir: str | None = field(default=None, metadata={"help": "Checkpoint directory (the final model goes elsewhere)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep query_mask in batches."})
    learning_rate: float = field(default=2e-5, metadata={"help": "AdamW learning rate (2e-5 suits full fine-tuning of a small model)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the triplets (the issue's runs use one)."})
    per_device_train_batch_size: int = field(default=2, metadata={"help": "Triplets per device and step (3 sequences each)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    save_steps: float = field(default=100, metadata={"help": "Checkpoint every N steps."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "No trackers unless asked."})

    alpha: float = field(default=1.0, metadata={"help": "Weight of the triplet term; 0 is plain SFT."})
    margin: float = field(default=0.2, metadata={"help": "Triplet margin."})
    distance: Distance = field(default="cosine", metadata={"help": "Triplet distance: cosine or euclidean."})
    pooling_layer: int = field(default=-1, metadata={"help": "hidden_states index pooled for the triplet term."})
    pooling: Pooling = field(default="mean", metadata={"help": "Query-token pooling: mean, last or max."})
    max_length: int = field(default=1024, metadata={"help": "Longest sequence; longer triplets are dropped."})
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters, merged on save."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"],
                                           metadata={"help": "peft target_modules."})
    lora_layers: int | None = field(default=None, metadata={"help": "Adapt only the last N layers (None: all)."})
    allow_pad_eq_eos: bool = field(default=False, metadata={"help": "Train although pad == eos."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the model folder."})

    def __post_init__(self):
        for name, kind in (("distance", Distance), ("pooling", Pooling)):
            allowed = get_args(kind)
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}")
        if self.use_lora and (self.lora_r < 1 or self.lora_alpha < 1):
            raise ValueError("lora_r and lora_alpha must be positive")
        if self.lora_layers is not None and self.lora_layers < 1:
            raise ValueError(f"lora_layers must be at least 1, got {self.lora_layers}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [self.lora_target_modules]
        # TrainingArguments replaces a missing output_dir with "trainer_output"; the trainer then
        # puts checkpoints beside the final model instead (see reference_method.train).
        self._checkpoint_dir_given = self.output_dir is not None
        super().__post_init__()

    @property
    def checkpoint_dir_given(self) -> bool:
        """Whether ``output_dir`` (the checkpoint directory) was set explicitly."""
        return getattr(self, "_checkpoint_dir_given", True)

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
            from consistbench.reference_method.merge.layout import layout_for

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

    def loss_settings(self) -> dict:
        """The fields that define the loss and the model setup (recorded in the model's card)."""
        names = ("alpha", "margin", "distance", "pooling_layer", "pooling", "max_length", "use_lora", "lora_r",
                 "lora_alpha", "lora_dropout", "lora_target_modules", "lora_layers", "learning_rate", "num_train_epochs",
                 "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "lr_scheduler_type",
                 "warmup_steps", "weight_decay", "max_steps")
        return {n: getattr(self, n) for n in names}
