"""The one prompt format: retrieved context plus question, shared by evaluation and training.

The lm-eval tasks render :func:`prompt_text` as ``doc_to_text``; ``consistbench eval`` wraps it
in the model's chat template as the user turn when the model has one (as ``lm_eval
--apply_chat_template`` does). The reference-method trainer builds exactly the same text, so a
fine-tuned model is evaluated on the prompt it was trained on. :func:`question_span` tells the
trainer which characters are the query, for pooling its hidden states.
"""

from __future__ import annotations

INSTRUCTION = "Answer the question using only the context. Reply in one or two sentences."
TEMPLATE = "{instruction}\n\nContext:\n{context}\n\nQuestion: {question}\nAnswer:"
# Generation settings of the benchmark (greedy); recorded in the task YAMLs too.
MAX_GEN_TOKS = 64
STOP_SEQUENCES = ("\n\n", "\nQuestion:", "<|im_end|>")


def prompt_text(context: str, question: str) -> str:
    """The prompt for one row: instruction, context, question, then 'Answer:'."""
    return TEMPLATE.format(instruction=INSTRUCTION, context=context.strip(), question=question.strip())


def question_span(context: str, question: str) -> tuple[int, int]:
    """Character [start, end) of the question inside :func:`prompt_text`'s output."""
    text = prompt_text(context, question)
    marker = "\n\nQuestion: "
    start = text.rindex(marker) + len(marker)
    return start, start + len(question.strip())
