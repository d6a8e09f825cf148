"""Settings of :class:`MRPOTrainer`: Multi-Reference Preference Optimization.

Le, Tran, Nguyen, Do, Mittal, Ogueji, Venkatesh, *Multi-Reference Preference Optimization for Large
Language Models* (arXiv 2405.16388, 2024; AAAI 2025). DPO with K >= 2 reference models combined
into one virtual reference log-probability, per completion ``y`` (chosen or rejected):

    log pi_ref(y) = sum_k w_k * L_k(y)
    L_1(y) = log pi_1(y)                                   (the main reference: the policy's start)
    L_k(y) = clip(log pi_k(y), lo_1(y), hi_1(y)),  k >= 2   (clipped into a trust region of pi_1)
    lo_1, hi_1 = sorted((1 - eps) * log pi_1(y), (1 + eps) * log pi_1(y))

and the DPO loss ``-log sigmoid(beta * ((log pi_theta(y_w) - log pi_ref(y_w)) - (log pi_theta(y_l) -
log pi_ref(y_l))))``. The mixing weights ``w_k`` are adaptive per example (the paper's adaptive
reference weighting): a reference that separates the chosen from the rejected answer more
confidently gets more weight,

    w_k = |L_k(y_w) - L_k(y_l)| / sum_j |L_j(y_w) - L_j(y_l)|      (uniform when every gap is 0).

With identical references the clip and the weights change nothing and MRPO is DPO with that
reference (tested). Sequence log-probabilities of every reference are computed once per data set
(one reference model in memory at a time) and stored in the columns ``mrpo_ref_chosen_logps`` /
``mrpo_ref_rejected_logps`` (one value per reference, the main reference first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consistbench.reference_method.preference.config import PreferenceConfig

WEIGHTINGS = ("adaptive", "uniform")


@dataclass
class MRPOConfig(PreferenceConfig):
    r"""Configuration of :class:`consistbench.reference_method.preference.mrpo_trainer.MRPOTrainer`.

    beta (`float`, *optional*, defaults to `0.1`):
        DPO temperature (TRL's and the DPO paper's default; MRPO builds on DPO unchanged here).
    clip_epsilon (`float`, *optional*, defaults to `0.1`):
        Trust region of the extra references around the main one: ``L_k`` is kept within a factor
        ``1 +- eps`` of ``log pi_1(y)`` (sequence level). Le et al. clip the extra references'
        log-probabilities into a range around the main reference's; 0.1 is this project's default
        (the PPO-style clip range), not a value taken from the paper. ``0`` ignores the extra
        references' values (they are clipped onto ``log pi_1``), so MRPO becomes DPO.
    weighting (`Literal["adaptive", "uniform"]`, *optional*, defaults to `"adaptive"`):
        ``adaptive``: the per-example confidence weights above (paper); ``uniform``: ``w_k = 1/K``.
    reference_weights (`list[float]`, *optional*, defaults to `None`):
        Fixed weights, one per reference (normalised to sum 1); overrides ``weighting``.
    """

    beta: float = field(default=0.1, metadata={"help": "DPO temperature (TRL / DPO default 0.1)."})
    clip_epsilon: float = field(default=0.1, metadata={"help": "Relative clip range of extra references around the main one."})
    weighting: str = field(default="adaptive", metadata={"help": "adaptive (per-example confidence) or uniform."})
    reference_weights: list[float] | None = field(default=None, metadata={"help": "Fixed weights, one per reference."})

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        if self.clip_epsilon < 0:
            raise ValueError(f"clip_epsilon must be >= 0, got {self.clip_epsilon}")
        if self.reference_weights is not None:
            if any(w < 0 for w in self.reference_weights) or sum(self.reference_weights) <= 0:
                raise ValueError("reference_weights must be non-negative with a positive sum")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        super().__post_init__()

    def method_settings(self) -> dict:
        return {"method": "mrpo", "clip_epsilon": self.clip_epsilon, "weighting": self.weighting,
                "reference_weights": self.reference_weights, **self.common_settings()}
