"""The audit rules of the robust families (typo, surface, template), defined once.

Used by ``consistbench data audit`` (through :mod:`consistbench.benchmark.audit`), by the robust
build and by the generators themselves (a proposal that breaks its rule is never kept):

- ``typo``: the variant differs from its original by one or two character edits (Damerau-
  Levenshtein: insertion, deletion, substitution, transposition of adjacent characters) in the
  plain text, and its code tokens (:mod:`consistbench.benchmark.variants.spans`) are the
  original's, unchanged and in the same order;
- ``surface``: the variant differs from its original but equals it after
  :func:`surface_normal_form` (case folded, whitespace ignored, a final question mark dropped);
- ``template``: the variant row carries its original's question and passage verbatim, names a
  template of the set, and that template's prompt contains both verbatim.
"""

from __future__ import annotations

import functools
import re

from consistbench.benchmark.audit_rules import Problem
from consistbench.benchmark.paths import TASK_DIR
from consistbench.benchmark.variants.spans import code_tokens, skeleton
from consistbench.benchmark.variants.template import DEFAULT_ID, load_templates

TYPO_MAX_EDITS = 2
_NORMAL_TOKEN = re.compile(r"\w+|[^\w\s]")


def edit_distance(a: str, b: str) -> int:
    """Damerau-Levenshtein distance (NLTK's ``edit_distance`` with transpositions).

    A common prefix and suffix cannot change the distance, so they are removed first: a typo
    variant of a 100-character question then costs a few cells instead of 10,000.
    """
    import nltk

    if a == b:
        return 0
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    return nltk.edit_distance(a[start:len(a) - end], b[start:len(b) - end], transpositions=True)


def _basic(variant: str, original: str, kind: str) -> list[Problem]:
    if not variant.strip():
        return [Problem(f"{kind}_empty", "variant is empty")]
    if variant == original:
        return [Problem(f"{kind}_identical", "variant equals the original")]
    return []


def check_typo(original: str, variant: str) -> list[Problem]:
    """One or two character edits outside code tokens; code tokens unchanged."""
    basic = _basic(variant, original, "typo")
    if basic:
        return basic
    problems = []
    before, after = code_tokens(original), code_tokens(variant)
    if before != after:
        changed = next((f"{a!r} -> {b!r}" for a, b in zip(before, after) if a != b),
                       f"{len(before)} code tokens -> {len(after)}")
        problems.append(Problem("typo_code_tokens", f"code tokens changed ({changed})"))
    d = edit_distance(skeleton(original), skeleton(variant))
    if not 1 <= d <= TYPO_MAX_EDITS:
        problems.append(Problem("typo_edits", f"{d} character edits outside code tokens, allowed 1-{TYPO_MAX_EDITS}"))
    return problems


def surface_normal_form(text: str) -> tuple[str, ...]:
    """Word and punctuation tokens, case-folded, whitespace ignored, a final '?' dropped."""
    tokens = _NORMAL_TOKEN.findall(text.casefold())
    while tokens and tokens[-1] == "?":
        tokens.pop()
    return tuple(tokens)


def check_surface(original: str, variant: str) -> list[Problem]:
    """Differs from the original, equal to it after case/whitespace/punctuation normalisation."""
    basic = _basic(variant, original, "surface")
    if basic:
        return basic
    if surface_normal_form(variant) != surface_normal_form(original):
        return [Problem("surface_rule", "differs from the original beyond case, whitespace and a final '?'")]
    return []


@functools.lru_cache(maxsize=1)
def shipped_templates() -> dict:
    """The shipped template set (``tasks/consistency/templates.yaml``) by id."""
    return {t.id: t for t in load_templates(TASK_DIR / "templates.yaml")}


def check_template(original_question: str, original_context: str, question: str, context: str,
                   template_id: str | None, templates: dict | None = None) -> list[Problem]:
    """Question and passage verbatim, a known template, both verbatim in its prompt."""
    problems = []
    if question != original_question:
        problems.append(Problem("template_verbatim", "question differs from the original's"))
    if context != original_context:
        problems.append(Problem("template_verbatim", "passage differs from the original's"))
    templates = shipped_templates() if templates is None else templates
    if not template_id or template_id == DEFAULT_ID or template_id not in templates:
        problems.append(Problem("template_unknown", f"template_id {template_id!r} is not in the template set"))
        return problems
    prompt = templates[template_id].render(context, question)
    if question.strip() not in prompt or context.strip() not in prompt:
        problems.append(Problem("template_verbatim", f"template {template_id!r} does not show the question and "
                                                     "passage verbatim"))
    return problems


def check_robust_variant(original, variant, templates: dict | None = None) -> list[Problem]:
    """The rule of ``variant``'s family for a pair of :class:`~consistbench.benchmark.schema.Row`."""
    kind = variant.variant_type
    if kind == "typo":
        return check_typo(original.question, variant.question)
    if kind == "surface":
        return check_surface(original.question, variant.question)
    if kind == "template":
        return check_template(original.question, original.context, variant.question, variant.context,
                              variant.extra.get("template_id"), templates)
    return [Problem("variant_type", f"not a robust family: {kind!r}")]
