"""The v2 audit rules, run on the frozen v1 data, flag every item an independent read of v1 named."""

from __future__ import annotations

import pytest

from consistbench.benchmark.audit import audit_rows
from consistbench.benchmark.schema import load_data
from tests.conftest import REPO

V1 = REPO / "tasks" / "consistency" / "data" / "v1"

# group id -> the rule that must name it (the list of weak v1 items)
NAMED = {
    "g0e08e70b96de": "paraphrase_polarity",       # "What does dry_run do?" -> "does ... write any file?"
    "ga0b59af49266": "paraphrase_polarity",       # "How does Python treat signaling NaNs?" -> "Is there any difference ...?"
    "g596b2b2ccd8d": "paraphrase_sub_question",   # "..., and can an entry's type be changed?"
    "geef27ebe18c8": "answer_hint",               # the reference's "(?...)" in the paraphrase
    "gf26b16199eb3": "answer_hint",               # the reference's "3.9" in the paraphrase
    "g441f678f3efd": "answer_hint",               # narrowed to the reference's example (logging.INFO)
    "g4d299611ea8c": "reference_pointer",         # "See the FAQ ..."
    "gd39789777729": "reference_foreign_name",    # names LifoQueue, absent from the passage
    "g4ab9ebef7687": "reference_foreign_name",    # names BufferingLoggerWriter, absent from the passage
}
# near-twins across splits: (test or dev group, train group)
TWINS = [("gde7ff2d58814", "g756163dc4bee"),  # same question, same answer (cosine 0.91)
         ("g3320ea75c57f", "g12c13340b205")]  # bz2 and lzma passages with identical text


@pytest.fixture(scope="module")
def v1_audit():
    files = {str(V1 / f"{s}.jsonl"): load_data(V1 / f"{s}.jsonl") for s in ("train", "dev", "test")}
    return audit_rows(files)


def test_v1_named_items_are_flagged_by_the_rule_that_describes_them(v1_audit):
    problems, _ = v1_audit
    for gid, rule in NAMED.items():
        assert any(f" {gid}-" in line for line in problems.get(rule, [])), (gid, rule)


def test_v1_near_twins_across_splits_are_flagged(v1_audit):
    problems, _ = v1_audit
    lines = problems.get("near_twin_split", [])
    for a, b in TWINS:
        assert any(a in line and b in line for line in lines), (a, b)
    same_text = [line for line in lines if "has the same text as" in line]
    assert any("lzma.html#lzma.LZMADecompressor.decompress" in line and "bz2.html#bz2.BZ2Decompressor.decompress"
               in line for line in same_text)


def test_v1_openings_are_flagged_per_split(v1_audit):
    problems, stats = v1_audit
    lines = problems.get("opening_share", [])
    assert any(line.startswith("split test: 'how do' opens 569 of 1415 originals (40.2%") for line in lines), lines
    assert any(line.startswith("split dev: 'how do'") for line in lines)
    assert any(line.startswith("split train: 'how do'") for line in lines)
    assert stats[str(V1 / "test.jsonl")]["openings"]["test"]["how do"] == pytest.approx(569 / 1415, abs=1e-4)
