"""The ``typo`` family: the question with one or two character edits, never inside code.

An edit is one of :data:`ACTIONS`, applied to one plain word (:func:`spans.plain_words`: four or
more ASCII letters outside every code span), at most one edit per word:

- ``keyboard``: a letter replaced by a neighbour on a QWERTY keyboard (nlpaug ``KeyboardAug``);
- ``swap``: two adjacent letters exchanged (nlpaug ``RandomCharAug(action="swap")``);
- ``drop``: a letter deleted (nlpaug ``RandomCharAug(action="delete")``);
- ``duplicate``: a letter typed twice. nlpaug has no such action (its ``insert`` draws a random
  character at a random place), so this one is two lines here.

The number of edits (one or two), the words, the actions and nlpaug's own draws all come from
the seed, the question and nothing else: the same inputs give the same variant in any process.
nlpaug draws from Python's global ``random`` (and numpy's); both are seeded per call and their
previous states restored, so generating variants leaves the caller's random streams untouched.
Every proposal must pass the audit rule (:func:`consistbench.benchmark.noise_rules.check_typo`:
one or two Damerau-Levenshtein edits outside code tokens, code tokens unchanged); an edit that
turns a word into a Python name (``form`` -> ``from``) fails it and another word is tried.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import random
from dataclasses import dataclass

import numpy as np

from consistbench.benchmark.noise_rules import check_typo, edit_distance
from consistbench.benchmark.variants.spans import plain_words

ACTIONS = ("keyboard", "swap", "drop", "duplicate")
MAX_EDITS = 2
_TRIES_PER_WORD = 6


@dataclass(frozen=True)
class Edit:
    action: str
    start: int  # character offset of the word in the original question
    word: str
    typo: str

    def to_json(self) -> dict:
        return {"action": self.action, "start": self.start, "word": self.word, "typo": self.typo}


@dataclass(frozen=True)
class Typo:
    question: str
    edits: tuple[Edit, ...]
    seed: int

    def generator(self) -> dict:
        """What to record with the variant (the ``generator`` field of a variant row)."""
        import nlpaug

        return {"type": "typo", "seed": self.seed, "backend": f"nlpaug {nlpaug.__version__} char augmenters",
                "edits": [e.to_json() for e in self.edits]}


def _int_seed(*parts) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed the global ``random`` and numpy streams nlpaug draws from; restore them afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


@functools.lru_cache(maxsize=1)
def _augmenters() -> dict:
    import nlpaug.augmenter.char as nac

    one = dict(aug_char_min=1, aug_char_max=1, aug_char_p=1.0, aug_word_min=1, aug_word_max=1, aug_word_p=1.0,
               min_char=1)
    return {
        "keyboard": nac.KeyboardAug(include_special_char=False, include_numeric=False, include_upper_case=False, **one),
        "swap": nac.RandomCharAug(action="swap", swap_mode="adjacent", **one),
        "drop": nac.RandomCharAug(action="delete", **one),
    }


def edit_word(word: str, action: str, seed: int) -> str:
    """``word`` with one edit of the given kind (the seed decides where and how)."""
    if action == "duplicate":
        i = random.Random(seed).randrange(len(word))
        return word[:i + 1] + word[i:]
    if action not in ACTIONS:
        raise ValueError(f"unknown typo action {action!r} (expected one of {', '.join(ACTIONS)})")
    with _seeded(seed):
        out = _augmenters()[action].augment(word)
    return out[0] if isinstance(out, list) else out


def _one_edit_apart(word: str, typo: str) -> bool:
    return typo != word and typo.isascii() and typo.isalpha() and edit_distance(word, typo) == 1


def apply_edits(question: str, edits) -> str:
    """The question with the word edits applied (offsets refer to the original question)."""
    out = question
    for e in sorted(edits, key=lambda e: e.start, reverse=True):
        out = out[:e.start] + e.typo + out[e.start + len(e.word):]
    return out


def typo_variant(question: str, seed: int = 0) -> Typo | None:
    """One typo variant of ``question`` for ``seed``, or None when no plain word can take an edit."""
    rng = random.Random(_int_seed("typo", seed, question))
    words = plain_words(question)
    if not words:
        return None
    want = rng.choice((1, MAX_EDITS)) if len(words) > 1 else 1
    edits: list[Edit] = []
    for start, end in rng.sample(words, len(words)):
        if len(edits) == want:
            break
        word = question[start:end]
        for attempt in range(_TRIES_PER_WORD):
            action = rng.choice(ACTIONS)
            new = edit_word(word, action, _int_seed("typo", seed, question, start, attempt))
            if not _one_edit_apart(word, new):  # e.g. a swap of two equal letters, a case flip
                continue
            trial = [*edits, Edit(action, start, word, new)]
            if not check_typo(question, apply_edits(question, trial)):
                edits = trial
                break
    if not edits:
        return None
    edits.sort(key=lambda e: e.start)
    return Typo(apply_edits(question, edits), tuple(edits), seed)


def candidates(question: str, seed: int = 0, n: int = 1) -> list[Typo]:
    """Up to ``n`` distinct typo variants (seeds ``seed``, ``seed``+1, ... in a derived stream)."""
    out: dict[str, Typo] = {}
    for k in range(n * 3):
        if len(out) >= n:
            break
        t = typo_variant(question, seed if k == 0 else _int_seed("typo-more", seed, k))
        if t is not None and t.question not in out:
            out[t.question] = t
    return list(out.values())
