"""The data v3 rules (how-to forms, answer hints in every variant type, paraphrase templates and
opening shares, how_to vs paraphrase closeness, the core/modal mix) on cases they must flag and
cases they must let through, and the second reading as the build applies it."""

from __future__ import annotations

import json

import pytest

from consistbench.benchmark import audit_rules as R
from consistbench.benchmark import reading
from consistbench.benchmark.audit import audit_rows
from consistbench.benchmark.errors import DataError
from consistbench.benchmark.schema import load_data
from consistbench.benchmark.variants import how_to
from tests.conftest import make_row, write_jsonl


def rules(problems) -> set[str]:
    return {p.rule for p in problems}


# --------------------------------------------------------------------------------------------
# how_to forms

@pytest.mark.parametrize("original, variant", [
    ("How do I copy a file?", "Is there a way to copy a file?"),        # yes/no
    ("How do I copy a file?", "What's the way to copy a file?"),        # a request for a name of a way
    ("How do I copy a file?", "How can I copy a file?"),                # a modal form is never a variant
    ("What is the way to flush stdout?", "How to flush stdout"),        # the original is outside the type
    ("How do I reset my PIN?", "How do you reset my PIN?"),              # first person in second person
])
def test_how_to_form_flags_pairs_outside_the_alternation(original, variant):
    assert rules(R.check_how_to_form(original, variant)) == {"how_to_form"}


@pytest.mark.parametrize("original, variant", [
    ("How do I reset my PIN?", "How to reset my PIN"),
    ("How to copy a list", "How do I copy a list?"),
    ("How do I copy a list?", "How does one copy a list?"),
    ("How can I sort a dict by value?", "How do I sort a dict by value?"),  # modal original: allowed
])
def test_how_to_form_lets_the_alternation_through(original, variant):
    assert R.check_how_to_form(original, variant) == []


def test_rule_made_variants_are_always_of_the_type():
    for question in ["How do I copy a file?", "How can I sort a dict?", "How should I name things?",
                     "How to read a file", "How does one make a venv?", "How do I reset my PIN?"]:
        for key in ("a", "b", "c", "d"):
            variant = how_to.rewrite(question, key)
            assert variant and how_to.pair_kind(question, variant) in ("core", "pronoun", "modal")
            assert R.check_how_to_form(question, variant) == []


# --------------------------------------------------------------------------------------------
# answer hints: every variant type (a rewrite of a how_to or plural_article that adds a word of
# the answer is caught as a paraphrase would be)

def test_answer_hint_applies_to_every_variant_type(tmp_path):
    ref = "Use fnmatchcase(); fnmatch() case-normalizes both parameters."
    rows = [make_row("g1", "original", "How do I do a case-sensitive pattern match?", reference=ref,
                     context="fnmatchcase() and fnmatch() ... " + ref),
            make_row("g1", "how_to", "How to do a case-sensitive pattern match with fnmatchcase()", reference=ref,
                     context="fnmatchcase() and fnmatch() ... " + ref)]
    problems = _audit(tmp_path, rows)
    assert any("g1-howto" in line and "fnmatchcase" in line for line in problems.get("answer_hint", []))


# --------------------------------------------------------------------------------------------
# paraphrase templates

@pytest.mark.parametrize("variant", [
    "What's the way to process command-line options using getopt?",
    "What is the way to copy a list?",
    "In Python, what\u2019s the way to read a line?",          # behind a fronted phrase, typographic apostrophe
    "Is there a way to time a function?",
])
def test_paraphrase_template_flags_template_openings(variant):
    assert rules(R.check_paraphrase_template(variant)) == {"paraphrase_template"}


@pytest.mark.parametrize("variant", [
    "Using the getopt module, how would I go about processing command-line options?",
    "What is the default encoding of open()?",  # "what is the" is not a template by itself
    "Which way does sorted() order ties?",
])
def test_paraphrase_template_lets_other_openings_through(variant):
    assert R.check_paraphrase_template(variant) == []


def test_paraphrase_opening_is_three_words_case_and_apostrophe_folded():
    assert R.paraphrase_opening("What\u2019s the Way to go?") == "what's the way"
    assert R.paraphrase_opening("Given X, how do I?") == "given x how"


# --------------------------------------------------------------------------------------------
# rules over sets of variants (audit_rows)

CTX = "Use copy.copy() for shallow copies of lists and dicts."
REF = "Use copy.copy() for a shallow copy."


def _group(gid: str, original: str, **variants) -> list[dict]:
    rows = [make_row(gid, "original", original, context=CTX, reference=REF, passage=f"p.html#{gid}")]
    rows += [make_row(gid, t, q, context=CTX, reference=REF, passage=f"p.html#{gid}") for t, q in variants.items()]
    return rows


