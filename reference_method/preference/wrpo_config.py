"""Settings of :class:`WRPOTrainer`: Weighted-Reward Preference Optimization.

Yang, Wan, Zhong, Huang, Liang, Quan, *Weighted-Reward Preference Optimization for Implicit Model
Fusion*, ICLR 2025 (arXiv 2412.03187). The loss, per (prompt, best source answer ``y_s``, best
target answer ``y_t``, worst target answer ``y_l``):

    L = -log sigmoid( beta * ( a * r(y_s) + (1 - a) * r(y_t) - r(y_l) ) ),
    r(y) = log pi_theta(y | x) - log pi_ref(y | x),

with the fusion coefficient ``a`` rising linearly from 0 to ``alpha_max`` over training (the
paper's progressive adaptation: first learn from the target's own answers, then shift weight to
the source models' answers). ``pi_ref`` is the policy before the WRPO stage.

The published pipeline first fine-tunes the target on the source models' best answers
(target-SFT) on one part of the data (a third in the paper), then runs WRPO from that SFT model,
which is also ``pi_ref``, on the rest. ``target_sft`` (default on) does the same here: a seeded
``target_sft_fraction`` of the preference file's question groups trains the SFT stage on their
``source_chosen`` answers (the reference method's SFT: ``ConsistencyTrainer`` with ``alpha = 0``),
the other groups train WRPO. docs/PREFERENCE.md compares the pipeline with the paper step by step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consistbench.reference_method.preference.config import PreferenceConfig


@dataclass
class WRPOConfig(PreferenceConfig):
    r"""Configuration of :class:`consistbench.reference_method.preference.wrpo_trainer.WRPOTrainer`.

    beta (`float`, *optional*, defaults to `0.01`):
        Temperature of the implicit reward (WRPO paper's setting; TRL's DPO default is 0.1).
    alpha_max (`float`, *optional*, defaults to `0.1`):
        Final value of the fusion coefficient ``a`` (WRPO paper's setting). ``0`` gives plain DPO on
        (``y_t``, ``y_l``); ``1`` at the end of the ramp trains on the source answer alone.
    alpha_warmup_ratio (`float`, *optional*, defaults to `1.0`):
        Share of the training steps over which ``a`` rises linearly from 0 to ``alpha_max``; it stays
        at ``alpha_max`` afterwards. 1.0 = over the whole run (the paper's schedule): the first
        optimisation step uses ``a = 0`` and the last ``a = alpha_max``.
    target_sft (`bool`, *optional*, defaults to `True`):
        Run the published target-SFT stage first (WRPO then starts from, and is regularised
        towards, the SFT model); ``False`` trains WRPO from the given model on every row.
    target_sft_fraction (`float`, *optional*, defaults to `1/3`):
        Share of the preference file's question groups (seeded with ``seed``) used for the SFT
        stage; the rest go to WRPO (the paper: a third for SFT, two thirds for WRPO).
    target_sft_learning_rate (`float`, *optional*, defaults to `2e-5`):
        SFT learning rate: ``ref train``'s default for a small model (the paper used 7e-6 for an
        8B model at batch 128); cosine schedule as in the paper, without its 10 % warm-up (a
        warm-up step at learning rate 0 is a large share of a run of a few steps).
    target_sft_epochs (`float`, *optional*, defaults to `1.0`):
        Epochs over the SFT part (the paper: one).
    """

    beta: float = field(default=0.01, metadata={"help": "Reward temperature (WRPO paper: 0.01)."})
    alpha_max: float = field(default=0.1, metadata={"help": "Final fusion coefficient (WRPO paper: 0.1)."})
    alpha_warmup_ratio: float = field(default=1.0, metadata={"help": "Share of steps over which a rises to alpha_max."})
    target_sft: bool = field(default=True, metadata={"help": "Fine-tune the target on the source answers first (paper)."})
    target_sft_fraction: float = field(default=1 / 3, metadata={"help": "Share of question groups for the SFT stage."})
    target_sft_learning_rate: float = field(default=2e-5, metadata={"help": "Learning rate of the SFT stage."})
    target_sft_epochs: float = field(default=1.0, metadata={"help": "Epochs of the SFT stage."})

    def __post_init__(self):
        if not 0.0 <= self.alpha_max <= 1.0:
            raise ValueError(f"alpha_max must be in [0, 1], got {self.alpha_max}")
        if not 0.0 < self.alpha_warmup_ratio <= 1.0:
            raise ValueError(f"alpha_warmup_ratio must be in (0, 1], got {self.alpha_warmup_ratio}")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if not 0.0 < self.target_sft_fraction < 1.0:
            raise ValueError(f"target_sft_fraction must be in (0, 1), got {self.target_sft_fraction}")
        if self.target_sft_learning_rate <= 0 or self.target_sft_epochs <= 0:
            raise ValueError("target_sft_learning_rate and target_sft_epochs must be positive")
        super().__post_init__()

    def method_settings(self) -> dict:
        return {"method": "wrpo", "alpha_max": self.alpha_max, "alpha_warmup_ratio": self.alpha_warmup_ratio,
                "target_sft": self.target_sft, "target_sft_fraction": self.target_sft_fraction,
                "target_sft_learning_rate": self.target_sft_learning_rate, "target_sft_epochs": self.target_sft_epochs,
                **self.common_settings()}
