"""The data folder as a Hugging Face dataset: ``tasks/consistency/data/README.md`` declares one
config per version and per robust family; each loads offline with ``datasets`` and has exactly
the rows its ``versions.json`` records (no split mixes versions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

DATA = Path(__file__).resolve().parents[1] / "tasks" / "consistency" / "data"
SPLITS = {"train": "train", "validation": "dev", "test": "test"}
FAMILIES = ("typo", "surface", "template")


def _front_matter() -> dict:
    text = (DATA / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def _expected() -> dict[str, dict[str, int]]:
    """Row counts per config and split, from the versions files the data build writes."""
    out = {}
    for name, folder in (("default", DATA), ("v1", DATA / "v1"), ("v2", DATA / "v2")):
        versions = json.loads((folder / "versions.json").read_text())
        out[name] = {split: versions[key]["rows"] for split, key in SPLITS.items()}
    robust = json.loads((DATA / "robust" / "versions.json").read_text())["families"]
    out.update({family: {"test": robust[family]["rows"]} for family in FAMILIES})
    return out


def test_the_card_declares_every_version_and_family_with_hub_metadata():
    card = _front_matter()
    configs = {c["config_name"]: c for c in card["configs"]}
    assert set(configs) == {"default", "v1", "v2", *FAMILIES}
    assert configs["default"].get("default") is True
    for name, config in configs.items():
        files = {f["split"]: f["path"] for f in config["data_files"]}
        for path in files.values():
            assert (DATA / path).is_file(), path
        prefix = {"default": "", "v1": "v1/", "v2": "v2/"}.get(name)
        if prefix is None:  # a robust family: its own file, test only
            assert files == {"test": f"robust/{name}.jsonl"}
        else:
            assert files == {split: f"{prefix}{stem}.jsonl" for split, stem in SPLITS.items()}
    for key in ("license", "license_name", "license_link", "task_categories", "language", "size_categories",
                "pretty_name"):
        assert card.get(key), key
    assert (DATA / card["license_link"]).is_file()
    body = (DATA / "README.md").read_text(encoding="utf-8").split("---\n", 2)[2]
    assert "DATACARD.md" in body
    assert "load_dataset(path)" in body
    for name in configs:
        if name != "default":
            assert f'load_dataset(path, "{name}")' in body
    assert "## Loading with `datasets`" in (DATA / "DATACARD.md").read_text(encoding="utf-8")


def test_the_datacard_section_sits_outside_the_generated_statistics():
    from consistbench.benchmark.databuild import CARD_BEGIN, CARD_END

    text = (DATA / "DATACARD.md").read_text(encoding="utf-8")
    generated = text[text.index(CARD_BEGIN):text.index(CARD_END)]
    assert "Loading with `datasets`" not in generated


@pytest.mark.parametrize("name", ["default", "v1", "v2", *FAMILIES])
def test_each_config_loads_offline_with_the_recorded_row_counts(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    ds = load_dataset(str(DATA), name, cache_dir=str(tmp_path / "hf"))
    assert {split: len(rows) for split, rows in ds.items()} == _expected()[name]
    for split, rows in ds.items():
        assert {"id", "group_id", "variant_type", "question", "context", "reference"} <= set(rows.column_names)
        if name in FAMILIES:  # originals and this family's variants only
            assert set(rows["variant_type"]) == {"original", name}
        else:
            assert set(rows["split"]) == {"dev" if split == "validation" else split}
