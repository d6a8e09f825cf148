"""The quality rules every shipped question, answer and variant must meet, defined once.

Used by ``consistbench data audit`` (on built data files) and by the variant filters (on
generated variants). Thresholds were calibrated on hand-checked pairs; see docs/DATACARD.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections import Counter
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


# ---------------------------------------------------------------------------------------------
# Data v2 rules: a paraphrase must ask the same question, a reference must say something, the
# splits must not hold near-twins, and no opening may dominate. Every rule is a plain lexical
# test whose Problem names the words that triggered it, so a flagged item can be checked by eye.

# Question words that open a wh-question, and auxiliaries that open a yes/no question.
WH_WORDS = frozenset({"what", "what's", "whats", "which", "how", "how's", "why", "when", "where", "who", "whom",
                      "whose", "whence"})
AUX_WORDS = frozenset({"is", "are", "was", "were", "am", "do", "does", "did", "can", "could", "should", "would",
                       "will", "shall", "may", "might", "must", "has", "have", "had", "isn't", "aren't", "doesn't",
                       "don't", "didn't", "can't", "cannot", "couldn't", "shouldn't", "wouldn't", "won't",
                       "wasn't", "weren't", "hasn't", "haven't"})
# An opening adverbial ("When X is created, ...", "In the smtplib example, ...") before the main
# clause: the question type is read after its comma.
_FRONTED = frozenset({"if", "when", "after", "before", "once", "while", "since", "given", "for", "in", "on", "with",
                      "without", "using", "besides", "apart", "compared", "instead", "as", "by", "unlike", "during",
                      "at", "from", "to", "according", "within", "among", "under", "inside", "outside", "other",
                      "beyond", "except", "whenever", "assuming", "suppose", "say", "starting", "until", "like"})
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'\u2019]*")


def _first_word(text: str) -> str:
    m = _WORD_RE.search(text)
    return m.group(0).lower().replace("\u2019", "'") if m else ""


def question_clause(question: str) -> str:
    """The clause that carries the question: the last sentence (after '. ', '; ' or ': ') that the
    final '?' closes, without an opening adverbial clause that ends in a comma."""
    q = question.strip()
    parts = re.split(r"(?<=[.;:!?])\s+(?=[A-Za-z])", q)
    clause = parts[-1] if parts else q
    if _first_word(clause) in _FRONTED and "," in clause:
        clause = clause.split(",", 1)[1]
    return clause.strip()


def question_kind(question: str) -> str:
    """``wh`` (what/which/how/why/... or a preposition + wh-word), ``yes_no`` (an auxiliary first)
    or ``other`` (declarative, imperative)."""
    clause = question_clause(question)
    words = [w.lower().replace("\u2019", "'") for w in _WORD_RE.findall(clause)[:3]]
    if not words:
        return "other"
    if words[0] in WH_WORDS or (words[0] in _FRONTED and len(words) > 1 and words[1] in WH_WORDS):
        return "wh"
    if words[0] in AUX_WORDS:
        return "yes_no"
    return "other"


# "..., A or B?" at the end: the alternatives the answer chooses between are put into the question.
# Each side is at most four words and the tail is not a clause of its own ("..., which call ...?"),
# nor a fixed phrase ("or not", "or more", "or later").
_EITHER_OR = re.compile(r",\s*(?:either\s+)?(?!(?:what|which|how|why|when|where|who)\b)((?:\S+\s+){0,3}\S+)\s+or\s+"
                        r"(?!(?:not|more|less|fewer|earlier|later|older|newer|above|below)\b)((?:\S+\s+){0,3}\S+?)\s*\?\s*$",
                        re.IGNORECASE)


def check_polarity(original: str, variant: str) -> list[Problem]:
    """A wh-question may not become a yes/no question or an either/or choice. The closed how-to
    form "Is there a way to X?" is a how-to question, not a yes/no one."""
    if question_kind(original) != "wh":
        return []
    if how_to.parse(original) and how_to.parse(variant):
        return []
    if question_kind(variant) == "yes_no":
        clause = question_clause(variant)
        return [Problem("paraphrase_polarity", f"wh-question turned into a yes/no question "
                                               f"(opens with {_first_word(clause)!r})")]
    if _EITHER_OR.search(variant) and " or " not in f" {original.lower()} ":
        return [Problem("paraphrase_polarity", f"wh-question turned into an either/or choice "
                                               f"({_EITHER_OR.search(variant).group(0).strip(', ')!r})")]
    return []


# A second question joined on: "..., and why?", "..., and can an entry's type be changed?",
# "..., or does it raise?". An auxiliary counts only when a subject follows it ("and is there",
# "and does the order matter"), so a coordinated verb phrase ("... and is compared with") does not.
_SUBJECT = r"(?:the|a|an|there|it|they|this|that|these|those|its|their|my|your|i|we|you|he|she|one|any|each|\d\S*|\S*[._()]\S*)"
_SUB_QUESTION = re.compile(
    r"(?:^|[\s,;])(?:and|or|but)\s+(?:(?:if\s+so|if\s+not|why|how|what|which|when|where|who|whom|whose|whether|"
    r"under\s+what|in\s+what|to\s+what)\b|(?:is|are|was|were|does|do|did|can|could|should|would|will|must|may|has|have)"
    r"\s+" + _SUBJECT + r"(?=[\s?,]|$))", re.IGNORECASE)
_QUESTION_MARK = re.compile(r"\?(?=\s|$)")


def sub_questions(question: str) -> list[str]:
    """The coordinated question openings in ``question`` (", and why", "or does it", ...)."""
    return [m.group(0).strip(" ,;") for m in _SUB_QUESTION.finditer(question)]


def check_sub_question(original: str, variant: str) -> list[Problem]:
    """The variant may not add a second question to the original's one."""
    added = len(sub_questions(variant)) - len(sub_questions(original))
    marks = len(_QUESTION_MARK.findall(variant)) - len(_QUESTION_MARK.findall(original))
    if added > 0 or marks > 0:
        found = sub_questions(variant) or [f"{len(_QUESTION_MARK.findall(variant))} question marks"]
        return [Problem("paraphrase_sub_question", f"adds a second question ({', '.join(map(repr, found))})")]
    return []


