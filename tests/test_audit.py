"""`consistbench data audit`: every rule catches the row that breaks it, and the shipped data passes."""

from __future__ import annotations

import pytest

from consistbench.benchmark.audit import audit_rows
from consistbench.benchmark.cli import main
from consistbench.benchmark.schema import load_data
from tests.conftest import REPO, make_row, write_jsonl

CTX = "To copy a list, use slicing or the list.copy() method; copy.deepcopy() copies nested objects too."
REF = "Use slicing or the list.copy() method."


def good_rows(split: str = "test") -> list[dict]:
    kw = dict(split=split, context=CTX, reference=REF, passage=f"{split}.html#copy")
    return [
        make_row(f"{split}1", "original", "How do I copy a list?", **kw),
        make_row(f"{split}1", "how_to", "How to copy a list", **kw),
        make_row(f"{split}1", "plural_article", "How do I copy lists?", **kw),
        make_row(f"{split}1", "paraphrase", "In what way can I clone a list?", **kw),
    ]


# one row per rule, each breaking only that rule (the rule name, the offending row's id)
BAD = [
    ("grounding", make_row("b1", "original", "What is the capital of the moon?", context=CTX,
                           reference="The lunar capital is Tranquility Base City.", passage="b.html#1")),
    ("reference_length", make_row("b2", "original", "How do I copy nested lists?", context=CTX * 6,
                                  reference=" ".join(["use copy.deepcopy() to copy nested objects too"] * 9),
                                  passage="b.html#2")),
    ("how_to_rule", make_row("b3", "how_to", "How to sort a list", context=CTX, reference=REF, passage="b.html#3")),
    ("plural_article_rule", make_row("b4", "plural_article", "How do I delete lists?", context=CTX, reference=REF,
                                     passage="b.html#4")),
    ("paraphrase_lexical", make_row("b5", "paraphrase", "How do I copy a list in Python?", context=CTX,
                                    reference=REF, passage="b.html#5")),
    ("paraphrase_meaning", make_row("b6", "paraphrase", "Which stadium hosted the 1966 football final?",
                                    context=CTX, reference=REF, passage="b.html#6")),
]


def bad_rows() -> list[dict]:
    rows = []
    for _, row in BAD:
        if row["variant_type"] != "original":  # a variant needs its group's original
            gid = row["group_id"]
            rows.append(make_row(gid, "original", "How do I copy a list?" if gid != "b6" else
                                 "How do I make a shallow copy of a list in Python?",
                                 context=CTX, reference=REF, passage=row["passage_id"]))
        rows.append(row)
    return rows


def test_clean_file_has_no_violation(tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl", good_rows())
    problems, stats = audit_rows({str(path): load_data(path)})
    assert dict(problems) == {}
    s = stats[str(path)]
    assert s["groups"] == 1 and s["rows"] == 4
    assert s["variants"] == {"how_to": 1, "plural_article": 1, "paraphrase": 1}


@pytest.mark.slow
def test_each_rule_names_the_row_that_breaks_it(tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl", bad_rows())
    problems, _ = audit_rows({str(path): load_data(path)})
    for rule, row in BAD:
        assert any(f" {row['id']}:" in line for line in problems.get(rule, [])), (rule, dict(problems))
    # the originals added for the variants are clean (but b3/b4/b5 share a question: near-duplicates)
    flagged = {line.split(" ")[1].rstrip(":") for lines in problems.values() for line in lines
               if " ~ " not in line}
    assert flagged <= {row["id"] for _, row in BAD}


def test_near_duplicates_and_shared_passages_across_files(tmp_path):
    test = good_rows("test")
    train = good_rows("train")[:1]
    train[0]["question"] = "How do I copy a list ?"  # the same base question, in another split
    train[0]["passage_id"] = test[0]["passage_id"]  # and the same passage
    a = write_jsonl(tmp_path / "test.jsonl", test)
    b = write_jsonl(tmp_path / "train.jsonl", train)
    problems, _ = audit_rows({str(a): load_data(a), str(b): load_data(b)})
    assert len(problems["near_duplicate"]) == 1 and "train1-orig" in problems["near_duplicate"][0]
    assert any("train1-orig" in line and "split test" in line for line in problems["passages"])


def test_cli_exits_1_and_names_rows(tmp_path, capsys):
    path = write_jsonl(tmp_path / "test.jsonl", bad_rows())
    assert main(["data", "audit", str(path)]) == 1
    out = capsys.readouterr().out
    assert "audit FAILED" in out
    for rule, row in BAD:
        assert f"FAIL {rule}" in out and row["id"] in out


def test_cli_schema_error_is_one_message(tmp_path, capsys):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"id": "x"}\n', encoding="utf-8")
    assert main(["data", "audit", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("consistbench: error: ") and err.count("\n") == 1
    assert "broken.jsonl:1" in err


@pytest.mark.slow
def test_shipped_data_passes_the_audit(capsys):
    data = REPO / "tasks" / "consistency" / "data"
    files = [str(data / f"{s}.jsonl") for s in ("train", "dev", "test")]
    assert main(["data", "audit", *files]) == 0, capsys.readouterr().out[-3000:]
    out = capsys.readouterr().out
    assert "audit passed: 0 violation(s)" in out


def test_mini_subset_is_whole_groups_of_the_test_split():
    from collections import Counter

    from consistbench.tasks.consistency import utils
    full = list(utils.load(subset="all")["test"])
    mini = list(utils.load(subset="mini")["test"])
    listed = set((REPO / "tasks" / "consistency" / "data" / "mini_groups.txt").read_text().split())
    assert {r["group_id"] for r in mini} == listed  # every listed group is in the test split
    by_group = Counter(r["group_id"] for r in full)
    assert Counter(r["group_id"] for r in mini) == {g: by_group[g] for g in listed}  # all rows of each group
    assert {r["id"] for r in mini} <= {r["id"] for r in full}
    types = Counter(r["variant_type"] for r in mini)
    assert min(types[t] for t in ("how_to", "plural_article", "paraphrase")) >= 20
