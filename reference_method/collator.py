"""Turning a data row into training tokens, and batching rows for the trainer.

One training sequence is the benchmark prompt (:func:`consistbench.benchmark.prompting.prompt_text`) followed
by the reference answer and the tokenizer's eos token:

- with a chat template, the prompt is the *user* turn and the generation prompt is added
  (``apply_chat_template([{"role": "user", ...}], add_generation_prompt=True)``), exactly what
  ``consistbench eval`` / ``lm_eval --apply_chat_template`` feed the model; the answer is
  whatever the template puts between the generation prompt and the reference (usually nothing,
  " " for a completion-style template) plus the reference;
- without one, the raw prompt, then " " + reference (the prompt ends with "Answer:").

The prompt and the answer are tokenized separately, the prompt the way lm-eval's ``hf`` model
encodes a generation context (the tokenizer's own special tokens, unless the text already starts
with the bos token, as a chat template's output usually does), so the model is trained on
precisely the token prefix it sees at evaluation. The answer gets no special tokens, and the eos
id is appended as an id, never as text (a special token written as text can be split by a
tokenizer with a context-dependent normaliser).

The query tokens (for pooling hidden states in the triplet loss) are the prompt tokens whose
character offsets overlap :func:`consistbench.benchmark.prompting.question_span`.

:class:`CompletionCollator` pads on the right and sets labels to -100 on the prompt and on
padding, never on the eos: the mask comes from each sequence's length, not from comparing ids
with ``pad_token_id`` (a collator that masks ``labels == pad_token_id`` silently removes the eos
whenever pad == eos, and the model never learns to stop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.prompting import prompt_text, question_span

IGNORE_INDEX = -100
TRIPLET_ROLES = ("anchor", "positive", "negative")


def render_prompt(tokenizer, context: str, question: str) -> tuple[str, int, str]:
    """(text fed to the model, offset of the benchmark prompt inside it, answer prefix).

    ``answer prefix`` is what the chat template writes between the generation prompt and the
    assistant's content ("" for ChatML-style templates, " " for the raw prompt).
    """
    prompt = prompt_text(context, question)
    if not getattr(tokenizer, "chat_template", None):
        return prompt, 0, " "
    messages = [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    offset = text.find(prompt)
    if offset < 0:
        raise ConsistbenchError("the chat template changes the prompt text (cannot locate the question in it)")
    marker = "\x00CONSISTBENCH_ANSWER\x00"
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": marker}], tokenize=False)
    prefix = ""
    if full.startswith(text) and marker in full:
        prefix = full[len(text):full.index(marker)]
    return text, offset, prefix


def encode_question(tokenizer, question: str) -> dict[str, Any]:
    """The question alone, as the prompt is rendered (the user turn of the chat template, or raw),
    cut after its last token (later tokens cannot change its states), and its token span: what
    ``pooled_positions="question_only"`` pools."""
    q = question.strip()
    text, offset = q, 0
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True)
        offset = text.find(q)
        if offset < 0:
            raise ConsistbenchError("the chat template changes the question text (cannot locate it)")
    starts_with_bos = bool(tokenizer.bos_token) and text.startswith(tokenizer.bos_token)
    enc = tokenizer(text, add_special_tokens=not starts_with_bos, return_offsets_mapping=True)
    span = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s < offset + len(q) and e > offset]
    if not span:
        raise ConsistbenchError(f"no token covers the question {question[:60]!r}")
    return {"question_ids": list(enc["input_ids"][:span[-1] + 1]), "question_query_start": span[0],
            "question_query_end": span[-1] + 1}


def encode_row(tokenizer, context: str, question: str, reference: str, *,
               question_only: bool = False) -> dict[str, Any]:
    """Token ids of prompt + answer + eos, the prompt length and the query token span (and, with
    ``question_only``, the question alone: :func:`encode_question`)."""
    if tokenizer.eos_token_id is None:
        raise ConsistbenchError("the tokenizer has no eos token: the model could never learn to stop")
    if not getattr(tokenizer, "is_fast", False):
        raise ConsistbenchError("a fast tokenizer (with offset mappings) is needed to find the query tokens")
    text, offset, prefix = render_prompt(tokenizer, context, question)
    starts_with_bos = bool(tokenizer.bos_token) and text.startswith(tokenizer.bos_token)
    enc = tokenizer(text, add_special_tokens=not starts_with_bos, return_offsets_mapping=True)
    prompt_ids = list(enc["input_ids"])
    q_start, q_end = question_span(context, question)
    q_start, q_end = q_start + offset, q_end + offset
    query = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s < q_end and e > q_start]
    if not query:
        raise ConsistbenchError(f"no token covers the question {question[:60]!r}")
    answer_ids = list(tokenizer(prefix + reference.strip(), add_special_tokens=False)["input_ids"])
    out = {"input_ids": prompt_ids + answer_ids + [tokenizer.eos_token_id], "prompt_length": len(prompt_ids),
           "query_start": query[0], "query_end": query[-1] + 1}
    if question_only:
        out.update(encode_question(tokenizer, question))
    return out


@dataclass
class CompletionCollator:
    """Right-pads sequences; labels are the answer tokens (eos included), -100 elsewhere.

    Features are either single encoded rows (``input_ids``, ``prompt_length``, ``query_start``,
    ``query_end``) or triplets ``{"anchor": row, "positive": row, "negative": row}``. A batch of
    B triplets becomes 3B sequences in the order anchors, positives, negatives; ``query_mask``
    (3B x L, 1.0 on query tokens) tells the trainer what to pool (rows carry it too: it tells
    ``share_prefix`` where their question starts). Rows encoded with ``question_only`` add
    ``question_input_ids``, ``question_attention_mask`` and ``question_query_mask`` (the question
    alone, right-padded).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if not features:
            raise ValueError("empty batch")
        triplets = "anchor" in features[0]
        rows = [f[role] for role in TRIPLET_ROLES for f in features] if triplets else list(features)
        length = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(rows)
        input_ids = torch.full((n, length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((n, length), dtype=torch.long)
        labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
        query_mask = torch.zeros((n, length), dtype=torch.float32)
        for i, row in enumerate(rows):
            ids = torch.tensor(row["input_ids"], dtype=torch.long)
            size, start = len(ids), row["prompt_length"]
            if not 0 < start < size:
                raise ValueError(f"prompt_length {start} outside a sequence of {size} tokens (no answer tokens)")
            input_ids[i, :size] = ids
            attention_mask[i, :size] = 1
            labels[i, start:size] = ids[start:]  # the answer and its eos; the prompt stays -100
            query_mask[i, row["query_start"]:row["query_end"]] = 1.0
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "query_mask": query_mask}
        if all("question_ids" in r for r in rows):
            width = max(len(r["question_ids"]) for r in rows)
            q_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
            q_attn = torch.zeros((n, width), dtype=torch.long)
            q_mask = torch.zeros((n, width), dtype=torch.float32)
            for i, row in enumerate(rows):
                size = len(row["question_ids"])
                q_ids[i, :size] = torch.tensor(row["question_ids"], dtype=torch.long)
                q_attn[i, :size] = 1
                q_mask[i, row["question_query_start"]:row["question_query_end"]] = 1.0
            batch.update(question_input_ids=q_ids, question_attention_mask=q_attn, question_query_mask=q_mask)
        return batch