# Answer hints. A code token is any word with code punctuation, a digit, or inner capitals
# (shutil.copy, dry_run=True, (?...), basicConfig); a rare word is a plain word that is rare both
# in English (wordfreq Zipf frequency of the word and of its lemma below 3, i.e. less than once
# per million words: lookahead, quantifier, cmath, SIGINT) and in the documentation (in at most
# 1 % of the audited passages, so "tuple" or "stdout" never count).
RARE_WORD_MAX_ZIPF = 3.0
RARE_WORD_MAX_PASSAGE_SHARE = 0.01
_STRIP = ".,;:?!\"'\u201c\u201d\u2018\u2019`"
_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)*")
_CODE_LIKE = re.compile(r"[A-Za-z0-9][_.()\[\]=<>/*%\\@:][A-Za-z0-9(\[)]|[_()\[\]=<>*%\\@{}]|\d")
_INNER_CAPS = re.compile(r"[a-z][A-Z]|^[A-Z][a-z]+[A-Z]")
_NUMBER_WORDS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                 "seven": "7", "eight": "8", "nine": "9", "ten": "10", "twelve": "12", "hundred": "100"}


def _is_code(token: str) -> bool:
    return bool(_CODE_LIKE.search(token) or _INNER_CAPS.search(token))


def code_tokens(text: str) -> set[str]:
    """Lower-cased code tokens of ``text`` and their distinctive parts (``dry_run=True`` gives
    ``dry_run=true``, ``true``; ``setLevel(logging.INFO)`` gives ``setlevel``, ``info``, ...)."""
    out = set()
    for raw in text.split():
        tok = raw.strip(_STRIP)
        if not tok or not _is_code(tok):
            continue
        out.add(tok.lower().removesuffix("()"))
        for part in _PART.findall(tok):
            if _is_code(part) or (len(part) >= 2 and not part.islower()):
                out.add(part.lower())
    return out


def _all_tokens(text: str) -> set[str]:
    """Every word and word part of ``text``, lower-cased, number words also as digits."""
    text = text.replace("\u2019", "'")
    out = {t.strip(_STRIP).lower().removesuffix("()") for t in text.split()}
    out |= {p.lower() for p in _PART.findall(text)}
    out |= {_NUMBER_WORDS[w] for w in list(out) if w in _NUMBER_WORDS}
    return out


