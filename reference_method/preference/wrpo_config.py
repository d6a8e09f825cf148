"""Settings of :class:`WRPOTrainer`: Weighted-Reward Preference Optimization.

Yang, Wan, Zhong, Huang, Liang, Quan, *Weighted-Reward Preference Optimization for Implicit Model
Fusion*, ICLR 2025 (arXiv 2412.03187). The loss, per (prompt, best source answer ``y_s``, best
target answer ``y_t``, worst target answer ``y_l``):

    L = -log sigmoid( beta * ( a * r(y_s) + (1 - a) * r(y_t) - r(y_l) ) ),
    r(y) = log pi_theta(y | x) - log pi_ref(y | x),

with the fusion coefficient ``a`` rising linearly from 0 to ``alpha_max`` over training (the
paper's progressive adaptation: first learn from the target's own answers, then shift weight to
the source models' answers). ``pi_ref`` is the target model before training.
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
    """

    beta: float = field(default=0.01, metadata={"help": "Reward temperature (WRPO paper: 0.01)."})
    alpha_max: float = field(default=0.1, metadata={"help": "Final fusion coefficient (WRPO paper: 0.1)."})
    alpha_warmup_ratio: float = field(default=1.0, metadata={"help": "Share of steps over which a rises to alpha_max."})

    def __post_init__(self):
        if not 0.0 <= self.alpha_max <= 1.0:
            raise ValueError(f"alpha_max must be in [0, 1], got {self.alpha_max}")
        if not 0.0 < self.alpha_warmup_ratio <= 1.0:
            raise ValueError(f"alpha_warmup_ratio must be in (0, 1], got {self.alpha_warmup_ratio}")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        super().__post_init__()

    def method_settings(self) -> dict:
        return {"method": "wrpo", "alpha_max": self.alpha_max, "alpha_warmup_ratio": self.alpha_warmup_ratio,
                **self.common_settings()}
