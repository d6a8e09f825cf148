"""Data versions: v1 and v2 stay loadable and score as they did; a data_sha256 maps to its shipped files."""

from __future__ import annotations

import json

import pytest

from consistbench.benchmark import dataversions
from consistbench.benchmark.errors import DataVersionError
from consistbench.benchmark.schema import data_checksum, load_data
from tests.conftest import REPO

TASKS = REPO / "tasks" / "consistency"
V1_DIR = TASKS / "data" / "v1"
V2_DIR = TASKS / "data" / "v2"
# The published data versions (results JSONs and leaderboard entries made on them record these).
V1_SHA = "5633565d40b5ac564dd0442b0553db0af679289394db6dc8b550ee6ea61d1d62"
V2_SHA = "76fd13f2d5a18d1c7fcc3430bdac342f12b62a6b08be11e6f3bbfa772c1060b8"
FROZEN = {"v1": (V1_DIR, V1_SHA, 116), "v2": (V2_DIR, V2_SHA, None)}


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_frozen_versions_are_frozen_byte_for_byte_in_their_checksums(name):
    directory, sha, mini_rows_expected = FROZEN[name]
    versions = json.loads((directory / "versions.json").read_text())
    assert versions["test"]["sha256"] == sha
    for split in ("train", "dev", "test"):
        rows = load_data(directory / f"{split}.jsonl")
        assert data_checksum(rows) == versions[split]["sha256"] and len(rows) == versions[split]["rows"]
    mini = set((directory / "mini_groups.txt").read_text().split())
    mini_rows = [r for r in load_data(directory / "test.jsonl") if r.group_id in mini]
    assert data_checksum(mini_rows) == versions["mini"]["sha256"] and len(mini_rows) == versions["mini"]["rows"]
    if mini_rows_expected:
        assert len(mini_rows) == mini_rows_expected
    manifest = json.loads((directory / "retrieval" / "manifest.json").read_text())
    assert manifest["data_sha256"] == sha
    # the frozen card says which version it is and points at the current one
    assert f"data {name}" in (directory / "DATACARD.md").read_text().split("\n", 3)[0].lower() or \
        name in (directory / "DATACARD.md").read_text()[:400]


def test_the_current_version_differs_from_every_frozen_one_and_its_retrieval_is_current():
    current = dataversions.current()
    assert current.name == "v3" and current.sha256 not in (V1_SHA, V2_SHA)
    manifest = json.loads((current.retrieval_dir / "manifest.json").read_text())
    assert manifest["data_sha256"] == current.sha256  # retrieval rebuilt for this test split
    robust = json.loads((current.directory / "robust" / "versions.json").read_text())
    assert current.sha256 in json.dumps(robust)  # robust rows made from this test split


def test_a_data_sha256_maps_to_the_files_of_its_version():
    v1 = dataversions.by_sha256(V1_SHA)
    assert v1.name == "v1" and v1.directory == V1_DIR and v1.test == V1_DIR / "test.jsonl"
    assert v1.mini_groups.is_file() and v1.retrieval_dir == V1_DIR / "retrieval"
    assert dataversions.by_name("v1") == v1
    current = dataversions.current()
    assert current.directory == TASKS / "data" and current.name == dataversions.CURRENT_NAME
    assert dataversions.by_sha256(current.sha256).directory == current.directory
    v2 = dataversions.by_sha256(V2_SHA)
    assert v2.name == "v2" and v2.directory == V2_DIR and v2.subset_file("small").is_file()
    assert [v.name for v in dataversions.versions()] == ["v1", "v2", dataversions.CURRENT_NAME]
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
    ("consistency", "consistency_v2"), ("consistency_mini", "consistency_mini_v2"), ("consistency_small", "consistency_small_v2"),
    ("consistency_dev", "consistency_dev_v2"), ("consistency_e2e_dense_mini", "consistency_e2e_dense_mini_v2"),
    ("consistency_typo", "consistency_typo_v2"), ("consistency_surface_mini", "consistency_surface_mini_v2"),
    ("consistency_template", "consistency_template_v2"),
])
def test_frozen_tasks_score_as_the_current_tasks_do(current, frozen):
    """Same prompt, generation settings, metrics and aggregations; only the name, tag, data
    version and its checksum (and the task version number) differ."""
    name = frozen.rsplit("_", 1)[1]
    a, b = _config(current), _config(frozen)
    assert b["task"] == frozen and all(t.endswith(f"_{name}") for t in b.get("tag", []))  # own tags only
    assert b["metadata"]["data_sha256"] == FROZEN[name][1] and b["dataset_kwargs"].pop("data_version") == name
    for cfg in (a, b):
        cfg.pop("task"), cfg.pop("tag", None)
        cfg["metadata"].pop("data_sha256"), cfg["metadata"].pop("version", None)
    assert a == b


def test_every_current_task_has_a_v2_twin():
    current = {p.stem for p in TASKS.glob("consistency*.yaml") if not p.stem.endswith(("_v1", "_v2"))}
    per_type = {"consistency_how_to", "consistency_paraphrase", "consistency_plural_article"}
    assert {f"{t}_v2" for t in current - per_type} <= {p.stem for p in TASKS.glob("*_v2.yaml")}


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


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_a_frozen_entry_is_regenerated_by_its_frozen_task(name):
    """Reproducing an entry made on an earlier version runs that version's task (same prompts,
    frozen rows), not the current one, whose documents differ."""
    from consistbench.leaderboard import tracks as T

    _, sha, _ = FROZEN[name]
    spec = T.load_task("consistency_mini", sha)
    assert spec.name == "consistency_mini" and spec.run_task == f"consistency_mini_{name}"
    assert T.load_task("consistency_mini").run_task == "consistency_mini"


def test_the_frozen_v2_template_family_finds_the_shipped_template_set():
    from consistbench.tasks.consistency import utils

    docs = list(utils.load(subset="mini", data_version="v2", robust="template")["test"])
    variants = [d for d in docs if d["variant_type"] == "template"]
    assert variants and all(d["template_id"] and d["template_id"] != "default" for d in variants)


def test_entries_on_each_earlier_version_get_their_own_site_section():
    """A v1 or v2 entry is ranked in a section of its own version, right after the current
    track's, never with the current data's entries."""
    from types import SimpleNamespace

    from consistbench.leaderboard.site import sections_of

    current = dataversions.current().sha256
    entries = [("a", SimpleNamespace(task="consistency_mini", data_sha256=current)),
               ("b", SimpleNamespace(task="consistency_mini", data_sha256=V2_SHA)),
               ("c", SimpleNamespace(task="consistency", data_sha256=V1_SHA)),
               ("d", SimpleNamespace(task="consistency", data_sha256=V2_SHA))]
    keys, task_of, descriptions = sections_of(entries)
    assert keys.index("consistency_mini@v2") == keys.index("consistency_mini") + 1
    assert task_of["consistency_mini@v2"] == ("consistency_mini", V2_SHA) and task_of["consistency"] == ("consistency", current)
    assert {"consistency@v1", "consistency@v2"} <= set(keys) and "consistency_small@v2" not in keys
    assert "earlier data version v2" in descriptions["consistency@v2"]
