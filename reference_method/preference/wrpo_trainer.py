"""WRPO on TRL's ``DPOTrainer``: three completions per prompt, one weighted reward.

A batch of B preference rows is 3B sequences in one forward pass: the chosen (best target
answer ``y_t``), the rejected (worst target answer ``y_l``) and the best source answer ``y_s``
(:class:`consistbench.reference_method.preference.collator.PreferenceCollator` with ``with_source=True``).
Reference log-probabilities of all three are computed once, before training, with the policy's
initial weights (adapters disabled under LoRA) and stored as the columns ``ref_chosen_logps``,
``ref_rejected_logps``, ``ref_source_logps``, so no second model is held in memory.

Only ``compute_loss`` and the reference precompute are overridden (TRL 1.16 has no ``dpo_loss``
hook). Per-step values (loss, ``a``, the three rewards) are kept in ``loss_history`` and go into
the model's card.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from trl import DPOTrainer

from consistbench.benchmark.compat import check_trl_hooks

check_trl_hooks(DPOTrainer)  # the private hooks overridden below exist in this trl

from consistbench.reference_method.preference.collator import completion_logps


def fusion_alpha(step: int, total_steps: int, alpha_max: float, warmup_ratio: float = 1.0) -> float:
    """``a`` at optimisation step ``step`` (0-based) of ``total_steps``: linear from 0 (first step) to
    ``alpha_max`` (step ``round(warmup_ratio * total_steps) - 1``), constant after."""
    if total_steps <= 0:
        return alpha_max
    ramp = max(1, round(warmup_ratio * total_steps) - 1)
    return alpha_max * min(1.0, max(0, step) / ramp)


def wrpo_loss(policy_source: torch.Tensor, policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
              ref_source: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, *,
              beta: float, alpha: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-row WRPO loss ``-log sigmoid(beta * (a r(y_s) + (1 - a) r(y_t) - r(y_l)))`` and the rewards."""
    r_s = policy_source - ref_source
    r_t = policy_chosen - ref_chosen
    r_l = policy_rejected - ref_rejected
    losses = -F.logsigmoid(beta * (alpha * r_s + (1.0 - alpha) * r_t - r_l))
    return losses, {"source": r_s, "chosen": r_t, "rejected": r_l}


class WRPOTrainer(DPOTrainer):
    """``DPOTrainer`` whose loss is WRPO's; ``args`` is a :class:`WRPOConfig`.

    The training data must already be tokenized (``prompt_ids``, ``chosen_ids``, ``rejected_ids``,
    ``source_ids``; see :func:`consistbench.reference_method.preference.collator.tokenize_rows`).
    """

    _tag_names = ["trl", "wrpo", "consistbench"]
    REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps", "ref_source_logps")

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        needed = ("prompt_ids", "chosen_ids", "rejected_ids", "source_ids")
        missing = [c for c in needed if c not in dataset.column_names]
        if missing:
            raise ValueError(f"WRPOTrainer needs a tokenized {dataset_name} dataset; missing column {missing[0]!r} "
                             "(use reference_method.preference.collator.tokenize_rows)")
        return dataset

    def _precompute_ref_logps(self, dataset, name, batch_size):
        """Reference log-probs of chosen, rejected and source completions, as three columns."""
        if all(c in dataset.column_names for c in self.REF_COLUMNS):
            return dataset
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        model = self.ref_model or self.model
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False)
        parts: list[list[torch.Tensor]] = [[], [], []]
        peft_off = getattr(model, "disable_adapter", None) if self.ref_model is None else None
        was_training = model.training
        model.eval()
        for batch in tqdm(loader, desc=f"reference log-probs ({name})"):
            batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
            with torch.no_grad(), (peft_off() if peft_off else contextlib.nullcontext()):
                logps = completion_logps(model, batch)
            for i, chunk in enumerate(logps.chunk(3)):
                parts[i].append(chunk.float().cpu())
        model.train(was_training)
        for col, values in zip(self.REF_COLUMNS, parts):
            dataset = dataset.add_column(col, torch.cat(values).tolist())
        return dataset

    def fusion_alpha(self) -> float:
        return fusion_alpha(self.state.global_step, self.state.max_steps, self.args.alpha_max,
                            self.args.alpha_warmup_ratio)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        if inputs["input_ids"].shape[0] % 3:
            raise ValueError("a WRPO batch holds chosen, rejected and source rows (3B sequences)")
        logps = completion_logps(model, inputs)
        chosen, rejected, source = logps.chunk(3)
        alpha = self.fusion_alpha()
        losses, rewards = wrpo_loss(source, chosen, rejected, inputs["ref_source_logps"], inputs["ref_chosen_logps"],
                                    inputs["ref_rejected_logps"], beta=self.beta, alpha=alpha)
        loss = losses.mean()
        with torch.no_grad():
            b = self.beta
            margin = b * (alpha * rewards["source"] + (1 - alpha) * rewards["chosen"] - rewards["rejected"])
            metrics = {"wrpo/alpha": alpha}
            for key, value in (("rewards/chosen", b * rewards["chosen"]), ("rewards/rejected", b * rewards["rejected"]),
                               ("rewards/source", b * rewards["source"]), ("rewards/margins", margin),
                               ("rewards/accuracies", (margin > 0).float()), ("logps/chosen", chosen),
                               ("logps/rejected", rejected), ("logps/source", source)):
                metrics[key] = self.accelerator.gather_for_metrics(value.detach()).float().mean().item()
            for key, value in metrics.items():
                self._metrics[mode][key].append(value)
        if mode == "train":
            if not hasattr(self, "loss_history"):
                self.loss_history = []
            self.loss_history.append({"step": self.state.global_step, "loss": loss.item(), "alpha": alpha,
                                      "margin": metrics["rewards/margins"]})
        if return_outputs:
            return loss, {"logps": logps.detach()}
        return loss

