"""Data and responses files: one clear error naming the line and the problem, exit 2, no output."""

import json

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import DataError
from consistbench.benchmark.schema import data_checksum, load_data, load_responses
from tests.conftest import make_row, write_jsonl


def good_rows():
    return [make_row("g1", "original", "How do I copy a list?"), make_row("g1", "how_to", "How to copy a list"),
            make_row("g2", "original", "What does x return?", passage="doc.html#other")]


def test_valid_file_loads_and_keeps_extra_fields(tmp_path):
    rows = good_rows()
    rows[0]["origin"] = "faq"
    data = load_data(write_jsonl(tmp_path / "d.jsonl", rows))
    assert [r.id for r in data] == ["g1-orig", "g1-howto", "g2-orig"]
    assert data[0].extra == {"origin": "faq"} and data[1].line == 2


@pytest.mark.parametrize("mutate, message", [
    (lambda rows: rows[1].pop("reference"), ":2: missing field 'reference'"),
    (lambda rows: rows[1].update(variant_type="synonym"), ":2: unknown variant_type 'synonym'"),
    (lambda rows: rows[1].update(split="validation"), ":2: unknown split 'validation'"),
    (lambda rows: rows[1].update(question=3), ":2: field 'question' must be a string"),
    (lambda rows: rows[2].update(id="g1-orig"), ":3: duplicate id 'g1-orig' (first on line 1)"),
    (lambda rows: rows.pop(0), "group 'g1' has no original"),
    (lambda rows: rows[1].update(variant_type="original"), "group 'g1' has a second original"),
    (lambda rows: rows[1].update(reference="other"), ":2: reference differs from its group's original"),
    (lambda rows: rows[2].update(passage_id=rows[0]["passage_id"], split="train"), "is in split 'train' and in split 'test'"),
])
def test_schema_errors_name_line_and_problem(tmp_path, mutate, message):
    rows = good_rows()
    for r in rows[2:]:
        r["passage_id"] = "doc.html#other"
    mutate(rows)
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_data(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(good_rows()[0]).encode() + b"\n" + b'{"id": "\xff\xfe"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: invalid UTF-8"):
        load_data(path)


def test_malformed_json_and_empty_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(good_rows()[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        load_data(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="no rows"):
        load_data(empty)


def test_responses_need_a_string_response(tmp_path):
    rows = [dict(r, response="x") for r in good_rows()]
    rows[1].pop("response")
    with pytest.raises(DataError, match=r":2: missing field 'response'"):
        load_responses(write_jsonl(tmp_path / "r.jsonl", rows))
    rows[1]["response"] = None
    with pytest.raises(DataError, match=r":2: field 'response' must be a string"):
        load_responses(write_jsonl(tmp_path / "r.jsonl", rows))


@pytest.mark.parametrize("case", ["missing_field", "unknown_type", "no_original", "duplicate_id", "bad_utf8", "no_rows"])
def test_cli_score_bad_input_exit_2_and_no_output(tmp_path, capsys, case):
    rows = [dict(r, response="Use copy.") for r in good_rows()]
    path = tmp_path / "responses.jsonl"
    if case == "missing_field":
        rows[0].pop("group_id")
    elif case == "unknown_type":
        rows[1]["variant_type"] = "misspelt"  # not a type ("typo" is a robust family)
    elif case == "no_original":
        rows.pop(0)
    elif case == "duplicate_id":
        rows[2]["id"] = rows[0]["id"]
    if case == "bad_utf8":
        path.write_bytes(b"\xc3\x28\n")
    elif case == "no_rows":
        path.write_text("")
    else:
        write_jsonl(path, rows)
    out = tmp_path / "result.json"
    code = main(["score", str(path), "--json", str(out), "--no-bs"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("consistbench: error: ") and err.count("\n") == 1
    assert str(path) in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["responses.jsonl"]  # no temporary left behind


def test_cli_data_validate(tmp_path, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", good_rows())
    assert main(["data", "validate", str(path)]) == 0
    assert "OK, 3 rows, 2 groups" in capsys.readouterr().out
    path.write_text('{"id": 1}\n')
    assert main(["data", "validate", str(path)]) == 2


def test_checksum_tracks_content_not_order(tmp_path):
    rows = good_rows()
    a = data_checksum(load_data(write_jsonl(tmp_path / "a.jsonl", rows)))
    b = data_checksum(load_data(write_jsonl(tmp_path / "b.jsonl", list(reversed(rows)))))
    rows[0]["context"] = "changed"
    rows[1]["context"] = "changed"
    c = data_checksum(load_data(write_jsonl(tmp_path / "c.jsonl", rows)))
    assert a == b and a != c
