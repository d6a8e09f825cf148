"""The quality rules every shipped question, answer and variant must meet, defined once.

Used by ``consistbench data audit`` (on built data files) and by the variant filters (on
generated variants). Thresholds were calibrated on hand-checked pairs; see docs/DATACARD.
"""

from __future__ import annotations

from dataclasses import dataclass

from consistbench.benchmark import text
from consistbench.benchmark.metrics import rouge_l
from consistbench.benchmark.variants import how_to, plural_article

# A reference answer is grounded when at least this share of its content words (stemmed,
# stop words removed) occurs in its passage.
GROUNDING_MIN_COVERAGE = 0.70
REFERENCE_MIN_WORDS = 3
REFERENCE_MAX_WORDS = 60
# A paraphrase must differ lexically (ROUGE-L F1 against the original below the bound) and keep
# the meaning (cosine of the embedded MiniLM sentence embeddings at least the bound).
PARAPHRASE_MAX_ROUGE = 0.70
PARAPHRASE_MIN_COSINE = 0.60
# Two base questions this similar (MiniLM cosine) are near-duplicates, within or across splits.
NEAR_DUPLICATE_COSINE = 0.95


@dataclass(frozen=True)
class Problem:
    """One rule violation: which rule, and a short human explanation."""

    rule: str
    detail: str


def check_reference(reference: str, passage: str) -> list[Problem]:
    problems = []
    n = len(reference.split())
    if n < REFERENCE_MIN_WORDS or n > REFERENCE_MAX_WORDS:
        problems.append(Problem("reference_length", f"{n} words, allowed {REFERENCE_MIN_WORDS}-{REFERENCE_MAX_WORDS}"))
    cov = text.coverage(reference, passage)
    if cov < GROUNDING_MIN_COVERAGE:
        problems.append(Problem("grounding", f"content-word coverage {cov:.2f} < {GROUNDING_MIN_COVERAGE}"))
    return problems


def check_variant(variant_type: str, original: str, variant: str, cosine: float | None = None) -> list[Problem]:
    """Is ``variant`` a real variant of ``original`` of the given type? ``cosine`` for paraphrases."""
    if not variant.strip():
        return [Problem("empty", "variant is empty")]
    if text.normalise_question(variant) == text.normalise_question(original):
        return [Problem("identical", "variant equals the original")]
    if variant_type == "how_to":
        if not how_to.is_variant(original, variant):
            return [Problem("how_to_rule", "not a rewrite between two how-to forms with the same action phrase")]
        return []
    if variant_type == "plural_article":
        if not plural_article.is_variant(original, variant):
            return [Problem("plural_article_rule", "differs in more than noun number, agreement and articles")]
        return []
    if variant_type == "paraphrase":
        problems = []
        r = rouge_l(variant, original)
        if r >= PARAPHRASE_MAX_ROUGE:
            problems.append(Problem("paraphrase_lexical", f"ROUGE-L {r:.2f} >= {PARAPHRASE_MAX_ROUGE}"))
        if cosine is not None and cosine < PARAPHRASE_MIN_COSINE:
            problems.append(Problem("paraphrase_meaning", f"encoder cosine {cosine:.2f} < {PARAPHRASE_MIN_COSINE}"))
        if how_to.is_variant(original, variant) or plural_article.is_variant(original, variant):
            problems.append(Problem("paraphrase_is_rule_variant", "only a how-to or number/article change"))
        return problems
    return [Problem("variant_type", f"unknown variant type {variant_type!r}")]
