r"""Settings of :class:`MRPOTrainer`: Multi-Reference Preference Optimization.

Le, Tran, Nguyen, Do, Mittal, Ogueji, Venkatesh, *Multi-Reference Preference Optimization for Large
Language Models* (arXiv 2405.16388, 2024; AAAI 2025). DPO with K >= 2 reference models combined
into one virtual reference log-probability ``V(y)`` per completion ``y`` (chosen ``y_w`` or
rejected ``y_l``); the loss is DPO's,
``-log sigmoid(beta * ((log pi_theta(y_w) - V(y_w)) - (log pi_theta(y_l) - V(y_l))))``.
``L_k(y) = log pi_k(y | x)``; reference 1 is the main one (the policy's starting model).

``reference_combination="lower_bound"`` (default; the published method). The objective
``E[r] - beta * sum_k a_k KL(pi || pi_k)`` (``sum_k a_k = 1``) is bounded from below by replacing
the weighted geometric mean of the references by their weighted harmonic mean (Jensen,
``sum_k a_k log pi_k >= -log sum_k a_k / pi_k``); the bound's maximiser gives DPO with

    V(y) = -log sum_k a_k exp(-L'_k(y))      K = 2: log(pi_1 pi_2 / (a_1 pi_2 + a_2 pi_1)), the paper's form

where ``L'_1 = L_1`` and the other references are clipped around the main one, per pair with the
authors' adaptive range (their released code): the chosen side gets ``eps_w = eps * s``, the
rejected side ``eps_l = eps * (1 - s)``, ``s = |m_w| / (|m_w| + |m_l|)`` with ``m_w`` / ``m_l`` the
mean over the K references of ``L_k(y_w)`` / ``L_k(y_l)``, and
``L'_k(y) = clip(L_k(y), sorted((1 - eps_y) L_1(y), (1 + eps_y) L_1(y)))``. The adaptive weights
come from the *unclipped* gaps ``g_k = |L_k(y_w) - L_k(y_l)|`` with the confidence shares
``c_k = g_k / sum_j g_j``:

    a_k = (1 - c_k) / (K - 1)

At K = 2 this is the authors' code exactly (their ``alpha = |g_2| / (|g_1| + |g_2|)`` multiplies
the main reference's ``1 / pi_1`` term: each reference's weight in the bound is the *other*
reference's confidence share); for K > 2 each reference gets the mean confidence share of the
others (our generalisation; docs/PREFERENCE.md derives it).

``reference_combination="log_linear"`` (this project's earlier form, kept as an option): the
exact maximiser of the same objective, ``V(y) = sum_k w_k L'_k(y)``, with a fixed range
``L'_k = clip(L_k, sorted((1 - eps) L_1, (1 + eps) L_1))`` on both sides and the weights from the
*clipped* gaps, ``w_k = |L'_k(y_w) - L'_k(y_l)| / sum_j |L'_j(y_w) - L'_j(y_l)|``.

Both forms: uniform weights when every gap is 0; with identical references the clip and the
weights change nothing and MRPO is DPO with that reference (tested). Sequence log-probabilities
of every reference are computed once per data set (one reference model in memory at a time) and
stored in the columns ``mrpo_ref_chosen_logps`` / ``mrpo_ref_rejected_logps`` (one value per
reference, the main reference first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consistbench.reference_method.preference.config import PreferenceConfig

WEIGHTINGS = ("adaptive", "uniform")
COMBINATIONS = ("lower_bound", "log_linear")


@dataclass
class MRPOConfig(PreferenceConfig):
    r"""Configuration of :class:`consistbench.reference_method.preference.mrpo_trainer.MRPOTrainer`.

    beta (`float`, *optional*, defaults to `0.1`):
        DPO temperature (TRL's, the DPO paper's and the MRPO authors' code default).
    reference_combination (`Literal["lower_bound", "log_linear"]`, *optional*, defaults to `"lower_bound"`):
        How the K references make the virtual reference: ``lower_bound`` is the published MRPO
        (weighted harmonic mean of the references, adaptive per-pair clip range, weights from
        the unclipped gaps); ``log_linear`` is ``sum_k w_k log pi_k`` with a fixed clip range and
        weights from the clipped gaps (module docstring).
    clip_epsilon (`float`, *optional*, defaults to `0.1`):
        Trust region of the extra references around the main one (sequence level). ``lower_bound``:
        the total relative range ``eps`` shared between the chosen and the rejected side
        (``eps * s`` and ``eps * (1 - s)``); 0.1 is the default ``eta`` of the authors' code.
        ``log_linear``: a fixed range ``1 +- eps`` on both sides. ``0`` ignores the extra
        references' values (they are clipped onto ``log pi_1``).
    weighting (`Literal["adaptive", "uniform"]`, *optional*, defaults to `"adaptive"`):
        ``adaptive``: the per-example confidence weights of the chosen combination (paper);
        ``uniform``: ``1/K`` each.
    reference_weights (`list[float]`, *optional*, defaults to `None`):
        Fixed weights, one per reference, main reference first (normalised to sum 1); overrides
        ``weighting``. Under ``lower_bound`` they are the ``a_k`` of ``sum_k a_k KL(pi || pi_k)``.
    """

    beta: float = field(default=0.1, metadata={"help": "DPO temperature (TRL / DPO / MRPO code default 0.1)."})
    reference_combination: str = field(default="lower_bound",
                                       metadata={"help": "lower_bound (published MRPO) or log_linear."})
    clip_epsilon: float = field(default=0.1, metadata={"help": "Relative clip range of extra references around the main one."})
    weighting: str = field(default="adaptive", metadata={"help": "adaptive (per-example confidence) or uniform."})
    reference_weights: list[float] | None = field(default=None, metadata={"help": "Fixed weights, one per reference."})

    def __post_init__(self):
        if self.reference_combination not in COMBINATIONS:
            raise ValueError(f"reference_combination must be one of {', '.join(COMBINATIONS)}, "
                             f"got {self.reference_combination!r}")
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
        return {"method": "mrpo", "reference_combination": self.reference_combination,
                "clip_epsilon": self.clip_epsilon, "weighting": self.weighting,
                "reference_weights": self.reference_weights, **self.common_settings()}
