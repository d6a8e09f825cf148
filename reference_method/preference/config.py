"""Settings shared by :class:`WRPOConfig` and :class:`MRPOConfig`: TRL's ``DPOConfig`` with CPU-safe
defaults, LoRA options and the model checks of the reference method.

Changed ``DPOConfig`` defaults (the reasons):

- ``bf16=False``, ``gradient_checkpointing=False``: TRL's defaults raise on CPU or slow it down;
- ``precompute_ref_log_probs=True`` (forced): reference log-probabilities are computed once per
  data set and stored as columns, so training holds one policy in memory (DESIGN.md: with
  ``ref_model=None`` TRL would otherwise reload a second copy from disk);
- ``remove_unused_columns=False``: the batches carry the extra source / reference columns;
- ``report_to="none"``, ``logging_steps=5``; the DPO learning rate (1e-6) is TRL's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.trainer_utils import SaveStrategy  # noqa: F401  (annotation)
from trl import DPOConfig


@dataclass
class PreferenceConfig(DPOConfig):
    r"""Fields beyond ``DPOConfig`` (both methods).

    use_lora (`bool`, *optional*, defaults to `False`):
        Train LoRA adapters (peft), merged into the weights on save (the output loads as a plain model).
    lora_r (`int`, *optional*, defaults to `16`), lora_alpha (`int`, defaults to `32`), lora_dropout
    (`float`, defaults to `0.0`), lora_target_modules (`list[str]`, defaults to `["all-linear"]`):
        peft ``LoraConfig`` fields, the same defaults as ``ref train`` (``all-linear`` leaves out the
        LM head, which TRL's fused head requires).
    allow_pad_eq_eos (`bool`, *optional*, defaults to `False`):
        Train although the tokenizer's pad token is its eos (refused otherwise, as in ``ref train``).
    """

    output_dir: str | None = field(default=None, metadata={"help": "Checkpoint directory (the final model goes elsewhere)."})
    bf16: bool | None = field(default=False, metadata={"help": "bf16 mixed precision (off: CPU-safe)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations (off: faster on CPU)."})
    precompute_ref_log_probs: bool = field(default=True, metadata={"help": "Always on: reference log-probs are columns."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the extra columns."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "No trackers unless asked."})
    logging_steps: float = field(default=5, metadata={"help": "Log every N steps."})
    save_strategy: "SaveStrategy | str" = field(default="no", metadata={"help": "Checkpoints off by default (short runs)."})

    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters, merged on save."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata={"help": "peft target_modules."})
    allow_pad_eq_eos: bool = field(default=False, metadata={"help": "Train although pad == eos."})

    def __post_init__(self):
        if not self.precompute_ref_log_probs:
            raise ValueError("precompute_ref_log_probs must stay True: the reference log-probabilities are columns "
                             "computed once per data set")
        if self.use_lora and (self.lora_r < 1 or self.lora_alpha < 1):
            raise ValueError("lora_r and lora_alpha must be positive")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [self.lora_target_modules]
        self._checkpoint_dir_given = self.output_dir is not None
        super().__post_init__()

    @property
    def checkpoint_dir_given(self) -> bool:
        return getattr(self, "_checkpoint_dir_given", True)

    def lora_config(self):
        from peft import LoraConfig, TaskType

        targets = self.lora_target_modules
        return LoraConfig(task_type=TaskType.CAUSAL_LM, r=self.lora_r, lora_alpha=self.lora_alpha,
                          lora_dropout=self.lora_dropout,
                          target_modules=targets[0] if targets == ["all-linear"] else list(targets))

    def common_settings(self) -> dict:
        names = ("beta", "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "weight_decay", "seed",
                 "max_length", "use_lora", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
        return {n: getattr(self, n) for n in names}
