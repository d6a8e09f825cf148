"""The robust families' audit rules on hand-made pairs, and `consistbench data audit` on robust rows."""

from __future__ import annotations

import pytest

from consistbench.benchmark import noise_rules as N
from consistbench.benchmark.audit import audit_rows
from consistbench.benchmark.cli import main
from consistbench.benchmark.schema import load_data
from consistbench.benchmark.variants.template import PromptTemplate
from tests.conftest import make_row, write_jsonl


def rules(problems) -> set[str]:
    return {p.rule for p in problems}


# ---------------------------------------------------------------------------------------------
# typo

TQ = "How do I duplicate a nested structure with copy.deepcopy()?"


@pytest.mark.parametrize("variant", [
    "How do I duplicate a netsed structure with copy.deepcopy()?",  # swap
    "How do I duplicate a nessted structure with copy.deepcopy()?",  # duplicate
    "How do I duplicate a nested structre with copy.deepcopy()?",  # drop
    "How do I duplixate a nested structurw with copy.deepcopy()?",  # two keyboard neighbours
])
def test_typo_accepts_one_or_two_edits_in_plain_words(variant):
    assert N.check_typo(TQ, variant) == []


@pytest.mark.parametrize("variant, rule", [
    ("How do I dulpicate a netsed strcture with copy.deepcopy()?", "typo_edits"),  # three edits
    ("How do I duplicate a nested structure with copy.deepcpoy()?", "typo_code_tokens"),  # inside a dotted name
    ("How do I duplicate a nested structure with Copy.deepcopy()?", "typo_code_tokens"),  # case inside code
    ("How do I duplicate a nested structure with copy.deepcopy?", "typo_code_tokens"),  # the call's () dropped
    ("How do I duplicate a nested structure wiht copy.deepcopy()?", "typo_code_tokens"),  # in the keyword "with"
    (TQ, "typo_identical"),
    ("   ", "typo_empty"),
])
def test_typo_rejects_more_edits_and_any_change_to_code(variant, rule):
    assert rule in rules(N.check_typo(TQ, variant))


def test_typo_protects_quoted_literals_numbers_and_urls():
    q = 'Why does “2.2+” mean newer than 2.2 at https://python.org/docs here?'
    assert N.check_typo(q, q.replace("newer", "nwer")) == []
    for broken in (q.replace("“2.2+”", "“2.3+”"), q.replace("than 2.2", "than 2.3"),
                   q.replace("python.org", "pyhton.org")):
        assert "typo_code_tokens" in rules(N.check_typo(q, broken)), broken


def test_typo_that_makes_a_python_name_is_a_code_change():
    # one swap in a plain word, but the result is the keyword "from": the code tokens differ
    assert "typo_code_tokens" in rules(N.check_typo("What form does the result take?", "What from does the result take?"))


def test_edit_distance_is_damerau_levenshtein():
    assert N.edit_distance("copy", "cpoy") == 1
    assert N.edit_distance("abcdef", "abcdef") == 0
    assert N.edit_distance("a list of lists", "a lsit of lists") == 1
    assert N.edit_distance("kitten", "sitting") == 3


# ---------------------------------------------------------------------------------------------
# surface

@pytest.mark.parametrize("variant", [
    "how do i copy a list, or a dict, in python",
    "How do I copy a list , or a dict , in Python ?",
    "How do I copy a list,or a dict,in Python?",
    "HOW DO I COPY A LIST, OR A DICT, IN PYTHON?",
])
def test_surface_accepts_case_spacing_and_a_dropped_question_mark(variant):
    assert N.check_surface("How do I copy a list, or a dict, in Python?", variant) == []


@pytest.mark.parametrize("variant, rule", [
    ("How do I copy a lits, or a dict, in Python?", "surface_rule"),  # a letter changed
    ("How do I copy a list or a dict, in Python?", "surface_rule"),  # a comma dropped
    ("How do I copy a list, or a dict, in Python!", "surface_rule"),  # another final mark
    ("How do I copy a list, or a dict, in Python?", "surface_identical"),
    ("", "surface_empty"),
])
def test_surface_rejects_anything_beyond_case_spaces_and_the_final_mark(variant, rule):
    assert rule in rules(N.check_surface("How do I copy a list, or a dict, in Python?", variant))


# ---------------------------------------------------------------------------------------------
# template

