"""Which characters of a question are code: the spans that typo and surface noise never touch.

Questions about Python mix prose with code: ``connect()``, ``os.path``, ``__annotations__``,
``UnboundLocalError``, ``argparse``, ``“2.2+”``, ``default=0``, ``.*[.][^b].*$``. A typo in
``lru_cache`` or a lower-cased ``IntFlag`` changes what is asked, so the noise generators edit
only the *plain* text around such tokens and the audit checks the code tokens are unchanged.

Protected, in this order (overlaps merge):

1. backticked literals (```x```);
2. quoted literals: “…”, ‘…’, "…", '…' opened after whitespace or an opening bracket and closed
   before whitespace, punctuation or the end (an apostrophe inside a word opens nothing);
3. URLs (``http://``, ``https://``, ``ftp://``, ``www.``);
4. whitespace-separated tokens (trailing sentence punctuation ``?.,;:!`` set aside) that are code:
   any digit (numbers, ``IPv4``, ``utf8``); any of ``_ . ( ) [ ] { } < > / \\ = * + # @ $ % ^ & | ~ : ;``
   inside (dotted names, calls, operators, paths); a leading ``-`` (options); a capital letter
   after a part's first character (``IntFlag``, ``DLL``, ``OS-specific``); a part that is a Python
   keyword, built-in name or standard-library module name (``keyword.kwlist``, ``builtins``,
   ``sys.stdlib_module_names``: ``enum``, ``len``, ``None``); or no letter or digit at all
   (``*``, ``+``, a ``?`` inside the sentence).

Over-protecting a plain word costs nothing (the noise lands on another word); missing a code
token would change the question, so the rules err on the side of code. No library finds inline
code in prose, hence these rules by hand.
"""

from __future__ import annotations

import builtins
import functools
import keyword
import re
import sys

SENTENCE_PUNCT = "?.,;:!"
CODE_CHARS = frozenset("_.()[]{}<>/\\=*+#@$%^&|~:;`")
_BACKTICK = re.compile(r"`[^`]*`")
_QUOTED = re.compile(r"(?<![^\s(\[{])(“[^”]*”|‘[^’]*’|\"[^\"]*\"|'[^']*')(?![^\s.,;:!?)\]}])")
_URL = re.compile(r"(?:(?:https?|ftp)://|www\.)\S+")
_TOKEN = re.compile(r"\S+")
_PART_SPLIT = re.compile(r"[-'’]")
# A word the typo generator may edit: ASCII letters only, at least four of them, not part of a
# longer run of letters (so "Can’t" offers nothing: "Can" is too short).
TYPO_MIN_LETTERS = 4
_PLAIN_WORD = re.compile(r"(?<![A-Za-z])[A-Za-z]{%d,}(?![A-Za-z])" % TYPO_MIN_LETTERS)


@functools.lru_cache(maxsize=1)
def python_names() -> frozenset[str]:
    """Python's own vocabulary: keywords, built-in names and standard-library module names."""
    names = set(keyword.kwlist) | set(getattr(keyword, "softkwlist", ())) | set(dir(builtins))
    names |= set(getattr(sys, "stdlib_module_names", ()))
    return frozenset(n for n in names if not n.startswith("_"))


def _part_is_code(part: str) -> bool:
    if not part:
        return False
    if any(c.isupper() for c in part[1:]):
        return True
    return part in python_names()


def token_is_code(core: str) -> bool:
    """Is a whitespace token (its trailing sentence punctuation removed) a code token?"""
    if not core:
        return False
    if not any(c.isalnum() for c in core):
        return True
    if any(c.isdigit() for c in core) or any(c in CODE_CHARS for c in core) or core.startswith("-"):
        return True
    return any(_part_is_code(p) for p in _PART_SPLIT.split(core))


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def code_spans(text: str) -> list[tuple[int, int]]:
    """Sorted, merged ``[start, end)`` character spans of ``text`` that are code (see module doc)."""
    spans = [m.span() for m in _BACKTICK.finditer(text)]
    spans += [m.span(1) for m in _QUOTED.finditer(text)]
    for m in _URL.finditer(text):
        end = m.end()
        while end > m.start() and text[end - 1] in SENTENCE_PUNCT:
            end -= 1
        spans.append((m.start(), end))
    for m in _TOKEN.finditer(text):
        token = m.group()
        core = token.rstrip(SENTENCE_PUNCT)
        if not core:
            # only sentence punctuation: a "?" or "," inside the sentence is prose unless it stands
            # alone between words, where it is an operator being asked about ("*, + and ? rather")
            if m.end() < len(text.rstrip()) and len(token) == 1 and token in "?!":
                spans.append(m.span())
            continue
        if token_is_code(core):
            spans.append((m.start(), m.start() + len(core)))
    return _merge(spans)


def code_tokens(text: str) -> list[str]:
    """The code spans' text, in order."""
    return [text[a:b] for a, b in code_spans(text)]


def plain_mask(text: str) -> list[bool]:
    """Per character: True when it lies outside every code span."""
    mask = [True] * len(text)
    for a, b in code_spans(text):
        for i in range(a, b):
            mask[i] = False
    return mask


PLACEHOLDER = "\ue000"  # a private-use character: stands for one code span in :func:`skeleton`


def skeleton(text: str) -> str:
    """``text`` with every code span replaced by one placeholder character: the plain text an
    edit may touch, with the places of the code tokens kept."""
    out, last = [], 0
    for a, b in code_spans(text):
        out.append(text[last:a])
        out.append(PLACEHOLDER)
        last = b
    out.append(text[last:])
    return "".join(out)


def plain_words(text: str) -> list[tuple[int, int]]:
    """Spans of the words a typo may land in: :data:`TYPO_MIN_LETTERS`+ ASCII letters, outside code."""
    spans = code_spans(text)

    def inside_code(a: int, b: int) -> bool:
        return any(a < ce and cs < b for cs, ce in spans)

    return [m.span() for m in _PLAIN_WORD.finditer(text) if not inside_code(*m.span())]