@functools.lru_cache(maxsize=65536)
def zipf(word: str) -> float:
    """How common ``word`` or its lemma is in English, on the Zipf scale (wordfreq; 0 if unseen)."""
    import lemminflect
    from wordfreq import zipf_frequency

    lemmas = {x for forms in lemminflect.getAllLemmas(word).values() for x in forms}
    return max(zipf_frequency(w, "en") for w in {word, *lemmas})


def answer_hints(original: str, variant: str, reference: str, passage_share=None) -> list[str]:
    """Code tokens, numbers and rare words that the variant shares with the reference answer but
    that the original question does not contain (in any form). ``passage_share(stem)``: the share
    of passages that contain a word stem (None: every word counts as rare in the documentation)."""
    orig_all = _all_tokens(original)
    ref_all = _all_tokens(reference)
    hints = []
    for tok in sorted(code_tokens(variant)):
        if tok in ref_all and tok not in orig_all and not any(tok in o for o in orig_all):
            hints.append(tok)
    orig_stems = set(text.content_stems(original))
    ref_stems = set(text.content_stems(reference))
    for word in sorted(set(text.words(variant))):
        if not word.isalpha() or len(word) < 3 or any(word in h for h in hints):
            continue
        stem = text.content_stems(word)
        if not stem or stem[0] in orig_stems or stem[0] not in ref_stems or any(word in o for o in orig_all):
            continue
        if zipf(word) < RARE_WORD_MAX_ZIPF and (passage_share is None
                                                 or passage_share(stem[0]) <= RARE_WORD_MAX_PASSAGE_SHARE):
            hints.append(word)
    return hints


def check_answer_hint(original: str, variant: str, reference: str, passage_share=None) -> list[Problem]:
    """A variant of any type may not carry part of the answer that its original does not."""
    hints = answer_hints(original, variant, reference, passage_share)
    if hints:
        return [Problem("answer_hint", f"takes {', '.join(map(repr, hints))} from the reference "
                                       f"(absent from the original)")]
    return []


# Procedure -> name: "How do I copy a file?" paraphrased as "Which function copies a file?" asks
# for a name instead of a procedure.
NAME_NOUNS = ("function", "method", "module", "class", "attribute", "argument", "parameter", "option", "call",
              "constant", "exception", "flag", "setting", "keyword", "operator", "decorator", "hook", "codec",
              "tool", "api", "helper", "library", "package", "command", "property", "field", "built-in",
              "builtin", "subclass", "context manager", "handler", "directive", "policy", "coroutine", "routine",
              "variable", "switch", "action", "object", "type", "exception class", "base class", "classmethod",
              "staticmethod")
_NAME_QUESTION = re.compile(
    r"^(?:[^,?]{0,60},\s*)?(?:which|what)(?:'s|\u2019s|\s+is|\s+are|\s+was)?(?:\s+the)?(?:\s+[\w.()'\u2019-]+){0,3}?\s+"
    r"(" + "|".join(re.escape(n) for n in sorted(NAME_NOUNS, key=len, reverse=True)) + r")(?:e?s)?\b",
    re.IGNORECASE)


def check_type_shift(original: str, variant: str) -> list[Problem]:
    """A how-to (procedure) question may not become a question for the name of something."""
    if how_to.parse(original) is None or how_to.parse(variant) is not None:  # a how-to form asks for a procedure
        return []
    m = _NAME_QUESTION.match(variant.strip())
    if m:
        return [Problem("paraphrase_type_shift", f"how-to question turned into a question for a name "
                                                 f"({m.group(0)!r})")]
    return []


def check_paraphrase_meaning(original: str, variant: str, reference: str, passage_share=None) -> list[Problem]:
    """Every v2 rule on a paraphrase: same question type, one question, no answer hint, no
    procedure -> name shift; and data v3's template rule."""
    return (check_polarity(original, variant) + check_sub_question(original, variant)
            + check_answer_hint(original, variant, reference, passage_share)
            + check_type_shift(original, variant) + check_paraphrase_template(variant))


class PassageShare:
    """Share of distinct passages that contain a content-word stem (for :func:`answer_hints`)."""

    def __init__(self, passages):
        texts = set(passages)
        self.n = max(1, len(texts))
        self.df = Counter(stem for t in texts for stem in set(text.content_stems(t)))

    def __call__(self, stem: str) -> float:
        return self.df[stem] / self.n


# References that say nothing themselves: a pointer ("See the FAQ ..."), or one that names code
# (a class, function or dotted name) that its passage never mentions.
_POINTER = re.compile(r"^\s*(?:see|refer\s+to)\b", re.IGNORECASE)


