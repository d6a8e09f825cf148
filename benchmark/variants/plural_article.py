"""The ``plural_article`` variant type: noun number and a/an/the swaps, nothing else.

"How do I copy a file?" / "How do I copy files?" / "How do I copy the file?" ask the same thing.
A pair is a ``plural_article`` variant when every difference between the two questions is
(a) a word replaced by another form of the same lemma (noun number, and the verb agreement
it forces: is/are, does/do, returns/return), (b) an article a/an/the inserted, removed or
swapped, or (c) a demonstrative that agrees in number (this/these, that/those).

Generation tags the question with spaCy's small English pipeline (for part of speech and the
subject relation that decides verb agreement) and inflects with lemminflect and inflect. Neither
inflection library is right alone (inflect: index -> indexes, data -> datas; lemminflect lists
regular forms first and keeps singulars among plurals), so :func:`pluralize` and
:func:`singularize` combine them as documented there.
"""

from __future__ import annotations

import difflib
import functools
import random
import re

from consistbench.benchmark.variants.english import english_pipeline

ARTICLES = frozenset({"a", "an", "the"})
_AGREEMENT = {"is": "are", "are": "is", "was": "were", "were": "was", "does": "do", "do": "does",
              "has": "have", "have": "has", "this": "these", "these": "this", "that": "those", "those": "that"}
_DEMONSTRATIVES = {"this": "these", "these": "this", "that": "those", "those": "that"}
# Nouns used uncountably in programming English that inflect does not know as uncountable.
# inflect already keeps information, equipment, series, species, ... unchanged.
DOMAIN_UNCOUNTABLE = frozenset({
    "data", "metadata", "code", "bytecode", "software", "hardware", "documentation", "feedback",
    "input", "output", "memory", "syntax", "whitespace", "padding", "logging", "debugging",
    "unicode", "ascii", "utf-8", "python", "garbage", "traffic", "storage", "access", "support",
    "inheritance", "concurrency", "parallelism", "recursion", "indentation", "encoding",
})
# Determiners and quantifiers whose number we must not change silently: a variant that flips
# the noun under them would change the meaning ("each file" vs "each files").
_BLOCKING_DET = frozenset({"each", "every", "another", "one", "any", "no", "either", "neither", "many",
                           "several", "few", "both", "all", "some", "most", "two", "three", "multiple"})
_LETTER_VOWEL_SOUND = set("AEFHILMNORSX")  # letters whose English name starts with a vowel sound
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'\u2019-]*|\d+(?:\.\d+)*|[^\sA-Za-z\d]")


@functools.lru_cache(maxsize=1)
def _inflect():
    import inflect

    return inflect.engine()


def _is_acronym(word: str) -> bool:
    core = word[:-1] if word.endswith("s") and word[:-1].isupper() else word
    return 2 <= len(core) <= 6 and core.isalpha() and core.isupper()


def _regular_plurals(word: str) -> set[str]:
    forms = {word + "s", word + "es", word + word[-1:] + "es"}  # busses: a spelling, not an irregular
    if word.endswith("y"):
        forms.add(word[:-1] + "ies")
    return forms


def is_uncountable(word: str) -> bool:
    """True for nouns without a distinct plural (inflect's list plus :data:`DOMAIN_UNCOUNTABLE`)."""
    low = word.lower()
    if low in DOMAIN_UNCOUNTABLE:
        return True
    if _is_acronym(word):
        return False
    return _inflect().plural_noun(low) == low


def pluralize(word: str) -> str | None:
    """Plural of a singular noun, or None when it has none (uncountable).

    Acronyms take "s" (URL -> URLs). Otherwise an irregular plural offered by lemminflect wins
    (index -> indices, matrix -> matrices, child -> children), then inflect's (mouse -> mice).
    """
    import lemminflect

    if is_uncountable(word):
        return None
    if _is_acronym(word):
        return word + "s"
    low = word.lower()
    forms = [f for f in lemminflect.getAllInflections(low, upos="NOUN").get("NNS", ()) if f != low]
    irregular = [f for f in forms if f not in _regular_plurals(low)]
    plural = irregular[0] if irregular else _inflect().plural_noun(low)
    if not plural or plural == low:
        return None
    return _match_case(word, plural)


