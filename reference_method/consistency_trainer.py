"""SFT + triplet loss (Peng et al. 2025): a ``transformers.Trainer`` that overrides only the loss.

    L = L_CE + alpha * L_triplet
    L_triplet = mean over triplets of max(0, d(f(A), f(P)) - d(f(A), f(N)) + margin)

- ``L_CE`` is the causal-LM cross-entropy on the answer tokens (the collator sets the prompt's
  labels to -100), computed by ``transformers.Trainer.compute_loss`` itself, so with
  ``alpha = 0`` the loss *is* plain SFT: same function, same normalisation over the tokens of
  the accumulated batch, same gradient-accumulation and multi-device scaling.
- ``f(.)`` pools the hidden states of the query tokens (``query_mask`` from the collator) at
  ``config.pooling_layer`` with ``config.pooling``. The states come from the same forward pass
  that gives the logits (``output_hidden_states=True``): no second forward.
- A batch of B triplets is 3B sequences: anchors, then positives, then negatives.

Anchors, positives and negatives all carry answers, so every sequence also contributes to
``L_CE``; the triplet term only adds pooling and three distances per triplet.

With ``answer_logits_only`` the CE is computed here instead: the decoder's last hidden state at
the positions whose next token is a label goes through the output embedding, and only those rows
get logits (same cross-entropy, same reduction by ``num_items_in_batch``). transformers offers
``logits_to_keep``, but as one index list for the whole batch, while every row's answer starts at
its own position; hence the few lines below.

The trainer keeps the per-step parts of the loss in ``loss_history`` (a list of dicts with
``ce``, ``triplet``, ``loss``), which ``consistbench.reference_method.train`` writes into the model's card.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from transformers import Trainer

from consistbench.reference_method.collator import IGNORE_INDEX

logger = logging.getLogger(__name__)


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool ``hidden`` (N x L x H) over the positions where ``mask`` (N x L) is 1."""
    mask = mask.to(hidden.dtype)
    if mode == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)
    if mode == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask > 0, positions, torch.full_like(positions, -1)).max(1).values.clamp_min(0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if mode == "max":
        return hidden.masked_fill(mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min).max(1).values
    raise ValueError(f"unknown pooling {mode!r}")


def distance(u: torch.Tensor, v: torch.Tensor, kind: str) -> torch.Tensor:
    """Row-wise distance: ``1 - cos(u, v)`` or the Euclidean norm of ``u - v``."""
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(u, v, dim=-1)
    if kind == "euclidean":
        return (u - v).norm(dim=-1)
    raise ValueError(f"unknown distance {kind!r}")


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, *, margin: float,
                 kind: str = "cosine") -> torch.Tensor:
    """Mean over rows of ``max(0, d(a, p) - d(a, n) + margin)``; exactly 0 when every margin is met."""
    return torch.relu(distance(anchor, positive, kind) - distance(anchor, negative, kind) + margin).mean()