def _audit(tmp_path, rows):
    path = write_jsonl(tmp_path / "test.jsonl", rows)
    problems, _ = audit_rows({str(path): load_data(path)})
    return problems


def test_near_how_to_flags_a_paraphrase_that_copies_the_how_to(tmp_path):
    rows = _group("g1", "How do I copy a list?", how_to="How to copy a list",
                  paraphrase="How to copy a list quickly")
    problems = _audit(tmp_path, rows)
    assert any("g1-" in line for line in problems.get("near_how_to", []))
    rows = _group("g2", "How do I copy a list?", how_to="How to copy a list",
                  paraphrase="Given a list, what gives me a second, independent one?")
    assert not _audit(tmp_path, rows).get("near_how_to")


def _many(n_groups: int, paraphrase_of, how_to_of=None) -> list[dict]:
    rows = []
    for i in range(n_groups):
        original = f"How do I copy list number {i}?"
        variants = {"paraphrase": paraphrase_of(i)}
        if how_to_of:
            variants["how_to"] = how_to_of(i, original)
        rows += _group(f"g{i:03d}", original, **variants)
    return rows


OPENERS = ["Given", "Using", "With", "When", "For", "In", "Starting", "Having", "Suppose", "Once", "After", "Before",
           "Holding", "Keeping", "Making", "Taking", "Reading", "Writing", "Building", "Needing", "Wanting", "Seeking"]


@pytest.mark.slow
def test_paraphrase_opening_share_flags_a_dominant_opening(tmp_path):
    # 120 paraphrases, 30 opening "by what means" (25 % > 5 %), the rest with varied openings
    para = lambda i: (f"By what means can list {i} be duplicated?" if i < 30  # noqa: E731
                      else f"{OPENERS[i % len(OPENERS)]} list {i} here, what duplicates it?")
    problems = _audit(tmp_path, _many(120, para))
    assert any("'by what means'" in line for line in problems.get("paraphrase_opening_share", []))
    varied = lambda i: f"{OPENERS[i % len(OPENERS)]} list {i} here, what duplicates it?"  # noqa: E731
    assert not _audit(tmp_path, _many(120, varied)).get("paraphrase_opening_share")


@pytest.mark.slow
def test_how_to_pairs_flags_a_split_of_mostly_pronoun_pairs(tmp_path):
    para = lambda i: f"{OPENERS[i % len(OPENERS)]} list {i} here, what duplicates it?"  # noqa: E731
    pronoun = lambda i, o: o.replace("How do I", "How do you")  # noqa: E731
    problems = _audit(tmp_path, _many(60, para, pronoun))
    assert problems.get("how_to_pairs") and "0.0% are the core" in problems["how_to_pairs"][0]
    core = lambda i, o: o.replace("How do I", "How to").rstrip("?")  # noqa: E731
    assert not _audit(tmp_path, _many(60, para, core)).get("how_to_pairs")


# --------------------------------------------------------------------------------------------
# the second reading, as the build applies it

def _log(path, lines):
    path.write_text("".join(json.dumps(obj) + "\n" for obj in lines), encoding="utf-8")


def _line(gid, vtype, text, verdict, **kw):
    return {"group_id": gid, "split": "test", "variant_type": vtype, "text": text, "verdict": verdict,
            "problems": kw.pop("problems", ["drift"] if verdict != "ok" else []), "reason": kw.pop("reason", "r"),
            "reader": "t", **kw}


def test_reading_applies_rule_how_to_rewrites_drops_and_reviews(tmp_path):
    gid, original = "g1", "How do I copy a list?"
    rule = how_to.rewrite(original, gid)
    _log(tmp_path / "chunk_00.jsonl", [
        _line(gid, "how_to", rule, "ok"),
        _line(gid, "plural_article", "How do I copy lists?", "drop"),
        _line(gid, "paraphrase", "What's the way to copy a list?", "rewrite", problems=["template"],
              new_text="Given a list, how would I duplicate it?"),
        _line(gid, "original", original, "note", problems=[]),
    ])
    _log(tmp_path / "review_A.jsonl", [
        _line(gid, "plural_article", "", "restore"),
        _line(gid, "paraphrase", "Given a list, how would I duplicate it?", "revise",
              new_text="Given a list, how would I make a duplicate of it?"),
    ])
    r = reading.load(tmp_path)
    written = {"how_to": "How can I copy a list?", "plural_article": "How do I copy lists?",
               "paraphrase": "What's the way to copy a list?"}
    out = reading.apply(gid, original, written, r)
    assert out == {"how_to": rule, "plural_article": "How do I copy lists?",
                   "paraphrase": "Given a list, how would I make a duplicate of it?"}
    s = r.summary()
    assert s["read"] == 3 and s["verdicts"] == {"drop": 1, "ok": 1, "rewrite": 1} and s["notes"] == 1
    assert s["review_verdicts"] == {"restore": 1, "revise": 1}


