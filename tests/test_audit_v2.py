"""The data v3 audit rules, run on the frozen v2 data, flag what the second reading of v2 found:
how_to variants outside the how-to/how-do alternation, "What's the way to" paraphrases and their
share, paraphrases that copy the group's how_to, and a how_to mix that is mostly not the core pair.
(The audit of v3 itself, clean, is in test_audit.py.)"""

from __future__ import annotations

import pytest

from consistbench.benchmark.audit import audit_rows
from consistbench.benchmark.schema import load_data
from tests.conftest import REPO

V2 = REPO / "tasks" / "consistency" / "data" / "v2"
# group id -> the v3 rule that must name it (items of the v2 test split the reading changed)
NAMED = {
    "ge001744cccc4": "how_to_form",          # how_to "What is the way to X?" (a request for a name)
    "g6c7e622b163a": "how_to_form",          # how_to "Is there a way to X?" (yes/no)
    "g0b084b2f5fc4": "how_to_form",          # how_to "How can I X?" (a modal form as the variant)
    "gaaa366dc21e4": "paraphrase_template",  # "What's the way to run an arbitrary string of Python code ..."
    "gff9a3097a80f": "paraphrase_template",  # the template behind a fronted phrase ("With the GIL in place, what's the way to")
    "gd6c46a6b44d6": "near_how_to",          # paraphrase and how_to nearly the same string
}
# enough whole groups for the split-level rules (at least 100 paraphrases and 50 how_to pairs)
FIRST_GROUPS = 400


@pytest.fixture(scope="module")
def v2_audit():
    rows = load_data(V2 / "test.jsonl")
    order = list(dict.fromkeys(r.group_id for r in rows))
    keep = set(order[:FIRST_GROUPS]) | set(NAMED)
    return audit_rows({str(V2 / "test.jsonl"): [r for r in rows if r.group_id in keep]})


@pytest.mark.slow
def test_v2_items_are_flagged_by_the_v3_rule_that_describes_them(v2_audit):
    problems, _ = v2_audit
    for gid, rule in NAMED.items():
        assert any(f" {gid}-" in line for line in problems.get(rule, [])), (gid, rule)


@pytest.mark.slow
def test_v2_split_level_rules_fail(v2_audit):
    problems, _ = v2_audit
    assert any("\"what's the way\"" in line for line in problems.get("paraphrase_opening_share", []))
    (line,) = problems["how_to_pairs"]
    core = float(line.split(", ")[1].split("%")[0])
    assert core < 50  # v2's how_to variants were mostly modal and pronoun swaps
