"""Generate filtered, deterministic variants of many questions at once.

Every proposal from a generator passes the same rules the audit applies to shipped data
(:func:`consistbench.benchmark.audit_rules.check_variant`): not empty, different from the original, a real
variant of its type, and for every type the meaning kept (embedded MiniLM cosine of at least
:data:`VARIANT_MIN_COSINE`). Results depend only on the questions, the settings and the seed.

The noise families ``typo`` and ``surface`` pass their own rules instead
(:mod:`consistbench.benchmark.noise_rules`: one or two character edits outside code tokens;
equal after case/whitespace/punctuation normalisation). Those rules keep the meaning by
construction, so the encoder threshold is not applied to them; their cosine is recorded all the
same, and the generator record carries the edits or transforms.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consistbench.benchmark.audit_rules import PARAPHRASE_MIN_COSINE, check_variant
from consistbench.benchmark.embedded import encode
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.noise_rules import check_surface, check_typo
from consistbench.benchmark.text import normalise_question
from consistbench.benchmark.variants import NOISE_TYPES, VARIANT_TYPES, how_to, plural_article, surface, typo
from consistbench.benchmark.variants.paraphrase import Paraphraser

# The meaning-kept threshold for generated variants of every type (same as the audit's).
VARIANT_MIN_COSINE = PARAPHRASE_MIN_COSINE


@dataclass(frozen=True)
class Variant:
    index: int  # position of the original in the input
    variant_type: str
    question: str
    cosine: float
    generator: dict


def _rule_candidates(kind: str, question: str, seed: int) -> list[str]:
    """A rule type's proposals in the order they are tried: ``how_to`` in its rule's own weighted
    order (mostly the core "How to X" <-> "How do I X" pair, as the shipped data), ``plural_article``
    shuffled by the seed."""
    if kind == "how_to":
        return how_to.candidates(question, key=str(seed))
    pool = plural_article.candidates(question)
    random.Random(f"{seed}|{kind}|{question}").shuffle(pool)
    return pool


def _noise_candidates(kind: str, question: str, seed: int, n: int) -> list[tuple[str, dict]]:
    module = typo if kind == "typo" else surface
    return [(c.question, c.generator()) for c in module.candidates(question, seed, n)]


def _noise_ok(kind: str, original: str, variant: str) -> bool:
    return not (check_typo if kind == "typo" else check_surface)(original, variant)


def generate_variants(questions: Sequence[str], types: Sequence[str] = VARIANT_TYPES, *, n: int = 1, seed: int = 0,
                      paraphraser: Paraphraser | None = None, oversample: int = 3, encoder: str | None = None,
                      progress: Callable[[str, int], None] | None = None) -> list[Variant]:
    """Up to ``n`` accepted variants per question and type, in input order then type order."""
    known = (*VARIANT_TYPES, *NOISE_TYPES)
    unknown = [t for t in types if t not in known]
    if unknown:
        raise ConsistbenchError(f"unknown variant type {unknown[0]!r} (expected {', '.join(known)})")
    if "paraphrase" in types and paraphraser is None:
        raise ConsistbenchError("paraphrase variants need a paraphraser backend")
    proposals: dict[tuple[int, str], list[str]] = {}
    noise_info: dict[tuple[int, str, str], dict] = {}  # (question, type, candidate) -> generator record
    for kind in types:
        if kind in NOISE_TYPES:
            for i, q in enumerate(questions):
                cands = _noise_candidates(kind, q, seed, n)
                proposals[(i, kind)] = [c for c, _ in cands]
                noise_info.update({(i, kind, c): info for c, info in cands})
        elif kind == "paraphrase":
            outs = paraphraser.paraphrase(list(questions), n=n * oversample, seed=seed)
            for i, cands in enumerate(outs):
                proposals[(i, kind)] = cands
        else:
            for i, q in enumerate(questions):
                proposals[(i, kind)] = _rule_candidates(kind, q, seed)
        if progress:
            progress(kind, len(questions))
    # Score meaning preservation for every distinct (original, candidate) in one encoder pass.

    flat = sorted({(questions[i], c) for (i, _), cands in proposals.items() for c in cands if c and c.strip()})
    texts = sorted({t for pair in flat for t in pair})
    index = {t: k for k, t in enumerate(texts)}
    emb = encode(texts, encoder) if texts else None
    accepted: list[Variant] = []
    for i, q in enumerate(questions):
        for kind in types:
            seen = {normalise_question(q)}
            kept = 0
            for cand in proposals.get((i, kind), []):
                if kept >= n:
                    break
                if kind in NOISE_TYPES:  # their own rules; normalise_question would call a surface variant identical
                    if not _noise_ok(kind, q, cand):
                        continue
                    accepted.append(Variant(i, kind, cand, round(float(emb[index[q]] @ emb[index[cand]]), 4),
                                            noise_info[(i, kind, cand)]))
                    kept += 1
                    continue
                if not cand or not cand.strip() or normalise_question(cand) in seen:
                    continue
                cos = float(emb[index[q]] @ emb[index[cand]])
                if cos < VARIANT_MIN_COSINE or check_variant(kind, q, cand, cosine=cos):
                    continue
                seen.add(normalise_question(cand))
                gen = {"type": kind, "seed": seed,
                       "backend": paraphraser.describe() if kind == "paraphrase" else f"rules:{kind}"}
                accepted.append(Variant(i, kind, cand, round(cos, 4), gen))
                kept += 1
    return accepted
