"""The robust families' generators (typo, surface, template) on the real test questions.

Each invariant is checked with means independent of the generator's own filter where that is
possible: NLTK's Damerau-Levenshtein on the whole strings, code tokens found by substring, a
plain lower-case/no-whitespace comparison, the question and passage searched in the prompt.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import nltk
import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.prompting import prompt_text
from consistbench.benchmark.schema import load_data
from consistbench.benchmark.variants import spans, surface, template, typo
from tests.conftest import REPO

DATA = REPO / "tasks/consistency/data"
ORIGINALS = [r for r in load_data(DATA / "test.jsonl") if r.variant_type == "original"]
QUESTIONS = [r.question for r in ORIGINALS]


def _in_order(tokens: list[str], text: str) -> bool:
    """Every token occurs in ``text``, in order, without overlapping."""
    at = 0
    for tok in tokens:
        found = text.find(tok, at)
        if found < 0:
            return False
        at = found + len(tok)
    return True


# ---------------------------------------------------------------------------------------------
# Code spans

@pytest.mark.parametrize("question, code", [
    ("How do I avoid blocking in the connect() method of a socket?", ["in", "connect()", "socket"]),
    ("Why does os.symlink() raise OSError on Windows?", ["os.symlink()", "raise", "OSError"]),
    ("What does a “+” suffix on a Python version number, such as “2.2+”, mean?", ["“+”", "as", "“2.2+”"]),
    ("Why set default=0 on an argparse \"count\" option?", ["set", "default=0", "argparse", '"count"']),
    ("Why should I use *, + and ? rather than {0,}, {1,} and {0,1}?",
     ["*", "+", "and", "?", "{0,}", "{1,}", "and", "{0,1}"]),
    ("See https://docs.python.org/3/faq.html, then `pip install x` please", ["https://docs.python.org/3/faq.html",
                                                                         "`pip install x`"]),
    ("How do I pass --verbose to IPv4 tools?", ["pass", "--verbose", "IPv4"]),  # keywords count as code
])
def test_code_spans_cover_identifiers_literals_numbers_and_urls(question, code):
    assert spans.code_tokens(question) == code


def test_plain_words_never_overlap_code():
    for q in QUESTIONS:
        code = spans.code_spans(q)
        for a, b in spans.plain_words(q):
            assert b - a >= spans.TYPO_MIN_LETTERS and q[a:b].isalpha()
            assert not any(a < ce and cs < b for cs, ce in code), (q, q[a:b])


# ---------------------------------------------------------------------------------------------
# typo

@pytest.fixture(scope="module")
def typos():
    return {q: typo.typo_variant(q, seed=0) for q in QUESTIONS}


def test_typo_covers_almost_every_question(typos):
    missing = [q for q, t in typos.items() if t is None]
    assert len(missing) <= len(QUESTIONS) // 100, missing
    for q in missing:  # only when no plain word of four letters is left
        assert spans.plain_words(q) == []


def test_typo_is_one_or_two_edits_outside_code_with_code_untouched(typos):
    sample = random.Random(0).sample(sorted(q for q, t in typos.items() if t), 300)
    for q in sample:  # the whole strings, with NLTK directly (no shortcut)
        assert 1 <= nltk.edit_distance(q, typos[q].question, transpositions=True) <= 2, (q, typos[q])
    counts = {1: 0, 2: 0}
    for q, t in typos.items():
        if t is None:
            continue
        assert t.question != q
        assert _in_order(spans.code_tokens(q), t.question), (q, t.question)  # code tokens verbatim, in order
        assert 1 <= len(t.edits) <= 2 and len({e.start for e in t.edits}) == len(t.edits)
        code = spans.code_spans(q)
        for e in t.edits:
            assert e.action in typo.ACTIONS and q[e.start:e.start + len(e.word)] == e.word
            assert not any(e.start < ce and cs < e.start + len(e.word) for cs, ce in code), (q, e)
            assert nltk.edit_distance(e.word, e.typo, transpositions=True) == 1, e
        assert typo.apply_edits(q, t.edits) == t.question  # the record reproduces the variant
        counts[len(t.edits)] += 1
    assert counts[1] > 200 and counts[2] > 200  # both one and two edits occur
    actions = {e.action for t in typos.values() if t for e in t.edits}
    assert actions == set(typo.ACTIONS)


def test_typo_is_deterministic_for_a_seed_and_leaves_global_random_alone(typos):
    import numpy as np

    random.seed(123)
    np.random.seed(123)
    before = (random.getstate(), np.random.get_state()[1].copy())
    again = {q: typo.typo_variant(q, seed=0) for q in QUESTIONS[:200]}
    assert random.getstate() == before[0] and (np.random.get_state()[1] == before[1]).all()
    assert all(again[q] == typos[q] for q in again)
    other = [typo.typo_variant(q, seed=1) for q in QUESTIONS[:200]]
    changed = sum(1 for q, t in zip(QUESTIONS[:200], other) if t and typos[q] and t.question != typos[q].question)
    assert changed > 150  # another seed, other typos


def test_typo_and_surface_are_the_same_in_a_fresh_process(typos):
    code = ("import json, sys; from consistbench.benchmark.variants import typo, surface; "
            "qs = json.load(sys.stdin); "
            "print(json.dumps([[typo.typo_variant(q, 7).question, surface.surface_variant(q, 7).question] for q in qs]))")
    qs = QUESTIONS[:40]
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(qs), capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONHASHSEED="99")).stdout
    here = [[typo.typo_variant(q, 7).question, surface.surface_variant(q, 7).question] for q in qs]
    assert json.loads(out) == here


# ---------------------------------------------------------------------------------------------
# surface

def _loose(text: str) -> str:
    return re.sub(r"\s+", "", text.lower()).rstrip("?")


def test_surface_equals_the_original_after_normalisation_and_keeps_code():
    seen = set()
    for q in QUESTIONS:
        s = surface.surface_variant(q, seed=0)
        assert s is not None and s.question != q
        assert _loose(s.question) == _loose(q), (q, s.question)
        assert _in_order(spans.code_tokens(q), s.question), (q, s.question)  # case kept inside code
        assert surface.apply(q, s.transforms) == s.question
        for name in s.transforms:  # every recorded transform has a net effect
            assert surface.apply(q, [t for t in s.transforms if t != name]) != s.question, (q, s)
        seen.update(s.transforms)
        assert len(s.transforms) <= surface.MAX_TRANSFORMS
    assert seen == set(surface.TRANSFORMS)


def test_surface_transforms_do_what_they_say():
    q = "Why does ValueError say: invalid literal, not a number?"
    assert surface.apply(q, ["lowercase"]) == "why does ValueError say: invalid literal, not a number?"
    assert surface.apply(q, ["no_question_mark"]) == "Why does ValueError say: invalid literal, not a number"
    assert surface.apply(q, ["space_before_punct"]) == "Why does ValueError say : invalid literal , not a number ?"
    assert surface.apply(q, ["no_space_after_punct"]) == "Why does ValueError say:invalid literal,not a number?"
    assert surface.surface_variant("", 0) is None
    assert surface.surface_variant(q, 3) == surface.surface_variant(q, 3)


# ---------------------------------------------------------------------------------------------
# template

SHIPPED = template.load_templates(REPO / "tasks/consistency/templates.yaml")


@pytest.mark.parametrize("tpl", SHIPPED, ids=[t.id for t in SHIPPED])
def test_every_template_shows_question_and_passage_verbatim(tpl):
    for r in ORIGINALS:
        prompt = tpl.render(r.context, r.question)
        assert r.question.strip() in prompt and r.context.strip() in prompt
        assert prompt != prompt_text(r.context, r.question) or tpl.system  # another prompt, or a preamble


def test_shipped_set_has_a_system_preamble_and_other_orders():
    ids = {t.id for t in SHIPPED}
    assert len(ids) == len(SHIPPED) >= 4
    assert any(t.system for t in SHIPPED)
    r = ORIGINALS[0]
    orders = {tpl.render("CTX", "QUESTION").index("QUESTION") < tpl.render("CTX", "QUESTION").index("CTX")
              for tpl in SHIPPED}
    assert orders == {True, False}  # the question before the passage in some, after it in others
    assert template.render_doc({"context": r.context, "question": r.question}) == prompt_text(r.context, r.question)


def test_template_assignment_is_balanced_and_order_free():
    groups = [r.group_id for r in ORIGINALS]
    ids = [t.id for t in SHIPPED]
    a = template.assign_templates(groups, ids, seed=0)
    assert a == template.assign_templates(list(reversed(groups)), ids, seed=0)
    counts = [list(a.values()).count(i) for i in ids]
    assert max(counts) - min(counts) <= 1
    assert a != template.assign_templates(groups, ids, seed=1)


@pytest.mark.parametrize("entry, needle", [
    ({"id": "x", "template": "Context: {context}"}, "needs exactly one {question}"),
    ({"id": "x", "template": "{question} {question} {context}"}, "needs exactly one {question}, found 2"),
    ({"id": "x", "template": "{question} {context} {model}"}, "unknown field {model}"),
    ({"id": "x", "template": "{question} {context} {"}, "not a format string"),
    ({"id": "default", "template": "{question} {context}"}, "reserved"),
    ({"id": "Bad Id", "template": "{question} {context}"}, "'id' must be"),
    ({"id": "x", "template": "{question} {context}", "sytem": "typo"}, "unknown key 'sytem'"),
])
def test_bad_template_files_are_one_clear_error(tmp_path, entry, needle):
    import yaml

    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"templates": [entry]}))
    with pytest.raises(ConsistbenchError) as info:
        template.load_templates(path)
    assert needle in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_duplicate_ids_and_literal_braces(tmp_path):
    import yaml

    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"templates": [{"id": "a", "template": "{{json}} {question} {context}"},
                                                  {"id": "a", "template": "{question} {context}"}]}))
    with pytest.raises(ConsistbenchError, match="duplicate id 'a'"):
        template.load_templates(path)
    path.write_text(yaml.safe_dump({"templates": [{"id": "a", "template": "{{json}} {question} {context}"}]}))
    assert template.load_templates(path)[0].render("C {x}", "Q?") == "{json} Q? C {x}"


# ---------------------------------------------------------------------------------------------
# `consistbench variants --types typo,surface`

def test_variants_cli_makes_typo_and_surface_rows(tmp_path, capsys):
    src = tmp_path / "q.jsonl"
    qs = QUESTIONS[:12]
    src.write_text("".join(json.dumps({"question": q, "passage_id": f"p{i}"}) + "\n" for i, q in enumerate(qs)))
    out = tmp_path / "v.jsonl"
    assert main(["variants", str(src), "-o", str(out), "--types", "typo,surface", "--n", "2", "--seed", "3"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_group: dict[str, list] = {}
    for r in rows:
        by_group.setdefault(r["group_id"], []).append(r)
    assert len(by_group) == len(qs)
    from consistbench.benchmark.noise_rules import check_surface, check_typo

    for members in by_group.values():
        orig = next(r for r in members if r["variant_type"] == "original")
        kinds = [r["variant_type"] for r in members if r["variant_type"] != "original"]
        assert kinds.count("typo") == 2 and kinds.count("surface") == 2
        for r in members:
            if r["variant_type"] == "typo":
                assert r["id"] in (f"{r['group_id']}-typo", f"{r['group_id']}-typo2")
                assert not check_typo(orig["question"], r["question"]) and r["generator"]["edits"]
            elif r["variant_type"] == "surface":
                assert not check_surface(orig["question"], r["question"]) and r["generator"]["transforms"]
            if r["variant_type"] != "original":
                assert r["generator"]["seed"] is not None and "cosine" in r["generator"]
    assert main(["variants", str(src), "-o", str(tmp_path / "x.jsonl"), "--types", "typo,spelling"]) == 2
    assert "unknown variant type 'spelling'" in capsys.readouterr().err
