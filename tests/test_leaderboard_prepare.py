"""Leaderboard: ``consistbench leaderboard prepare`` makes a submission directory from an
evaluation output folder, byte-reproducibly.
"""

from __future__ import annotations

import pytest

from consistbench.benchmark.cli import main

# the shared submission and helpers, built once per session (a plugin, its asserts rewritten)
pytest.register_assert_rewrite("tests.leaderboard_fixtures")
pytest_plugins = ["tests.leaderboard_fixtures"]
from tests.leaderboard_fixtures import meta, read_results  # noqa: E402


def test_prepare_writes_reproducible_bytes(tmp_path, eval_dir, real_submission):
    again = tmp_path / "again"
    assert main(["leaderboard", "prepare", str(eval_dir), "-o", str(again), "--name", "tiny chatty llama",
                 "--submitter", "consistbench tests", "--link", "https://example.org/tiny", "--date", "2026-11-22"]) == 0
    for f in real_submission.iterdir():
        assert (again / f.name).read_bytes() == f.read_bytes(), f.name
    assert meta(again)["model"]["parameters"] == read_results(again)["config"]["model_num_parameters"]
