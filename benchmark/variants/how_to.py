"""The ``how_to`` variant type: one action phrase X asked in different how-to forms.

"How do I X?", "How can I X?", "How to X", "What is the way to X?" ... all ask the same thing.
A pair is a ``how_to`` variant when both questions parse as one of :data:`FORMS` with the same
X (character for character, after normalising typographic apostrophes) and they differ.
Every form may also be written without its question mark.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# The closed list of forms. "{x}" is the action phrase (a verb phrase in base form).
FORMS: tuple[str, ...] = (
    "How do I {x}?",
    "How can I {x}?",
    "How do you {x}?",
    "How should I {x}?",
    "How does one {x}?",
    "How to {x}?",
    "What is the way to {x}?",
    "What's the way to {x}?",
    "Is there a way to {x}?",
)
# Forms that put the asker in second or third person: an X that says "my"/"me" reads wrong there.
_IMPERSONAL_BREAKING = {"How do you {x}?", "How does one {x}?"}
_FIRST_PERSON = re.compile(r"\b(I|me|my|mine|myself)\b")

_PREFIXES = sorted({f.split("{x}")[0] for f in FORMS}, key=len, reverse=True)
_PREFIX_RE = re.compile(r"^\s*(" + "|".join(re.escape(p.strip()) for p in _PREFIXES) + r")\s+(.+?)\s*(\?)?\s*$",
                        re.IGNORECASE | re.DOTALL)


def normalise_quotes(text: str) -> str:
    """Map typographic quotes to ASCII so "What’s" and "What's" compare equal."""
    return text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')


@dataclass(frozen=True)
class HowTo:
    """A parsed how-to question: its form (as in :data:`FORMS`), action phrase and '?' flag."""

    form: str
    x: str
    question_mark: bool


def parse(question: str) -> HowTo | None:
    """Parse ``question`` as a how-to form, or return None if it is not one."""
    m = _PREFIX_RE.match(normalise_quotes(question))
    if not m:
        return None
    prefix, x, qmark = m.group(1), m.group(2).strip(), m.group(3)
    for form in FORMS:
        if form.split("{x}")[0].strip().lower() == prefix.lower():
            return HowTo(form, x, bool(qmark))
    return None  # pragma: no cover - the regex only matches known prefixes


def render(form: str, x: str, question_mark: bool = True) -> str:
    text = form.format(x=x)
    return text if question_mark else text.rstrip("?")


def is_variant(original: str, variant: str) -> bool:
    """True when ``variant`` is a how-to rewrite of ``original`` (same X, different surface)."""
    a, b = parse(original), parse(variant)
    if a is None or b is None:
        return False
    return a.x == b.x and (a.form, a.question_mark) != (b.form, b.question_mark)


def candidates(question: str) -> list[str]:
    """Every how-to rewrite of ``question`` (empty if it is not a how-to question), in FORMS order.

    Forms in second/third person are left out when X speaks in first person ("my script").
    """
    parsed = parse(question)
    if parsed is None:
        return []
    out = []
    first_person = bool(_FIRST_PERSON.search(parsed.x))
    for form in FORMS:
        if first_person and form in _IMPERSONAL_BREAKING:
            continue
        for qmark in (True, False):
            if (form, qmark) == (parsed.form, parsed.question_mark):
                continue
            text = render(form, parsed.x, qmark)
            if text not in out:
                out.append(text)
    return out


def generate(question: str, n: int = 1, seed: int = 0) -> list[str]:
    """Up to ``n`` distinct how-to rewrites, chosen deterministically from ``seed`` and the text."""
    pool = candidates(question)
    rng = random.Random(f"{seed}|how_to|{question}")
    rng.shuffle(pool)
    return pool[:n]