def singularize(word: str) -> str | None:
    """Singular of a plural noun, or None when it has none (data, series)."""
    import lemminflect

    low = word.lower()
    if low in DOMAIN_UNCOUNTABLE:
        return None
    if _is_acronym(word):
        return word[:-1] if word.endswith("s") else None
    lemmas = [lem for lem in lemminflect.getAllLemmas(low).get("NOUN", ()) if lem != low]
    guess = _inflect().singular_noun(low)
    single = guess if guess in lemmas or (guess and not lemmas) else (lemmas[0] if lemmas else None)
    if not single or single == low or is_uncountable(single):
        return None
    return _match_case(word, single)


def indefinite_article(word: str) -> str:
    """'a' or 'an' for the sound of ``word``: acronyms by letter name (an HTTP, a URL)."""
    if _is_acronym(word) or (len(word) == 1 and word.isalpha()):
        return "an" if word[0].upper() in _LETTER_VOWEL_SOUND else "a"
    return _inflect().a(word).split(" ", 1)[0]


def _match_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


# ---------------------------------------------------------------------------------------------
# Audit: is a pair a plural/article variant?

def tokens(text: str) -> list[str]:
    return [t.lower().replace("\u2019", "'") for t in _TOKEN.findall(text)]


@functools.lru_cache(maxsize=65536)
def same_lemma(a: str, b: str) -> bool:
    """True when two words are forms of one lemma (noun number or verb agreement)."""
    import lemminflect

    if a == b:
        return True
    if _AGREEMENT.get(a) == b:
        return True
    if a.upper() == b.upper() or a.rstrip("s") == b.rstrip("s") and _is_acronym(a.upper()):
        return True
    la = {x for v in lemminflect.getAllLemmas(a).values() for x in v} | {a}
    lb = {x for v in lemminflect.getAllLemmas(b).values() for x in v} | {b}
    if la & lb:
        return True
    eng = _inflect()
    return eng.singular_noun(a) == b or eng.singular_noun(b) == a


def is_variant(original: str, variant: str) -> bool:
    """True when the only differences are same-lemma word forms and articles, and there is one."""
    a, b = tokens(original), tokens(variant)
    if a == b:
        return False
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        left = [t for t in a[i1:i2] if t not in ARTICLES]
        right = [t for t in b[j1:j2] if t not in ARTICLES]
        if len(left) != len(right):
            return False
        if not all(same_lemma(x, y) for x, y in zip(left, right)):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Generation

def _eligible_noun(tok) -> bool:
    if tok.tag_ not in {"NN", "NNS", "NNP", "NNPS"}:
        return False
    if tok.dep_ == "compound":  # "child" in "child process": the head noun carries the number
        return False
    text = tok.text
    if tok.tag_ in {"NNP", "NNPS"}:
        return _is_acronym(text)
    if not text.isalpha() or not text.islower() and not text[:1].isupper():
        return False
    if tok.i == 0:  # the question word position is never a noun phrase we rewrite
        return False
    return True


def _word_known(word: str) -> bool:
    import lemminflect

    low = word.lower()
    return bool(lemminflect.getAllInflections(low, upos="NOUN")) or bool(lemminflect.getAllLemmas(low).get("NOUN"))


