"""The ``how_to`` variant type: one action phrase X asked in the how-to / how-do alternation.

Definition (Peng et al. 2025, "how to/do" variants, made by rules): the same request for a
procedure, "How do I reset my PIN?" <-> "How to reset my PIN", with the action phrase X kept
character for character. This module defines the type once, for the data build, the audit,
training data and ``consistbench variants``:

- :data:`TYPE_FORMS`: the forms of the type, "How to X", "How do I X", "How do you X",
  "How do we X", "How does one X" (each with or without its question mark). A ``how_to``
  variant is always one of them.
- :data:`MODAL_FORMS`: "How can I X", "How should I X". An original may have one (its variant
  is then a type form); such modal pairs are allowed only as a minority of a data set.
- :data:`OTHER_FORMS`: "What is / What's the way to X", "Is there a way to X". They are read
  (older data and users' queries use them) but never produced, and a pair using one is not of
  the type: they change the question's type (a request for a name, a yes/no question).

:func:`rewrite` is the rule that picks one variant per question (the core "How to X" <-> "How
do I X" pair for most questions, a pronoun alternation for some); :func:`candidates` lists every
allowed variant, the rule's choice first. :func:`pair_kind` classifies a pair (core, pronoun,
modal), and :func:`form_problem` says why a pair is not of the type.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

# The forms of the type. "{x}" is the action phrase (a verb phrase in base form).
TYPE_FORMS: tuple[str, ...] = (
    "How to {x}?",
    "How do I {x}?",
    "How do you {x}?",
    "How do we {x}?",
    "How does one {x}?",
)
# Modal forms: allowed as an original's form (a minority of pairs), never produced as a variant.
MODAL_FORMS: tuple[str, ...] = ("How can I {x}?", "How should I {x}?")
# Forms that change the question type: parsed, never produced, never part of a pair of the type.
OTHER_FORMS: tuple[str, ...] = ("What is the way to {x}?", "What's the way to {x}?", "Is there a way to {x}?")
# Every form the parser reads.
FORMS: tuple[str, ...] = (*TYPE_FORMS, *MODAL_FORMS, *OTHER_FORMS)
# The paper's pair: "How to X" <-> "How do I X".
CORE_FORMS = frozenset({"How to {x}?", "How do I {x}?"})

# Forms that put the asker in second or third person (or make them plural): an X that says
# "my"/"me"/"I" reads wrong there ("How does one reset my PIN?").
_IMPERSONAL = {"How do you {x}?", "How do we {x}?", "How does one {x}?"}
_FIRST_PERSON = re.compile(r"\b(I|me|my|mine|myself)\b")

# The rule's choice for each original form: (variant form, question mark) with a weight. For
# "How do I X?" originals, about 70 % get the core pair ("How to X", the paper's example has no
# question mark) and 30 % a pronoun alternation; an X in first person always gets "How to X".
_CHOICES: dict[str, tuple[tuple[str, bool, int], ...]] = {
    "How do I {x}?": (("How to {x}?", False, 45), ("How to {x}?", True, 25), ("How do you {x}?", True, 15),
                      ("How does one {x}?", True, 10), ("How do we {x}?", True, 5)),
    "How to {x}?": (("How do I {x}?", True, 100),),
    "How do you {x}?": (("How to {x}?", False, 60), ("How do I {x}?", True, 40)),
    "How do we {x}?": (("How to {x}?", False, 60), ("How do I {x}?", True, 40)),
    "How does one {x}?": (("How to {x}?", False, 60), ("How do I {x}?", True, 40)),
    "How can I {x}?": (("How to {x}?", False, 50), ("How do I {x}?", True, 50)),
    "How should I {x}?": (("How to {x}?", False, 50), ("How do I {x}?", True, 50)),
}

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
    """True when both parse as how-to forms with the same X and differ in form or '?'.

    The structural test (any form the parser reads); :func:`form_problem` says whether the pair
    is of the type as this project defines it.
    """
    a, b = parse(original), parse(variant)
    if a is None or b is None:
        return False
    return a.x == b.x and (a.form, a.question_mark) != (b.form, b.question_mark)


def _allowed(parsed: HowTo, form: str) -> bool:
    return not (form in _IMPERSONAL and _FIRST_PERSON.search(parsed.x))


def form_problem(original: str, variant: str) -> str | None:
    """Why (``original``, ``variant``) is not a pair of the type, or None when it is.

    The variant must be in a type form; the original in a type form or a modal form; an X in
    first person never appears in a second/third-person form. The X must match (see
    :func:`is_variant`); this checks the forms only.
    """
    a, b = parse(original), parse(variant)
    if a is None or b is None:
        return "not a how-to form"
    if b.form not in TYPE_FORMS:
        return f"variant form {b.form.replace('{x}', 'X')!r} is outside the type (allowed: " \
               + ", ".join(f.replace("{x}", "X").rstrip("?") for f in TYPE_FORMS) + ")"
    if a.form not in TYPE_FORMS and a.form not in MODAL_FORMS:
        return f"original form {a.form.replace('{x}', 'X')!r} changes the question type; no how_to variant"
    if not _allowed(a, b.form):
        return f"first-person action phrase in {b.form.replace('{x}', 'X')!r}"
    return None


def pair_kind(original: str, variant: str) -> str | None:
    """``"core"`` (How to X <-> How do I X), ``"pronoun"`` (other type forms), ``"modal"`` (the
    original is a modal form), or None when the pair is not of the type."""
    if not is_variant(original, variant) or form_problem(original, variant):
        return None
    a, b = parse(original), parse(variant)
    if a.form in MODAL_FORMS:
        return "modal"
    return "core" if {a.form, b.form} == CORE_FORMS else "pronoun"


def _weighted_order(parsed: HowTo, key: str) -> list[tuple[str, bool]]:
    """The rule's choices for ``parsed``, ordered by a weighted draw seeded by ``key``."""
    choices = [(f, q, w) for f, q, w in _CHOICES.get(parsed.form, ()) if _allowed(parsed, f)]
    rng = random.Random(int(hashlib.sha256(f"how_to|{key}".encode("utf-8")).hexdigest()[:16], 16))
    order = []
    while choices:
        pick = rng.uniform(0, sum(w for _, _, w in choices))
        for i, (f, q, w) in enumerate(choices):
            pick -= w
            if pick <= 0 or i == len(choices) - 1:
                order.append((f, q))
                choices.pop(i)
                break
    return order