class ConsistencyTrainer(Trainer):
    """``Trainer`` with ``L = L_CE + alpha * L_triplet``; ``args`` is a :class:`ConsistencyConfig`."""

    loss_history: list[dict]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        inputs = dict(inputs)
        query_mask = inputs.pop("query_mask", None)
        use_triplet = args.alpha > 0
        if use_triplet:
            if query_mask is None:
                raise ValueError("alpha > 0 needs triplet batches (query_mask missing)")
            if query_mask.shape[0] % 3:
                raise ValueError(f"a triplet batch has 3B sequences, got {query_mask.shape[0]}")
            inputs["output_hidden_states"] = True
        if args.answer_logits_only and model.training and "labels" in inputs and self._answer_path_usable(model, inputs):
            ce, outputs = self._answer_ce(model, inputs, num_items_in_batch)
        else:
            ce, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                               num_items_in_batch=num_items_in_batch)
        if not hasattr(self, "loss_history"):
            self.loss_history = []
        if not use_triplet:
            if model.training:
                self.loss_history.append({"step": self.state.global_step, "ce": ce.item(), "triplet": None,
                                          "loss": ce.item()})
            return (ce, outputs) if return_outputs else ce
        hidden = outputs.hidden_states[args.pooling_layer]
        pooled = pool(hidden, query_mask.to(hidden.device), args.pooling).float()
        a, p, n = pooled.chunk(3)
        triplet = triplet_loss(a, p, n, margin=args.margin, kind=args.distance)
        # Trainer divides a loss by the accumulation steps unless it is already normalised over
        # the accumulated batch (the CE is, via num_items_in_batch); the triplet term is a
        # per-micro-batch mean, so scale it the way Trainer would scale an unnormalised loss.
        scaled = self.loss_is_scaled_for_ga if self.loss_is_scaled_for_ga is not None else (
            (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None)
        steps = getattr(self, "current_gradient_accumulation_steps", 1)
        term = triplet / steps if scaled and model.training else triplet
        loss = ce + args.alpha * term
        if model.training:
            self.loss_history.append({"step": self.state.global_step, "ce": ce.item(), "triplet": triplet.item(),
                                      "loss": loss.item()})
        return (loss, outputs) if return_outputs else loss

    # -- answer_logits_only -----------------------------------------------------------------
    def _causal_lm(self, model):
        """The ``*ForCausalLM`` module under the accelerator's and peft's wrappers."""
        model = self.accelerator.unwrap_model(model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _answer_path_usable(self, model, inputs) -> bool:
        """Decided once, on the first batch: can the logits be computed from the decoder's last hidden
        state by the output embedding alone? (Not so for logit soft-capping or scaling.)"""
        usable = getattr(self, "_answer_path", None)
        if usable is not None:
            return usable
        causal = self._causal_lm(model)
        why = None
        if self.accelerator.num_processes > 1:
            why = "multi-process training"
        elif self.label_smoother is not None or self.compute_loss_func is not None:
            why = "label smoothing or a custom loss function"
        elif not (hasattr(causal, "get_decoder") and causal.get_output_embeddings() is not None):
            why = f"{type(causal).__name__} exposes no decoder and output embedding"
        else:
            ids, mask = inputs["input_ids"][:1, :32], inputs["attention_mask"][:1, :32]
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    want = model(input_ids=ids, attention_mask=mask).logits[0].float()
                    got = causal.get_output_embeddings()(
                        causal.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state[0]).float()
            finally:
                model.train(was_training)
            if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-4, atol=1e-4):
                why = f"{type(causal).__name__}'s logits are not its output embedding of the last hidden state"
        if why is not None:
            logger.warning("answer_logits_only: %s; using the standard loss path (logits at every position)", why)
        self._answer_path = why is None
        return self._answer_path

    def _answer_ce(self, model, inputs, num_items_in_batch):
        """``Trainer.compute_loss``'s causal-LM cross-entropy with logits only where a label follows."""
        from transformers.modeling_outputs import CausalLMOutputWithPast

        inputs = dict(inputs)
        labels = inputs.pop("labels")
        causal = self._causal_lm(model)
        out = causal.get_decoder()(**inputs, use_cache=False)
        target = labels[:, 1:]
        keep = target != IGNORE_INDEX
        logits = causal.get_output_embeddings()(out.last_hidden_state[:, :-1][keep]).float()
        # as transformers' ForCausalLMLoss: a sum over the accumulated batch's label tokens when
        # Trainer passes their count (models whose forward takes loss kwargs), else the mean
        items = num_items_in_batch if self.model_accepts_loss_kwargs else None
        ce = F.cross_entropy(logits, target[keep], reduction="sum" if items is not None else "mean")
        if items is not None:
            ce = ce / (items.to(ce.device) if torch.is_tensor(items) else items)
        return ce, CausalLMOutputWithPast(loss=ce, logits=None, hidden_states=out.hidden_states)
