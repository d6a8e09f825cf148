"""The hardened reader behind `score`, `data validate`, `data audit` and `compare`: every hostile
file gives one `consistbench: error:` line and exit status 2, never a traceback or unbounded cost.

The reader itself (:mod:`consistbench.benchmark.untrusted`) is also tested directly for the
decisions it documents (NaN, Infinity, depth, integers, surrogates, duplicate keys, files).
"""

from __future__ import annotations

import gzip
import json
import math
import os

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import DataError
from tests.conftest import make_row, write_jsonl


def _rows(response_of=lambda i, r: f"Use tool {i % 3}."):
    rows = []
    for g in range(4):
        gid = f"g{g}"
        rows.append(make_row(gid, "original", f"How do I copy list {g}?"))
        rows.append(make_row(gid, "paraphrase", f"What is the way to duplicate list {g}?"))
    return [dict(r, response=response_of(i, r)) for i, r in enumerate(rows)]


def _lines(rows) -> list[str]:
    return [json.dumps(r) + "\n" for r in rows]


def one_error_line(capsys, argv, *needles) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("consistbench: error:"), err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


HOSTILE_LINES = {
    # name: (transform the JSON text of line 3, the message)
    "deep nesting": (lambda line: line.replace("{", '{"deep": ' + "[" * 5000 + "]" * 5000 + ", ", 1),
                     "nested too deep"),
    "moderate nesting": (lambda line: line.replace("{", '{"deep": ' + "[" * 100 + "]" * 100 + ", ", 1),
                         "nested more than 64 deep"),
    "5000-digit integer": (lambda line: line.replace("{", '{"n": ' + "9" * 5000 + ", ", 1),
                           "an integer of 5000 digits"),
    "lone surrogate": (lambda line: line.replace('"response": "', '"response": "\\udc80', 1),
                       "lone surrogate \\udc80"),
    "duplicate key": (lambda line: line.replace('"response": ', '"response": "Use tool 1.", "response": ', 1),
                      "duplicate key 'response'"),
    "Infinity": (lambda line: line.replace("{", '{"score": -Infinity, ', 1), "-Infinity is not accepted"),
    "float overflow": (lambda line: line.replace("{", '{"score": 1e400, ', 1), "overflows to infinity"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_LINES))
@pytest.mark.parametrize("command", ["score", "data validate", "data audit"])
def test_hostile_json_gives_one_line(tmp_path, capsys, case, command):
    transform, needle = HOSTILE_LINES[case]
    lines = _lines(_rows())
    lines[2] = transform(lines[2])
    path = tmp_path / "hostile.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    argv = {"score": ["score", str(path), "--no-bs"], "data validate": ["data", "validate", str(path)],
            "data audit": ["data", "audit", str(path)]}[command]
    one_error_line(capsys, argv, f"{path}:3:", needle)


def test_compare_refuses_a_results_json_with_duplicate_keys(tmp_path, capsys):
    from consistbench.benchmark.schema import data_checksum, parse_row
    from tests.test_compare import lm_eval_dir

    rows = _rows()
    version = data_checksum([parse_row(r, "x") for r in rows])
    run = lm_eval_dir(tmp_path, "model_a", rows, version)
    results = next((tmp_path / "model_a" / "model__x").glob("results_*.json"))
    # two "configs": one parser reads the other data version, Python's json the last one
    text = results.read_text()
    results.write_text(text.replace('"configs":', '"configs": {"consistency": {"metadata": {"data_sha256": "'
                                    + "0" * 64 + '"}}}, "configs":', 1))
    other = write_jsonl(tmp_path / "b.jsonl", rows)
    one_error_line(capsys, ["compare", run, str(other), "--no-bs"], results.name, "duplicate key 'configs'")


@pytest.mark.parametrize("case", ["5000-digit integer", "duplicate key", "lone surrogate"])
def test_compare_refuses_hostile_responses(tmp_path, capsys, case):
    transform, needle = HOSTILE_LINES[case]
    lines = _lines(_rows())
    lines[2] = transform(lines[2])
    bad = tmp_path / "a.jsonl"
    bad.write_text("".join(lines), encoding="utf-8")
    good = write_jsonl(tmp_path / "b.jsonl", _rows())
    one_error_line(capsys, ["compare", str(bad), str(good), "--no-bs"], needle)


