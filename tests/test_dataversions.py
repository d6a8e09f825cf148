"""Data versions: v1 stays loadable and scores as it did; a data_sha256 maps to its shipped files."""

from __future__ import annotations

import json

import pytest

from consistbench.benchmark import dataversions
from consistbench.benchmark.errors import DataVersionError
from consistbench.benchmark.schema import data_checksum, load_data
from tests.conftest import REPO

TASKS = REPO / "tasks" / "consistency"
V1_DIR = TASKS / "data" / "v1"
# The published v1 data version (results JSONs and leaderboard entries made on v1 record it).
V1_SHA = "5633565d40b5ac564dd0442b0553db0af679289394db6dc8b550ee6ea61d1d62"


def test_v1_is_frozen_byte_for_byte_in_its_checksums():
    versions = json.loads((V1_DIR / "versions.json").read_text())
    assert versions["test"]["sha256"] == V1_SHA
    for split in ("train", "dev", "test"):
        rows = load_data(V1_DIR / f"{split}.jsonl")
        assert data_checksum(rows) == versions[split]["sha256"] and len(rows) == versions[split]["rows"]
    mini = set((V1_DIR / "mini_groups.txt").read_text().split())
    mini_rows = [r for r in load_data(V1_DIR / "test.jsonl") if r.group_id in mini]
    assert data_checksum(mini_rows) == versions["mini"]["sha256"] and len(mini_rows) == versions["mini"]["rows"] == 116
    manifest = json.loads((V1_DIR / "retrieval" / "manifest.json").read_text())
    assert manifest["data_sha256"] == V1_SHA


def test_a_data_sha256_maps_to_the_files_of_its_version():
    v1 = dataversions.by_sha256(V1_SHA)
    assert v1.name == "v1" and v1.directory == V1_DIR and v1.test == V1_DIR / "test.jsonl"
    assert v1.mini_groups.is_file() and v1.retrieval_dir == V1_DIR / "retrieval"
    assert dataversions.by_name("v1") == v1
    current = dataversions.current()
    assert current.directory == TASKS / "data" and current.name == dataversions.CURRENT_NAME
    assert dataversions.by_sha256(current.sha256).directory in (current.directory, V1_DIR)
    assert [v.name for v in dataversions.versions()] == ["v1", dataversions.CURRENT_NAME]
    with pytest.raises(DataVersionError, match=r"data version 0000000000000000\.\.\. is not shipped \(shipped: v1 "):
        dataversions.by_sha256("0" * 64)
    with pytest.raises(DataVersionError, match="unknown data version 'v0'"):
        dataversions.by_name("v0")
    with pytest.raises(DataVersionError, match="no 'small' subset"):
        v1.subset_file("small")


def _config(name: str) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(TASKS / f"{name}.yaml", resolve_func=False)


@pytest.mark.parametrize("current, frozen", [
    ("consistency", "consistency_v1"), ("consistency_mini", "consistency_mini_v1"),
    ("consistency_e2e_hybrid_mini", "consistency_e2e_hybrid_mini_v1"), ("consistency_e2e_bm25", "consistency_e2e_bm25_v1"),
])
def test_v1_tasks_score_as_the_current_tasks_do(current, frozen):
    """Same prompt, generation settings, metrics and aggregations; only the name, tag, data
    version and its checksum differ."""
    a, b = _config(current), _config(frozen)
    assert b["task"] == frozen and b["tag"] == ["consistbench_v1"]
    assert b["metadata"]["data_sha256"] == V1_SHA and b["dataset_kwargs"].pop("data_version") == "v1"
    for cfg in (a, b):
        cfg.pop("task"), cfg.pop("tag", None)
        cfg["metadata"].pop("data_sha256")
    assert a == b


def test_v1_tasks_load_the_frozen_rows():
    from consistbench.tasks.consistency import utils

    full = list(utils.load(data_sha256=V1_SHA, subset="all", data_version="v1")["test"])
    assert [r["id"] for r in full] == [r.id for r in load_data(V1_DIR / "test.jsonl")]
    mini = list(utils.load(data_sha256=V1_SHA, subset="mini", data_version="v1")["test"])
    assert {r["group_id"] for r in mini} == set((V1_DIR / "mini_groups.txt").read_text().split())
    e2e = list(utils.load(data_sha256=V1_SHA, subset="mini", data_version="v1", retriever="hybrid")["test"])
    assert [r["id"] for r in e2e] == [r["id"] for r in mini]
    assert any(a["context"] != b["context"] for a, b in zip(e2e, mini))  # retrieved, not gold, passages
    with pytest.raises(DataVersionError, match="expects 0000000000000000"):
        utils.load(data_sha256="0" * 64, data_version="v1")


def test_leaderboard_rescoring_uses_the_version_a_submission_was_made_on():
    from consistbench.leaderboard import tracks as T
    from consistbench.tasks.consistency import utils

    spec = T.load_task("consistency_mini", V1_SHA)
    assert spec.name == "consistency_mini" and spec.data_sha256 == V1_SHA
    # the same documents (the task's scoring-settings stamp aside, which rescoring takes from the results)
    loaded = [{k: v for k, v in d.items() if k != "scoring"} for d in utils.load(subset="mini", data_version="v1")["test"]]
    assert spec.docs == loaded
    res = {"configs": {"consistency_mini": {"metadata": {"data_sha256": V1_SHA}}}}
    assert T.frozen_version_of(res, "consistency_mini") in (V1_SHA, None)  # None while v1 is also current
    assert T.frozen_version_of({"configs": {"consistency_mini": {"metadata": {"data_sha256": "0" * 64}}}},
                               "consistency_mini") is None
