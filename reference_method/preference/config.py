"""Settings shared by :class:`WRPOConfig` and :class:`MRPOConfig`: TRL's ``DPOConfig`` with CPU-safe
defaults, LoRA options and the model checks of the reference method.

Changed ``DPOConfig`` defaults (the reasons):

- ``bf16=False``, ``gradient_checkpointing=False``: TRL's defaults raise on CPU or slow it down;
- ``precompute_ref_log_probs=True`` (forced): reference log-probabilities are computed once per
  data set and stored as columns, so training holds one policy in memory (with
  ``ref_model=None`` TRL would otherwise reload a second copy from disk);
- ``remove_unused_columns=False``: the batches carry the extra source / reference columns;
- ``report_to="none"``, ``logging_steps=5``; the DPO learning rate (1e-6) is TRL's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.trainer_utils import SaveStrategy  # noqa: F401  (annotation)
from trl import DPOConfig

from consistbench.reference_method.training_args import CheckpointArguments, LoraArguments, ModelArguments


@dataclass
class PreferenceConfig(LoraArguments, ModelArguments, CheckpointArguments, DPOConfig):
    r"""Fields beyond ``DPOConfig`` (both methods): the shared model and LoRA arguments
    (:mod:`consistbench.reference_method.training_args`, the same flags and defaults as ``ref train``;
    ``all-linear`` leaves out the LM head, which TRL's fused head requires).
    """

    bf16: bool | None = field(default=False, metadata={"help": "bf16 mixed precision (off: CPU-safe)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations (off: faster on CPU)."})
    precompute_ref_log_probs: bool = field(default=True, metadata={"help": "Always on: reference log-probs are columns."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the extra columns."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "No trackers unless asked."})
    logging_steps: float = field(default=5, metadata={"help": "Log every N steps."})
    save_strategy: "SaveStrategy | str" = field(default="no", metadata={"help": "Checkpoints off by default (short runs)."})

    def __post_init__(self):
        if not self.precompute_ref_log_probs:
            raise ValueError("precompute_ref_log_probs must stay True: the reference log-probabilities are columns "
                             "computed once per data set")
        super().__post_init__()

    def common_settings(self) -> dict:
        names = ("beta", "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "weight_decay", "seed",
                 "max_length")
        return {n: getattr(self, n) for n in names} | self.lora_settings()
