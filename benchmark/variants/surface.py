"""The ``surface`` family: the question as a hurried user might type it, the words unchanged.

Transforms (each applies only outside code spans, :mod:`consistbench.benchmark.variants.spans`):

- ``lowercase``: every plain letter lower-cased (``IntFlag`` and ``ValueError`` keep their case);
- ``no_question_mark``: the final question mark dropped;
- ``space_before_punct``: a space put before ``? , ; : !`` ("do I ?", "files , or");
- ``no_space_after_punct``: the space after ``, ; :`` removed ("files,or").

A variant applies one transform or a combination of two or three, drawn from the seed and the
question among those that change this question, applied in :data:`TRANSFORMS` order; the ones
applied are recorded, each with a net effect on the result. Every
variant equals its original after :func:`consistbench.benchmark.noise_rules.surface_normal_form`
(case folded, whitespace ignored, a final question mark dropped); the audit checks exactly that.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from consistbench.benchmark.variants.spans import plain_mask

# Also the order they are applied in: dropping the final "?" first means a later space before
# punctuation is never put before a "?" that then disappears (a transform with no net effect).
TRANSFORMS = ("no_question_mark", "lowercase", "no_space_after_punct", "space_before_punct")
MAX_TRANSFORMS = 3
_BEFORE = "?,;:!"
_AFTER = ",;:"


@dataclass(frozen=True)
class Surface:
    question: str
    transforms: tuple[str, ...]
    seed: int

    def generator(self) -> dict:
        """What to record with the variant (the ``generator`` field of a variant row)."""
        return {"type": "surface", "seed": self.seed, "backend": "rules:surface", "transforms": list(self.transforms)}


def _lowercase(text: str) -> str:
    mask = plain_mask(text)
    return "".join(c.lower() if plain else c for c, plain in zip(text, mask))


def _no_question_mark(text: str) -> str:
    stripped = text.rstrip()
    if not stripped.endswith("?") or not plain_mask(stripped)[-1]:
        return text
    return stripped[:-1].rstrip()


def _space_before_punct(text: str) -> str:
    mask = plain_mask(text)
    out = []
    for i, c in enumerate(text):
        if c in _BEFORE and mask[i] and i > 0 and not text[i - 1].isspace():
            out.append(" ")
        out.append(c)
    return "".join(out)


def _no_space_after_punct(text: str) -> str:
    mask = plain_mask(text)
    drop = {i + 1 for i, c in enumerate(text[:-2])
            if c in _AFTER and mask[i] and text[i + 1] == " " and not text[i + 2].isspace()}
    return "".join(c for i, c in enumerate(text) if i not in drop)


_APPLY = {"lowercase": _lowercase, "no_question_mark": _no_question_mark,
          "space_before_punct": _space_before_punct, "no_space_after_punct": _no_space_after_punct}


def apply(question: str, transforms) -> str:
    """``question`` with the named transforms applied in the given order."""
    for name in transforms:
        if name not in _APPLY:
            raise ValueError(f"unknown surface transform {name!r} (expected one of {', '.join(TRANSFORMS)})")
        question = _APPLY[name](question)
    return question


def available(question: str) -> list[str]:
    """The transforms that change ``question``, in :data:`TRANSFORMS` order."""
    return [name for name in TRANSFORMS if _APPLY[name](question) != question]


def surface_variant(question: str, seed: int = 0) -> Surface | None:
    """One surface variant for ``seed`` (one to three transforms), or None when none applies."""
    rng = random.Random(int(hashlib.sha256(f"surface|{seed}|{question}".encode()).hexdigest()[:8], 16))
    avail = available(question)
    if not avail:
        return None
    want = rng.randint(1, min(MAX_TRANSFORMS, len(avail)))
    chosen = set(rng.sample(avail, want))
    text, done = question, []
    for name in TRANSFORMS:
        if name in chosen:
            new = _APPLY[name](text)
            if new != text:  # an earlier transform can leave nothing for this one to do
                text, done = new, [*done, name]
    text = re.sub(r"[ \t]+$", "", text)
    return Surface(text, tuple(done), seed)


def candidates(question: str, seed: int = 0, n: int = 1) -> list[Surface]:
    """Up to ``n`` distinct surface variants (different seeds)."""
    out: dict[str, Surface] = {}
    for k in range(n * 4):
        if len(out) >= n:
            break
        s = surface_variant(question, seed if k == 0 else int(hashlib.sha256(f"surface-more|{seed}|{k}".encode())
                                                               .hexdigest()[:8], 16))
        if s is not None and s.question not in out:
            out[s.question] = s
    return list(out.values())
