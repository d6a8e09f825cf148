"""Small text utilities shared by the audit and the variant filters.

Content words are lower-cased word tokens minus spaCy's English stop words, reduced with the
Porter stemmer (the same stemmer rouge-score uses), so "copies" and "copy" match.
"""

from __future__ import annotations

import functools
import re

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")


@functools.lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


@functools.lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


@functools.lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return _stemmer().stem(word)


def words(text: str) -> list[str]:
    """Word tokens (identifiers split at dots), lower-cased."""
    return [w.lower() for w in _WORD.findall(text)]


def content_stems(text: str) -> list[str]:
    """Stemmed content words of ``text`` (stop words removed)."""
    stop = _stop_words()
    return [_stem(w) for w in words(text) if w not in stop]


def coverage(answer: str, passage: str) -> float:
    """Share of the answer's content words (stemmed) that occur in the passage; 1.0 if none."""
    ans = content_stems(answer)
    if not ans:
        return 1.0
    have = set(content_stems(passage))
    return sum(1 for w in ans if w in have) / len(ans)


def normalise_question(text: str) -> str:
    """Lower-case, typographic quotes folded, whitespace collapsed, final '?' dropped."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").lower()
    return re.sub(r"\s+", " ", text).strip().rstrip("?").strip()