def test_reading_refuses_a_stale_line_and_an_unread_variant(tmp_path):
    gid, original = "g1", "What does copy.copy return?"
    _log(tmp_path / "chunk_00.jsonl", [_line(gid, "paraphrase", "Some older wording?", "ok")])
    r = reading.load(tmp_path)
    with pytest.raises(DataError, match="stale reading"):
        reading.apply(gid, original, {"paraphrase": "What is returned by copy.copy?"}, r)
    with pytest.raises(DataError, match="has no reading"):
        reading.apply("g2", original, {"paraphrase": "What is returned by copy.copy?"}, r)


def test_reading_refuses_malformed_lines(tmp_path):
    _log(tmp_path / "chunk_00.jsonl", [_line("g1", "paraphrase", "x?", "rewrite")])  # no new_text
    with pytest.raises(DataError, match="needs new_text"):
        reading.load(tmp_path)
    _log(tmp_path / "chunk_00.jsonl", [_line("g1", "paraphrase", "x?", "ok", problems=["nonsense"])])
    with pytest.raises(DataError, match="problems must be"):
        reading.load(tmp_path)
    _log(tmp_path / "chunk_00.jsonl", [_line("g1", "paraphrase", "x?", "ok"), _line("g1", "paraphrase", "x?", "ok")])
    with pytest.raises(DataError, match="already read"):
        reading.load(tmp_path)


def test_sample_check_counts_faults_and_refuses_a_fault_without_a_problem(tmp_path):
    _log(tmp_path / "sample-check.jsonl", [
        _line("g1", "paraphrase", "a?", "fault", problems=["drift"]),
        _line("g1", "how_to", "How to b", "ok"),
        _line("g2", "plural_article", "c?", "fault", problems=["type", "unnatural"]),
        dict(_line("g3", "paraphrase", "d?", "ok"), split="dev"),
    ])
    s = reading.load(tmp_path).summary()["sample_check"]
    assert s["judged"] == 4 and s["groups"] == 3 and s["groups_by_split"] == {"dev": 1, "test": 2}
    assert s["faults"] == 2 and s["problems"] == {"drift": 1, "type": 1, "unnatural": 1}
    assert s["drift_rate"] == pytest.approx(0.25) and s["type_rate"] == pytest.approx(0.25)
    _log(tmp_path / "sample-check.jsonl", [_line("g1", "paraphrase", "a?", "fault", problems=[])])
    with pytest.raises(DataError, match="at least one problem"):
        reading.load(tmp_path)


# --------------------------------------------------------------------------------------------
# the shipped reading

def _shipped_reading():
    from consistbench.benchmark.databuild import READING_DIR

    return READING_DIR, reading.load(READING_DIR)


def test_shipped_change_log_is_generated_from_the_readings_and_every_note_is_resolved():
    directory, r = _shipped_reading()
    assert (directory.parent / "CHANGES-v3.md").read_text(encoding="utf-8") == reading.history_markdown(r)
    assert r.notes and all(n["group_id"] in r.resolutions for n in r.notes)


def test_shipped_sample_check_is_under_the_release_limits_and_its_faults_are_fixed():
    """The independent check of 170 random groups: drift and wrong type at most 1 % each, and
    every fault it found fixed by a later reading whose text is the shipped variant."""
    from consistbench.benchmark.paths import DATA_DIR

    _, r = _shipped_reading()
    s = r.summary()["sample_check"]
    assert s["groups"] == 170 and s["judged"] >= 300
    assert s["drift_rate"] <= 0.01 and s["type_rate"] <= 0.01
    shipped = {(row.group_id, row.variant_type): row.question
               for split in ("test", "dev") for row in load_data(DATA_DIR / f"{split}.jsonl")}
    for e in r.sample:
        fix = r.final.get((e["group_id"], e["variant_type"]))
        if e["verdict"] == "fault":
            assert fix is not None, f"sample fault not fixed: {e['group_id']} {e['variant_type']}"
            assert shipped.get((e["group_id"], e["variant_type"])) == fix.get("new_text")
        elif fix is None:  # an ok judged variant is what ships
            assert shipped[(e["group_id"], e["variant_type"])] == e["text"]
