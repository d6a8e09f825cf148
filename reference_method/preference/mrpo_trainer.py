"""MRPO on TRL's ``DPOTrainer``: a virtual reference log-probability inside the DPO loss.

The K references' sequence log-probabilities are columns computed before training
(:func:`precompute_reference_logps`, one model in memory at a time). ``compute_loss`` clips and
combines them (:func:`virtual_reference`: the published lower bound, or a log-linear mixture)
into ``ref_chosen_logps`` / ``ref_rejected_logps`` and hands the batch to TRL's own DPO loss, so
every DPO option and metric of TRL applies unchanged; only the reference is replaced. Formulas
and defaults: :mod:`consistbench.reference_method.preference.mrpo_config`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from trl import DPOTrainer

from consistbench.benchmark.compat import check_trl_hooks, trl_add_fused_lm_head as add_fused_lm_head
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.preference.collator import PreferenceCollator, completion_logps

check_trl_hooks(DPOTrainer)  # the private hooks overridden below exist in this trl

REF_CHOSEN = "mrpo_ref_chosen_logps"
REF_REJECTED = "mrpo_ref_rejected_logps"


def clip_to_main(logps: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Clip references 2..K (columns 1..K-1 of ``logps``, shape B x K) into ``sorted((1 -+ eps) * L_1)``.

    ``eps`` is one number or one per row (shape B)."""
    main = logps[:, :1]
    if isinstance(eps, torch.Tensor):
        eps = eps.reshape(-1, 1).to(logps.dtype)
    a, b = (1 - eps) * main, (1 + eps) * main
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    return torch.cat([main, torch.maximum(torch.minimum(logps[:, 1:], hi), lo)], dim=1)