TEMPLATES = {"qfirst": PromptTemplate("qfirst", "Q: {question}\nC: {context}\nA:"),
             "broken": PromptTemplate("broken", "C: {context}\nA:")}  # never loaded: a set's file would refuse it


def test_template_rule():
    q, c = "How do I copy a list?", "Use list.copy()."
    assert N.check_template(q, c, q, c, "qfirst", TEMPLATES) == []
    assert "template_verbatim" in rules(N.check_template(q, c, q + " ", c, "qfirst", TEMPLATES))
    assert "template_verbatim" in rules(N.check_template(q, c, q, c + " Or slicing.", "qfirst", TEMPLATES))
    assert "template_unknown" in rules(N.check_template(q, c, q, c, "nope", TEMPLATES))
    assert "template_unknown" in rules(N.check_template(q, c, q, c, "default", TEMPLATES))
    assert "template_unknown" in rules(N.check_template(q, c, q, c, None, TEMPLATES))
    assert "template_verbatim" in rules(N.check_template(q, c, q, c, "broken", TEMPLATES))
    assert N.check_template(q, c, q, c, "terse") == []  # the shipped set by default


# ---------------------------------------------------------------------------------------------
# `consistbench data audit` on robust rows

CTX = "To copy a list, use slicing or the list.copy() method; copy.deepcopy() copies nested objects too."
REF = "Use slicing or the list.copy() method."
Q1 = TQ
Q2 = "Why would I serialise an object with pickle.dumps()?"
Q3 = "When should a generator expression replace a comprehension?"
Q4 = "What happens when a thread releases the interpreter lock?"


def _pair(gid: str, original: str, kind: str, question: str, **extra) -> list[dict]:
    orig = make_row(gid, "original", original, context=CTX, reference=REF, passage=f"{gid}.html#x")
    var = make_row(gid, kind, question, context=CTX, reference=REF, passage=f"{gid}.html#x")
    var.update(extra)
    return [orig, var]


def test_audit_runs_the_family_rules_and_names_the_rows(tmp_path, capsys):
    good = write_jsonl(tmp_path / "good.jsonl",
                       _pair("g1", Q1, "typo", "How do I duplicate a netsed structure with copy.deepcopy()?")
                       + _pair("g2", Q2, "surface", "why would i serialise an object with pickle.dumps()")
                       + _pair("g3", Q3, "template", Q3, template_id="question_first"))
    problems, stats = audit_rows({str(good): load_data(good)})
    assert dict(problems) == {}
    assert stats[str(good)]["variants"]["typo"] == 1 and stats[str(good)]["variants"]["template"] == 1
    bad_rows = (_pair("b1", Q1, "typo", "How do I duplicate a nested structure with copy.deepcpoy()?")
                + _pair("b2", Q2, "surface", "Why would I serialise objects with pickle.dumps()?")
                + _pair("b3", Q3, "template", Q3, template_id="no_such_template")
                + _pair("b4", Q4, "typo", "What hapens when a thred releases the intrpreter lock?"))
    bad = write_jsonl(tmp_path / "bad.jsonl", bad_rows)
    problems, _ = audit_rows({str(bad): load_data(bad)})
    expect = {"typo_code_tokens": "b1-typo", "surface_rule": "b2-surface", "template_unknown": "b3-template",
              "typo_edits": "b4-typo"}
    for rule, row_id in expect.items():
        assert any(f" {row_id}:" in line for line in problems.get(rule, [])), (rule, dict(problems))
    assert set(problems) == set(expect)
    assert main(["data", "audit", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAIL typo_code_tokens: 1 violation(s)" in out and "b3-template" in out
    assert main(["data", "audit", str(good)]) == 0
    out = capsys.readouterr().out
    assert "ok   typo_edits" in out and "ok   template_verbatim" in out


def test_robust_files_repeating_originals_are_not_near_duplicates(tmp_path):
    a = write_jsonl(tmp_path / "typo.jsonl", _pair("g1", Q1, "typo", "How do I duplicate a netsed structure with "
                                                                   "copy.deepcopy()?"))
    b = write_jsonl(tmp_path / "surface.jsonl", _pair("g1", Q1, "surface", "how do i duplicate a nested structure "
                                                                         "with copy.deepcopy()"))
    problems, _ = audit_rows({str(a): load_data(a), str(b): load_data(b)})
    assert dict(problems) == {}