def _number_flip(doc, noun) -> dict[int, str] | None:
    """Token replacements (index -> new text; '' deletes) that flip ``noun``'s number."""
    plural = noun.tag_ in {"NNS", "NNPS"} or (_is_acronym(noun.text) and noun.text.endswith("s"))
    if not _is_acronym(noun.text) and not _word_known(noun.text):
        return None  # identifiers such as "str" or "dict" are not English nouns
    new = singularize(noun.text) if plural else pluralize(noun.text)
    if not new:
        return None
    edits = {noun.i: new}
    dets = [c for c in noun.children if c.dep_ in {"det", "predet", "nummod", "poss"} and c.i < noun.i]
    for det in dets:
        low = det.lower_
        if low in _BLOCKING_DET or det.dep_ in {"nummod", "poss"} and low not in {"my", "your", "its", "their", "our"}:
            return None
        if det.dep_ == "poss":
            continue
        if low in {"a", "an"} and not plural:
            edits[det.i] = ""
        elif low in _DEMONSTRATIVES:
            edits[det.i] = _match_case(det.text, _DEMONSTRATIVES[low])
        elif low != "the":
            return None
    if plural and not dets:
        # a bare plural becomes an indefinite singular: article before the whole noun phrase
        first = min([noun.i, *[c.i for c in noun.lefts]])
        word = new if first == noun.i else doc[first].text
        edits[first] = f"{indefinite_article(word)} {word}"
    # subject-verb agreement: flip an agreeing auxiliary or present-tense verb of which we are subject
    if noun.dep_ in {"nsubj", "nsubjpass"}:
        head = noun.head
        while head.pos_ not in {"AUX", "VERB"} and head.head.i != head.i:  # spaCy makes a new Token per access: compare indices
            head = head.head  # the small parser sometimes hangs the subject on an acomp
        verbs = [c for c in head.children if c.dep_ in {"aux", "auxpass"}] + [head]
        for verb in verbs:
            low = verb.lower_
            if low in _AGREEMENT and low not in _DEMONSTRATIVES:
                edits[verb.i] = _match_case(verb.text, _AGREEMENT[low])
                break
            if verb.tag_ in {"VBZ", "VBP"}:
                import lemminflect

                target = "VBP" if verb.tag_ == "VBZ" else "VBZ"
                forms = lemminflect.getInflection(verb.lemma_ or verb.lower_, tag=target)
                if forms:
                    edits[verb.i] = _match_case(verb.text, forms[0])
                break
    return edits


def _article_swap(doc, noun) -> dict[int, str] | None:
    """Swap a/an <-> the on a singular noun phrase."""
    if noun.tag_ not in {"NN", "NNP"}:
        return None
    dets = [c for c in noun.children if c.dep_ == "det" and c.i < noun.i]
    if len(dets) != 1:
        return None
    det = dets[0]
    nxt = doc[det.i + 1].text
    if det.lower_ in {"a", "an"}:
        return {det.i: _match_case(det.text, "the")}
    if det.lower_ == "the":
        return {det.i: _match_case(det.text, indefinite_article(nxt))}
    return None


def _apply(doc, edits: dict[int, str]) -> str:
    out = []
    for tok in doc:
        text = edits.get(tok.i, tok.text)
        if text:
            out.append(text + tok.whitespace_)
    text = "".join(out)
    # repair indefinite articles whose following word changed ("a index" -> "an index")
    def fix(m):
        art, word = m.group(1), m.group(2)
        want = indefinite_article(word)
        return (_match_case(art, want) if art.lower() != want else art) + " " + word
    return re.sub(r"\b([Aa]n?)\s+([A-Za-z][\w-]*)", fix, text)


def candidates(question: str) -> list[str]:
    """Every single-edit plural/article variant of ``question`` that passes :func:`is_variant`."""
    doc = english_pipeline()(question)
    out: list[str] = []
    for tok in doc:
        if not _eligible_noun(tok):
            continue
        for make in (_number_flip, _article_swap):
            edits = make(doc, tok)
            if not edits:
                continue
            text = _apply(doc, edits)
            if text != question and text not in out and is_variant(question, text):
                out.append(text)
    return out


def generate(question: str, n: int = 1, seed: int = 0) -> list[str]:
    """Up to ``n`` distinct variants; number flips come before article swaps, ties by seed."""
    pool = candidates(question)
    rng = random.Random(f"{seed}|plural_article|{question}")
    keyed = sorted(pool, key=lambda t: (_is_article_only(question, t), rng.random()))
    return keyed[:n]


def _is_article_only(original: str, variant: str) -> bool:
    a = [t for t in tokens(original) if t not in ARTICLES]
    b = [t for t in tokens(variant) if t not in ARTICLES]
    return a == b