def foreign_names(reference: str, passage: str) -> list[str]:
    """Identifiers in the reference (CamelCase, snake_case, dotted or called names) that do not
    occur in the passage."""
    low = passage.lower()
    missing = []
    for raw in reference.split():
        tok = raw.strip(_STRIP)
        if not re.search(r"[._(]|[a-z][A-Z]|^[A-Z][a-z]+[A-Z]", tok):
            continue
        for part in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", tok):
            distinctive = ("_" in part.strip("_") or _INNER_CAPS.search(part) or tok.startswith(part + "(")
                           or f".{part}" in tok or f"{part}." in tok)
            if len(part) >= 3 and distinctive and part.lower() not in low and part not in missing:
                missing.append(part)
    return missing


def check_reference_content(reference: str, passage: str) -> list[Problem]:
    problems = []
    if _POINTER.match(reference):
        problems.append(Problem("reference_pointer", "the reference only points elsewhere "
                                                     f"({' '.join(reference.split()[:6])!r} ...)"))
    missing = foreign_names(reference, passage)
    if missing:
        problems.append(Problem("reference_foreign_name", f"names {', '.join(map(repr, missing))}, "
                                                          "absent from the passage"))
    return problems


# Near-twins across splits: originals of two splits this close (MiniLM cosine), or two splits
# holding passages with the same text, leak answers from train into test.
NEAR_TWIN_COSINE = 0.90

# Openings: no two-word opening ("how do", "what does"; case-folded) may cover more than this
# share of a split's originals. Measured only on splits with enough originals to make a share
# meaningful.
OPENING_MAX_SHARE = 0.25
OPENING_MIN_GROUPS = 100


def opening(question: str) -> str:
    """The first two words, case-folded, typographic apostrophes folded."""
    return " ".join(question.replace("\u2019", "'").casefold().split()[:2])


# ---------------------------------------------------------------------------------------------
# Data v3 rules, from the second reading: a how_to is the paper's how-to/how-do alternation, a
# paraphrase is not a template, and a group probes two different changes.

# Paraphrase openings that are templates (the how-to forms that change the question type).
PARAPHRASE_TEMPLATES = ("what's the way to", "what is the way to", "what's a way to", "what is a way to",
                        "is there a way to")
# No three-word paraphrase opening may be shared by more than this share of a split's paraphrases
# (measured on splits with at least PARAPHRASE_OPENING_MIN paraphrases).
PARAPHRASE_OPENING_MAX_SHARE = 0.05
PARAPHRASE_OPENING_MIN = 100
# A group's how_to and paraphrase this similar (difflib ratio, case-folded) probe one change twice.
NEAR_HOW_TO_RATIO = 0.8
# Of a split's how_to pairs (with at least HOW_TO_PAIRS_MIN of them): at least this share the core
# "How to X" <-> "How do I X" pair, at most this share modal ("How can I X" -> ...).
HOW_TO_CORE_MIN_SHARE = 0.5
HOW_TO_MODAL_MAX_SHARE = 0.2
HOW_TO_PAIRS_MIN = 50


def paraphrase_opening(question: str) -> str:
    """The first three words, case-folded, typographic apostrophes folded, punctuation dropped."""
    return " ".join(_WORD_RE.findall(question.replace("\u2019", "'").casefold())[:3])


def check_paraphrase_template(variant: str) -> list[Problem]:
    """A paraphrase may not open with a template form ("What's the way to ...")."""
    low = " ".join(variant.replace("\u2019", "'").casefold().split())
    for template in PARAPHRASE_TEMPLATES:
        if low.startswith(template) or re.search(r"^[^,?]{0,60},\s*" + re.escape(template), low):
            return [Problem("paraphrase_template", f"opens with the template {template!r}")]
    return []


def check_how_to_form(original: str, variant: str) -> list[Problem]:
    """A how_to pair is the how-to/how-do alternation (:func:`how_to.form_problem`)."""
    why = how_to.form_problem(original, variant)
    return [Problem("how_to_form", why)] if why else []


def near_how_to(how_to_variant: str, paraphrase: str) -> float:
    """String similarity of a group's how_to and paraphrase (difflib ratio, case-folded)."""
    return difflib.SequenceMatcher(None, how_to_variant.casefold(), paraphrase.casefold()).ratio()
