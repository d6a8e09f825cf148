"""The labelled probe file for the rule-based variant behaviours; fails under 95% accuracy.

Cases cover irregular plurals, uncountable nouns, a/an by sound, how-to forms, accepted and
rejected rewrites, and whole-question generation. Every failing case is printed.
"""

import json
from pathlib import Path

import pytest

from consistbench.benchmark.variants import how_to, plural_article

PROBES = Path(__file__).parent / "data" / "variant_probes.jsonl"
KINDS = {"pluralize", "singularize", "indefinite_article", "how_to_parse", "how_to_variant", "how_to_pair",
         "how_to_rewrite", "plural_article_variant", "plural_article_generates", "plural_article_never"}


def run_case(case):
    kind, inp, exp = case["kind"], case["input"], case["expected"]
    if kind == "pluralize":
        return plural_article.pluralize(inp) == exp
    if kind == "singularize":
        return plural_article.singularize(inp) == exp
    if kind == "indefinite_article":
        return plural_article.indefinite_article(inp) == exp
    if kind == "how_to_parse":
        parsed = how_to.parse(inp)
        return (parsed is None) if exp is None else (parsed is not None and parsed.x == exp)
    if kind == "how_to_variant":
        return how_to.is_variant(*inp) == exp
    if kind == "how_to_pair":
        return how_to.pair_kind(*inp) == exp
    if kind == "how_to_rewrite":
        # None: no variant; a first-person X always gets "How to X" (with or without "?"); elsewhere the
        # expected text must be one of the variants the rule allows
        got = how_to.rewrite(inp, "probe")
        if exp is None or got is None:
            return got == exp
        if "my" in inp.split():
            return got.rstrip("?") == exp.rstrip("?")
        return exp in how_to.candidates(inp, "probe")
    if kind == "plural_article_variant":
        return plural_article.is_variant(*inp) == exp
    if kind == "plural_article_generates":
        return exp in plural_article.candidates(inp)
    if kind == "plural_article_never":
        return exp not in plural_article.candidates(inp)
    raise AssertionError(f"unknown probe kind {kind}")


def test_probe_file_is_large_and_covers_every_behaviour():
    cases = [json.loads(line) for line in PROBES.read_text().splitlines() if line.strip()]
    assert len(cases) >= 60
    assert {c["kind"] for c in cases} == KINDS
    notes = {c.get("note") for c in cases}
    assert {"irregular", "uncountable"} <= notes


def test_probe_accuracy_at_least_95_percent(capsys):
    cases = [json.loads(line) for line in PROBES.read_text().splitlines() if line.strip()]
    failures = [c for c in cases if not run_case(c)]
    accuracy = 1 - len(failures) / len(cases)
    with capsys.disabled():
        print(f"\nvariant probe accuracy: {accuracy:.3f} ({len(cases) - len(failures)}/{len(cases)})")
        for c in failures:
            print("  FAIL", json.dumps(c, ensure_ascii=False))
    assert accuracy >= 0.95


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_behaviour_mostly_right(kind):
    cases = [json.loads(line) for line in PROBES.read_text().splitlines() if line.strip()]
    mine = [c for c in cases if c["kind"] == kind]
    right = sum(run_case(c) for c in mine)
    assert right / len(mine) >= 0.85, f"{kind}: {right}/{len(mine)}"
