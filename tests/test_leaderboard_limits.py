"""Leaderboard: hostile input. Every case gives one error line (no traceback) and never unbounded
cost: duplicate keys, deep nesting, huge integers, Infinity, lone surrogates, symbolic links, long
responses, gzip bombs (``consistbench.leaderboard.limits``).
"""

from __future__ import annotations

import gzip
import json
import os

import pytest

from consistbench.leaderboard import limits as L
from consistbench.leaderboard import rescore as R
from consistbench.leaderboard import tracks as T
from consistbench.leaderboard import validate as V

# the shared submission and helpers, built once per session (a plugin, its asserts rewritten)
pytest.register_assert_rewrite("tests.leaderboard_fixtures")
pytest_plugins = ["tests.leaderboard_fixtures"]
from tests.leaderboard_fixtures import (  # noqa: E402
    TASK, cli_rejects, meta, raw_results, read_samples, rejects, results_path, write_samples)


def test_rejects_duplicate_keys_in_the_results_json(sub, capsys):
    # the inflated value first: Python's json keeps the last (true) one, another parser the first
    text = raw_results(sub)
    results_path(sub).write_text(text.replace('"em,none":', '"em,none": 0.99, "em,none":', 1))
    cli_rejects(sub, capsys, "duplicate key 'em,none'")


def test_rejects_duplicate_keys_in_metadata(sub, capsys):
    text = (sub / "metadata.json").read_text()
    (sub / "metadata.json").write_text(text.replace('"parameters":', '"parameters": 7000000000, "parameters":', 1))
    cli_rejects(sub, capsys, "metadata.json", "duplicate key 'parameters'")


@pytest.mark.parametrize("depth", [40, 5000])
def test_rejects_deep_nesting_without_a_traceback(sub, capsys, depth):
    text = raw_results(sub)
    results_path(sub).write_text(text.replace("{", '{"deep": ' + "[" * depth + "]" * depth + ", ", 1))
    cli_rejects(sub, capsys, "nested", f"{L.DEPTH}")


def test_rejects_a_5000_digit_integer_without_a_traceback(sub, capsys):
    text = raw_results(sub)
    results_path(sub).write_text(text.replace("{", '{"big": ' + "7" * 5000 + ", ", 1))
    cli_rejects(sub, capsys, "an integer of 5000 digits")


def test_rejects_infinity(sub, capsys):
    text = raw_results(sub)
    results_path(sub).write_text(text.replace('"em,none": ', '"em,none": Infinity, "x": ', 1))
    cli_rejects(sub, capsys, "Infinity is not accepted")


def test_rejects_a_lone_surrogate_in_a_response_without_a_traceback(sub, capsys):
    samples = read_samples(sub)
    s = samples[3]
    text = "fine words \ud800 then more"  # a lone surrogate: Python keeps it, UTF-8 cannot encode it
    s["resps"], s["filtered_resps"] = [[text]], [text]
    for m in T.load_task(TASK).metrics:
        s[m][3] = text
    # json.dumps escapes it as \ud800 (ensure_ascii), exactly what a hostile file holds
    write_samples(sub, [], raw_lines=[json.dumps(x) + "\n" for x in samples])
    cli_rejects(sub, capsys, ":4:", "lone surrogate \\ud800")


def test_rejects_a_symlink_loop_without_a_traceback(sub, capsys):
    name = meta(sub)["files"]["samples"]
    (sub / name).unlink()
    os.symlink(sub / "loop-b", sub / name)
    os.symlink(sub / name, sub / "loop-b")
    cli_rejects(sub, capsys, "symbolic link loop")


def test_rejects_a_symlink_inside_the_directory(sub, capsys):
    name = meta(sub)["files"]["results"]
    (sub / name).rename(sub / "elsewhere.json")
    os.symlink("elsewhere.json", sub / name)
    cli_rejects(sub, capsys, "is a symbolic link")


def test_rejects_a_symlinked_submission_directory(tmp_path, sub, capsys):
    link = tmp_path / "linked"
    os.symlink(sub, link)
    cli_rejects(link, capsys, "submission directory is a symbolic link")


def test_rejects_a_very_long_response_before_any_metric_runs(sub, capsys, monkeypatch):
    samples = read_samples(sub)
    text = "word " * 2000  # 10,000 characters: ROUGE-L is quadratic in it
    s = samples[0]
    s["resps"], s["filtered_resps"] = [[text]], [text]
    for m in T.load_task(TASK).metrics:
        s[m][3] = text
    write_samples(sub, samples)

    def no_metrics(*a, **k):
        raise AssertionError("a metric ran on a response above the limit")

    monkeypatch.setattr(V, "rescore", no_metrics)
    cli_rejects(sub, capsys, "10,000 characters, above the limit of 4,096")


def test_rejects_responses_whose_rouge_cost_is_above_the_budget(sub, monkeypatch):
    from consistbench.benchmark import metrics as M

    monkeypatch.setattr(M, "MAX_ROUGE_CELLS", 1000)
    R.clear_memo()
    rejects(sub, "ROUGE-L table cells, above the limit of 1,000")


def test_a_gzip_bomb_is_refused_within_one_line_of_memory(sub, monkeypatch):
    import tracemalloc

    monkeypatch.setitem(L.LIMITS, "samples_line", 256 * 1024)
    line = b'{"doc": "' + b"a" * (16 * 1024 * 1024) + b'"}\n'  # 16 MiB on one line, ~16 KB compressed
    path = sub / meta(sub)["files"]["samples"]
    path.write_bytes(gzip.compress(line, compresslevel=9))
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        rejects(sub, ":1: line longer than the limit of 256 KiB once decompressed")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak  # a few buffers of the line limit, never the 16 MiB line