def test_score_refuses_a_response_above_the_limit_before_any_metric(tmp_path, capsys, monkeypatch):
    from consistbench.benchmark import metrics as M

    def no_metrics(*a, **k):
        raise AssertionError("a metric ran")

    monkeypatch.setattr(M, "compute_all", no_metrics)
    monkeypatch.setattr(M, "rouge_l", no_metrics)
    rows = _rows(lambda i, r: "a b " * 2500 if i == 5 else "Use it.")  # 10,000 characters
    path = write_jsonl(tmp_path / "long.jsonl", rows)
    one_error_line(capsys, ["score", str(path), "--no-bs"], ":6: field 'response' has 10,000 characters",
                   "above the limit of 4,096")


@pytest.mark.parametrize("command", ["score", "compare"])
def test_rouge_work_above_the_budget_is_refused_before_scoring(tmp_path, capsys, monkeypatch, command):
    from consistbench.benchmark import metrics as M

    monkeypatch.setattr(M, "MAX_ROUGE_CELLS", 50_000)
    rows = _rows(lambda i, r: "word " * 800)  # 4,000 characters each: within the per-text limit
    path = write_jsonl(tmp_path / "long.jsonl", rows)
    argv = ["score", str(path), "--no-bs"] if command == "score" else ["compare", str(path), str(path), "--no-bs"]
    one_error_line(capsys, argv, "ROUGE-L table cells, above the limit of 50,000")


def test_filesystem_oddities_give_one_line(tmp_path, capsys):
    loop = tmp_path / "loop.jsonl"
    os.symlink(tmp_path / "other.jsonl", loop)
    os.symlink(loop, tmp_path / "other.jsonl")
    one_error_line(capsys, ["score", str(loop)], "symbolic link loop")
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)  # opening a FIFO for reading would block until a writer comes
    one_error_line(capsys, ["data", "validate", str(fifo)], "is a FIFO (named pipe), not a regular file")
    one_error_line(capsys, ["data", "validate", str(tmp_path)], "is a directory, not a regular file")
    one_error_line(capsys, ["data", "audit", "/dev/zero"], "is a character device, not a regular file")


# ---------------------------------------------------------------------------------------------
# The reader's documented decisions

def test_reader_decisions():
    from consistbench.benchmark.untrusted import DEFAULT_LIMITS, loads

    assert loads('{"a": [1, 2.5, "x", null, true]}', "t") == {"a": [1, 2.5, "x", None, True]}
    assert math.isnan(loads("NaN", "t"))  # lm-eval writes NaN for a metric without data
    with pytest.raises(DataError, match="t: NaN is not accepted in this file"):
        loads("NaN", "t", DEFAULT_LIMITS.but(nan=False))
    with pytest.raises(DataError, match="an integer of 33 digits"):
        loads("-" + "1" * 33, "t")
    assert loads("-" + "1" * 32, "t") == -int("1" * 32)
    with pytest.raises(DataError, match="a string of 11 characters"):
        loads('"hello world"', "t", DEFAULT_LIMITS.but(string_chars=10))
    with pytest.raises(DataError, match="lone surrogate"):
        loads('{"\\ud83d": 1}', "t")  # in a key too
    assert loads('"\\ud83d\\ude00"', "t") == "\U0001F600"  # a proper pair is one character
    with pytest.raises(DataError, match="invalid UTF-8"):
        loads(b'"\xed\xa0\x80"', "t")  # an encoded surrogate is not UTF-8
    assert loads("[" * 64 + "]" * 64, "t") is not None
    with pytest.raises(DataError, match="nested more than 64 deep"):
        loads("[" * 65 + "]" * 65, "t")


def test_gzip_members_are_read_incrementally(tmp_path):
    import tracemalloc

    from consistbench.benchmark.untrusted import DEFAULT_LIMITS, iter_jsonl

    bomb = tmp_path / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb") as fh:  # 32 MiB of text on one line: 32 KB compressed
        fh.write(b'{"x": "')
        for _ in range(32):
            fh.write(b"z" * (1 << 20))
        fh.write(b'"}\n')
    assert bomb.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"bomb.jsonl.gz:1: line longer than the limit of 1 MiB once decompressed"):
            list(iter_jsonl(bomb, DEFAULT_LIMITS.but(line_bytes=1 << 20)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * (1 << 20), peak
    many = tmp_path / "many.jsonl.gz"
    with gzip.open(many, "wb") as fh:
        for _ in range(1000):
            fh.write(b'{"x": "' + b"z" * 1000 + b'"}\n')
    with pytest.raises(DataError, match="above the limit of 100 KiB once decompressed"):
        list(iter_jsonl(many, DEFAULT_LIMITS.but(text_bytes=100 * 1024)))
    assert sum(1 for _ in iter_jsonl(many)) == 1000
