"""Input files saved by other tools: a UTF-8 byte-order mark (Windows editors, Excel) is accepted by
every command that reads a user's file; a file that is not UTF-8 (Latin-1) is refused with one
line naming the file, the line and the byte offset, and a non-zero exit."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import DataError
from consistbench.benchmark.fileio import read_jsonl, read_text
from consistbench.benchmark.untrusted import decode_utf8, read_json

REPO = Path(__file__).resolve().parents[1]
BOM = b"\xef\xbb\xbf"


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _latin1(rows: list[dict], line: int) -> tuple[bytes, int]:
    """The rows as UTF-8, except line ``line`` (1-based) with an 'é' in Latin-1; the bad byte's offset."""
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in rows]
    lines[line - 1] = lines[line - 1].replace('"question": "', '"question": "Caf\u00e9 ', 1)
    head = "".join(lines[:line - 1]).encode("utf-8")
    bad = lines[line - 1].encode("latin-1")
    return head + bad + "".join(lines[line:]).encode("utf-8"), len(head) + bad.index(b"\xe9")


def _refused(capsys, argv: list[str], path: Path, line: int, offset: int) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert str(path) in err and "invalid UTF-8" in err
    assert f"line {line}" in err and f"byte offset {offset}" in err, err
    assert len(err.splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# the reader

def test_the_reader_drops_a_bom_and_locates_a_bad_byte(tmp_path):
    rows = [{"question": "a"}, {"question": "b"}, {"question": "c"}]
    (tmp_path / "bom.jsonl").write_bytes(BOM + _jsonl(rows))
    assert [r["question"] for r in read_jsonl(tmp_path / "bom.jsonl")] == ["a", "b", "c"]
    data, offset = _latin1(rows, 3)
    (tmp_path / "l1.jsonl").write_bytes(data)
    with pytest.raises(DataError, match=rf"l1.jsonl:3: invalid UTF-8 at line 3, byte offset {offset} "):
        read_jsonl(tmp_path / "l1.jsonl")
    (tmp_path / "doc.json").write_bytes(BOM + b'{\n "a": 1\n}\n')
    assert read_json(tmp_path / "doc.json") == {"a": 1}
    (tmp_path / "bad.json").write_bytes(b'{\n "a": "caf\xe9"\n}\n')
    with pytest.raises(DataError, match=r"bad.json:2: invalid UTF-8 at line 2, byte offset 12 \(byte 11 of the line"):
        read_json(tmp_path / "bad.json")
    (tmp_path / "t.yaml").write_bytes(BOM + "k: é\n".encode())
    assert read_text(tmp_path / "t.yaml") == "k: é\n"


def test_a_bom_is_only_dropped_at_the_start():
    assert decode_utf8(BOM + b"x", "f", strip_bom=True) == "x"
    assert decode_utf8(b"x" + BOM, "f", strip_bom=True) == "x\ufeff"  # inside the text it is a character
    with pytest.raises(DataError, match="line 2, byte offset 6 "):  # offsets count the BOM's bytes
        decode_utf8(BOM + b"ab\n\xff", "f", strip_bom=True, offset=0)


def test_a_utf16_file_is_refused_not_guessed(tmp_path):
    (tmp_path / "u16.jsonl").write_bytes('{"question": "a"}\n'.encode("utf-16"))
    with pytest.raises(DataError, match="u16.jsonl:1: invalid UTF-8 at line 1, byte offset 0"):
        read_jsonl(tmp_path / "u16.jsonl")


# ---------------------------------------------------------------------------------------------
# each command

def test_score_accepts_a_bom_and_refuses_latin1(tmp_path, capsys, responses_rows):
    (tmp_path / "bom.jsonl").write_bytes(BOM + _jsonl(responses_rows))
    assert main(["score", str(tmp_path / "bom.jsonl"), "--n-resamples", "10", "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["counts"]
    data, offset = _latin1(responses_rows, 4)
    (tmp_path / "l1.jsonl").write_bytes(data)
    capsys.readouterr()
    _refused(capsys, ["score", str(tmp_path / "l1.jsonl")], tmp_path / "l1.jsonl", 4, offset)


def test_data_validate_and_audit_accept_a_bom_and_refuse_latin1(tmp_path, capsys, responses_rows):
    rows = [{k: v for k, v in r.items() if k != "response"} for r in responses_rows]
    (tmp_path / "bom.jsonl").write_bytes(BOM + _jsonl(rows))
    assert main(["data", "validate", str(tmp_path / "bom.jsonl")]) == 0
    code = main(["data", "audit", str(tmp_path / "bom.jsonl")])
    out = capsys.readouterr()
    assert "invalid UTF-8" not in out.err and "BOM" not in out.err
    assert code in (0, 1)  # read and audited (the toy rows may break an audit rule: that is exit 1)
    data, offset = _latin1(rows, 2)
    (tmp_path / "l1.jsonl").write_bytes(data)
    _refused(capsys, ["data", "audit", str(tmp_path / "l1.jsonl")], tmp_path / "l1.jsonl", 2, offset)
    _refused(capsys, ["data", "validate", str(tmp_path / "l1.jsonl")], tmp_path / "l1.jsonl", 2, offset)


def test_variants_accepts_a_bom_and_refuses_latin1(tmp_path, capsys):
    rows = [{"question": "How do I copy a list?"}, {"question": "What does len return?"}]
    (tmp_path / "bom.jsonl").write_bytes(BOM + _jsonl(rows))
    assert main(["variants", str(tmp_path / "bom.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--types", "how_to"]) == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert out[0]["question"] == "How do I copy a list?"  # no BOM glued to the first row's key or value
    data, offset = _latin1(rows, 2)
    (tmp_path / "l1.jsonl").write_bytes(data)
    capsys.readouterr()
    _refused(capsys, ["variants", str(tmp_path / "l1.jsonl"), "-o", str(tmp_path / "x.jsonl"), "--types", "how_to"],
             tmp_path / "l1.jsonl", 2, offset)
    assert not (tmp_path / "x.jsonl").exists()


def _submission(tmp_path: Path) -> Path:
    sub = tmp_path / "sub"
    shutil.copytree(REPO / "leaderboard" / "submissions" / "smollm2-135m-instruct-mini", sub)
    (sub / "reproduction.json").unlink()  # its record covers the original bytes of metadata.json
    return sub


def test_leaderboard_validate_refuses_a_latin1_metadata_file(tmp_path, capsys):
    sub = _submission(tmp_path)
    text = (sub / "metadata.json").read_text(encoding="utf-8")
    text = text.replace('"name": "consistbench maintainers"', '"name": "consistbench mainteneurs d\u00e9di\u00e9s"')
    data = text.encode("latin-1")
    (sub / "metadata.json").write_bytes(data)
    line = data[:data.index(b"\xe9")].count(b"\n") + 1
    _refused(capsys, ["leaderboard", "validate", str(sub)], sub / "metadata.json", line, data.index(b"\xe9"))


@pytest.mark.slow
def test_leaderboard_validate_accepts_a_bom_in_metadata(tmp_path, capsys):
    sub = _submission(tmp_path)
    (sub / "metadata.json").write_bytes(BOM + (sub / "metadata.json").read_bytes())
    assert main(["leaderboard", "validate", str(sub)]) == 0
    assert "OK" in capsys.readouterr().out


def test_the_message_is_one_line_with_a_hint():
    with pytest.raises(DataError) as exc:
        decode_utf8(b"ok\nnot \xe9 utf8\n", "in.jsonl", strip_bom=True)
    assert re.fullmatch(r"in\.jsonl:2: invalid UTF-8 at line 2, byte offset 7 \(byte 5 of the line, 0xe9: .*\); "
                        r"save the file as UTF-8 .*", str(exc.value))