def rewrite(question: str, key: str = "") -> str | None:
    """The rule's one ``how_to`` variant of ``question`` (None when it has none): deterministic
    for (``question``, ``key``); the data build passes the group id as ``key``."""
    parsed = parse(question)
    if parsed is None:
        return None
    order = _weighted_order(parsed, f"{key}|{question}")
    return render(order[0][0], parsed.x, order[0][1]) if order else None


def candidates(question: str, key: str = "") -> list[str]:
    """Every allowed ``how_to`` variant of ``question`` (empty if it has none): the rule's
    weighted order first, then the other type forms, each with and without '?'."""
    parsed = parse(question)
    if parsed is None or (parsed.form not in TYPE_FORMS and parsed.form not in MODAL_FORMS):
        return []
    out = []
    ordered = _weighted_order(parsed, f"{key}|{question}")
    rest = [(f, q) for f in TYPE_FORMS for q in (True, False) if _allowed(parsed, f)]
    for form, qmark in ordered + rest:
        if (form, qmark) == (parsed.form, parsed.question_mark):
            continue
        text = render(form, parsed.x, qmark)
        if text not in out:
            out.append(text)
    return out


def generate(question: str, n: int = 1, seed: int = 0) -> list[str]:
    """Up to ``n`` distinct how-to variants in the rule's order (deterministic for ``seed``)."""
    return candidates(question, key=str(seed))[:n]