def adaptive_clip_ranges(chosen: torch.Tensor, rejected: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair clip ranges of the MRPO authors' code: ``eps * s`` (chosen) and ``eps * (1 - s)``
    (rejected), ``s = |m_w| / (|m_w| + |m_l|)``, ``m`` the mean over the references of the
    unclipped sequence log-probs (``s = 1/2`` when both means are 0)."""
    m_w, m_l = chosen.mean(dim=1).abs(), rejected.mean(dim=1).abs()
    total = m_w + m_l
    s = torch.where(total > 0, m_w / total.clamp_min(torch.finfo(total.dtype).tiny), torch.full_like(total, 0.5))
    return eps * s, eps * (1 - s)


def confidence_shares(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """``c_k = |L_k(y_w) - L_k(y_l)| / sum_j |L_j(y_w) - L_j(y_l)|`` (B x K; uniform where every gap is 0)."""
    gap = (chosen - rejected).abs()
    total = gap.sum(dim=1, keepdim=True)
    uniform = torch.full_like(gap, 1.0 / gap.shape[1])
    return torch.where(total > 0, gap / total.clamp_min(torch.finfo(gap.dtype).tiny), uniform)


def _fixed_or_uniform(chosen: torch.Tensor, weighting: str, fixed: Sequence[float] | None) -> torch.Tensor | None:
    b, k = chosen.shape
    if fixed is not None:
        if len(fixed) != k:
            raise ValueError(f"reference_weights has {len(fixed)} values for {k} references")
        w = torch.tensor(list(fixed), dtype=chosen.dtype, device=chosen.device)
        return (w / w.sum()).expand(b, k)
    if weighting == "uniform":
        return torch.full((b, k), 1.0 / k, dtype=chosen.dtype, device=chosen.device)
    return None


def reference_weights(chosen: torch.Tensor, rejected: torch.Tensor, weighting: str = "adaptive",
                      fixed: Sequence[float] | None = None) -> torch.Tensor:
    """Weights of the log-linear mixture (B x K, rows summing to 1): the confidence shares of the
    log-probs given (the clipped ones, under ``log_linear``), or uniform / fixed weights."""
    w = _fixed_or_uniform(chosen, weighting, fixed)
    return confidence_shares(chosen, rejected) if w is None else w


def bound_weights(chosen: torch.Tensor, rejected: torch.Tensor, weighting: str = "adaptive",
                  fixed: Sequence[float] | None = None) -> torch.Tensor:
    """Weights ``a_k`` of the lower bound (B x K, rows summing to 1), from the *unclipped* log-probs.

    Adaptive: ``a_k = (1 - c_k) / (K - 1)``; with two references ``a_1 = c_2`` and ``a_2 = c_1``,
    the ``alpha`` of the MRPO authors' code (module docstring of ``mrpo_config``)."""
    w = _fixed_or_uniform(chosen, weighting, fixed)
    if w is not None:
        return w
    k = chosen.shape[1]
    return (1.0 - confidence_shares(chosen, rejected)) / (k - 1)


def lower_bound_logps(logps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``-log sum_k a_k exp(-L_k)`` per row: the log of the weighted harmonic mean of the references'
    probabilities (log-sum-exp, so sequence log-probs of -1000 do not underflow)."""
    return -torch.logsumexp(torch.log(weights) - logps, dim=1)


def virtual_reference(chosen: torch.Tensor, rejected: torch.Tensor, *, eps: float, weighting: str = "adaptive",
                      fixed: Sequence[float] | None = None, combination: str = "lower_bound"
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(virtual log pi_ref(y_w), virtual log pi_ref(y_l), weights) from B x K reference log-probs.

    ``combination``: ``lower_bound`` (published MRPO) or ``log_linear`` (mrpo_config's docstring)."""
    if combination == "log_linear":
        chosen, rejected = clip_to_main(chosen, eps), clip_to_main(rejected, eps)
        w = reference_weights(chosen, rejected, weighting, fixed)
        return (w * chosen).sum(dim=1), (w * rejected).sum(dim=1), w
    if combination != "lower_bound":
        raise ValueError(f"unknown reference combination {combination!r}")
    w = bound_weights(chosen, rejected, weighting, fixed)       # from the unclipped gaps
    eps_w, eps_l = adaptive_clip_ranges(chosen, rejected, eps)
    chosen, rejected = clip_to_main(chosen, eps_w), clip_to_main(rejected, eps_l)
    return lower_bound_logps(chosen, w), lower_bound_logps(rejected, w), w


def precompute_reference_logps(columns: dict[str, list], references: Sequence[str | Path], *, pad_token_id: int,
                               batch_size: int = 4, trust_remote_code: bool = False,
                               log: Callable[[str], None] = print) -> tuple[list[list[float]], list[list[float]]]:
    """Sequence log-probs of chosen and rejected completions under each reference, as two lists of
    rows (one value per reference, in ``references`` order). Loads one reference at a time."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM

    n = len(columns["prompt_ids"])
    examples = [{"prompt_ids": columns["prompt_ids"][i], "chosen_ids": columns["chosen_ids"][i],
                 "rejected_ids": columns["rejected_ids"][i]} for i in range(n)]
    loader = DataLoader(examples, batch_size=batch_size, shuffle=False, collate_fn=PreferenceCollator(pad_token_id))
    chosen_cols, rejected_cols = [], []
    for k, ref in enumerate(references, start=1):
        log(f"reference {k}/{len(references)}: {ref}")
        try:
            model = AutoModelForCausalLM.from_pretrained(str(ref), dtype=torch.float32,
                                                         trust_remote_code=trust_remote_code).eval()
        except Exception as exc:
            raise ConsistbenchError(f"{ref}: cannot load the reference ({type(exc).__name__}: {str(exc)[:200]})") from None
        add_fused_lm_head(model)
        c_parts, r_parts = [], []
        with torch.no_grad():
            for batch in tqdm(loader, desc=f"reference {k} log-probs"):
                c, r = completion_logps(model, batch).float().chunk(2)
                c_parts.append(c)
                r_parts.append(r)
        chosen_cols.append(torch.cat(c_parts))
        rejected_cols.append(torch.cat(r_parts))
        del model
    return torch.stack(chosen_cols, dim=1).tolist(), torch.stack(rejected_cols, dim=1).tolist()


class MRPOTrainer(DPOTrainer):
    """``DPOTrainer`` with a virtual reference from several precomputed references; ``args`` is an
    :class:`MRPOConfig`. The dataset must be tokenized and carry the two ``mrpo_ref_*`` columns."""

    _tag_names = ["trl", "mrpo", "consistbench"]

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        needed = ("prompt_ids", "chosen_ids", "rejected_ids", REF_CHOSEN, REF_REJECTED)
        missing = [c for c in needed if c not in dataset.column_names]
        if missing:
            raise ValueError(f"MRPOTrainer needs a tokenized {dataset_name} dataset with precomputed reference "
                             f"log-probs; missing column {missing[0]!r} (see precompute_reference_logps)")
        k = len(dataset[0][REF_CHOSEN])
        if k < 2:
            raise ValueError(f"MRPO needs at least two references, the {dataset_name} dataset holds {k}")
        return dataset

    def _precompute_ref_logps(self, dataset, name, batch_size):
        return dataset  # the reference columns come with the data set (precompute_reference_logps)

    def _plain_sigmoid(self) -> bool:
        """Whether the loss is DPO's plain sigmoid loss (then it is computed here, faster on CPU)."""
        return (list(self.loss_types) == ["sigmoid"] and self.ld_alpha is None and self.f_divergence_type == "reverse_kl"
                and not self.use_weighting and not self.label_smoothing and not self.aux_loss_enabled)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        import torch.nn.functional as F

        inputs = dict(inputs)
        args = self.args
        chosen, rejected = inputs.pop(REF_CHOSEN), inputs.pop(REF_REJECTED)
        ref_c, ref_r, w = virtual_reference(chosen, rejected, eps=args.clip_epsilon, weighting=args.weighting,
                                            fixed=args.reference_weights, combination=args.reference_combination)
        inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = ref_c, ref_r
        mode = "train" if self.model.training else "eval"
        for k in range(w.shape[1]):
            self._metrics[mode][f"mrpo/weight_ref{k + 1}"].append(w[:, k].mean().item())
        if self._plain_sigmoid():
            # DPO's sigmoid loss against the virtual reference: -log sigmoid(beta (r_w - r_l))
            logps = completion_logps(model, inputs)
            pol_c, pol_r = logps.chunk(2)
            r_c, r_r = pol_c - ref_c, pol_r - ref_r
            loss = -F.logsigmoid(self.beta * (r_c - r_r)).mean()
            with torch.no_grad():
                for key, value in (("rewards/chosen", self.beta * r_c), ("rewards/rejected", self.beta * r_r),
                                   ("rewards/margins", self.beta * (r_c - r_r)),
                                   ("rewards/accuracies", (r_c > r_r).float()), ("logps/chosen", pol_c),
                                   ("logps/rejected", pol_r)):
                    self._metrics[mode][key].append(self.accelerator.gather_for_metrics(value.detach()).mean().item())
            out = (loss, {"logps": logps.detach()}) if return_outputs else loss
        else:  # every other TRL loss option: TRL's own loss with the virtual reference
            out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
        if mode == "train":
            if not hasattr(self, "loss_history"):
                self.loss_history = []
            loss = out[0] if return_outputs else out
            self.loss_history.append({"step": self.state.global_step, "loss": loss.item(),
                                      "weights": [round(v, 4) for v in w.mean(0).tolist()]})
        return out
