"""Tokenizing preference rows exactly like evaluation, and batching chosen / rejected / source rows.

A completion is tokenized as in the reference method's SFT (:func:`consistbench.reference_method.collator.encode_row`):
the benchmark prompt as the chat template's user turn with the generation prompt (the text
``consistbench eval`` feeds the model), then the answer and the tokenizer's eos *id*. TRL's own
tokenization would add the eos as text and render the assistant turn through the template; ours
keeps the token prefix the model sees at evaluation, the same one part 1 trains on.

:class:`PreferenceCollator` extends TRL's ``DataCollatorForPreference`` layout: the batch holds the
chosen rows, then the rejected rows, then (WRPO) the source rows, right-padded together, with
``completion_mask`` marking the answer tokens. Columns holding reference log-probabilities
(``ref_*`` floats, ``mrpo_ref_*`` lists of floats, one per reference) become tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from consistbench.reference_method.collator import encode_row

COMPLETIONS = ("chosen", "rejected", "source")


def encode_completion(tokenizer, context: str, question: str, answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) for one answer; completion = template prefix + answer + eos id."""
    enc = encode_row(tokenizer, context, question, answer)
    cut = enc["prompt_length"]
    return enc["input_ids"][:cut], enc["input_ids"][cut:]


def tokenize_rows(rows: Sequence[dict], tokenizer, *, completions: Sequence[str], max_length: int | None
                  ) -> tuple[dict[str, list], int]:
    """Columns ``prompt_ids`` and ``<completion>_ids`` for each name in ``completions`` (row keys:
    ``chosen``, ``rejected``, ``source_chosen`` for ``source``), and how many rows were dropped
    because prompt + completion exceeds ``max_length`` (dropped, never truncated)."""
    out: dict[str, list] = {"prompt_ids": [], **{f"{c}_ids": [] for c in completions}, "row_index": []}
    dropped = 0
    for i, row in enumerate(rows):
        encoded = {}
        prompt = None
        for name in completions:
            key = "source_chosen" if name == "source" else name
            prompt, completion = encode_completion(tokenizer, row["context"], row["question"], row[key])
            encoded[name] = completion
        if max_length is not None and len(prompt) + max(len(c) for c in encoded.values()) > max_length:
            dropped += 1
            continue
        out["prompt_ids"].append(prompt)
        for name in completions:
            out[f"{name}_ids"].append(encoded[name])
        out["row_index"].append(i)
    return out, dropped


@dataclass
class PreferenceCollator:
    """Right-pads [chosen..., rejected..., source...] rows into one batch (TRL's layout, plus source)."""

    pad_token_id: int
    with_source: bool = False
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch
        from trl.trainer.utils import pad

        names = COMPLETIONS if self.with_source else COMPLETIONS[:2]
        ids, masks = [], []
        for name in names:
            for ex in examples:
                ids.append(torch.tensor(ex["prompt_ids"] + ex[f"{name}_ids"], dtype=torch.long))
                masks.append(torch.tensor([0] * len(ex["prompt_ids"]) + [1] * len(ex[f"{name}_ids"]), dtype=torch.long))
        out = {
            "input_ids": pad(ids, padding_value=self.pad_token_id, padding_side="right",
                             pad_to_multiple_of=self.pad_to_multiple_of),
            "attention_mask": pad([torch.ones_like(t) for t in ids], padding_value=0, padding_side="right",
                                  pad_to_multiple_of=self.pad_to_multiple_of),
            "completion_mask": pad(masks, padding_value=0, padding_side="right",
                                   pad_to_multiple_of=self.pad_to_multiple_of),
        }
        for key in examples[0]:
            if key.startswith(("ref_", "mrpo_ref_")):
                out[key] = torch.tensor([ex[key] for ex in examples], dtype=torch.float32)
        return out


def _backbone_and_head(model):
    """(backbone, LM head) of a plain or peft causal LM, or None when the head does more than a
    linear projection (soft-capping, logit scaling): those go through TRL's fused head instead."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None) not in (None, 1.0):
        return None
    backbone = getattr(base, getattr(base, "base_model_prefix", "model"), None)
    head = base.get_output_embeddings()
    if backbone is None or head is None or backbone is base:
        return None
    return backbone, head


def completion_logps(model, batch: dict[str, Any]):
    """Summed log-probability of each row's completion tokens (N,).

    Only the positions that predict a completion token go through the LM head (a few dozen per
    row instead of the whole prompt), computed here because TRL's fused, tiled head is several
    times slower on CPU (a full-logits forward over a 49k vocabulary is too). Same value as
    ``DPOTrainer``'s (tested against it). Models whose head is not a plain projection, and
    models patched with TRL's fused head that this cannot take apart, use that head instead.
    """
    import torch

    completion_mask = batch["completion_mask"]
    parts = _backbone_and_head(model)
    if parts is None:
        labels = batch["input_ids"].masked_fill(completion_mask == 0, -100)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                    use_cache=False, fused_lm_head=True)
        seq_len = completion_mask.shape[1] - 1
        return out.log_probs[:, -seq_len:].sum(dim=1)
    backbone, head = parts
    hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      use_cache=False).last_hidden_state
    predicts = completion_mask[:, 1:].bool()                   # position t predicts token t + 1
    rows = torch.nonzero(predicts, as_tuple=True)[0]
    states = hidden[:, :-1][predicts]                          # (n, H)
    targets = batch["input_ids"][:, 1:][predicts]              # (n,)
    logits = head(states).float()
    token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return torch.zeros(completion_mask.shape[0], dtype=token_logps.dtype,
                       device=token_logps.device).index_add(0, rows, token_logps)
