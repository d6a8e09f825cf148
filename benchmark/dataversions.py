"""The shipped data versions, and the files of each.

A *data version* is identified by the SHA-256 of its test split's scored content
(:func:`consistbench.benchmark.schema.data_checksum`), the value every results JSON records as
``metadata.data_sha256``. The current version lives in ``tasks/consistency/data/``; earlier
versions are frozen, unchanged, in subdirectories named after them (``tasks/consistency/data/v1/``),
each with its own ``versions.json``, test split, ``mini_groups.txt`` and precomputed retrieval, so
that published numbers can be reproduced (the ``consistency_v1`` tasks) and a submission can be
rescored against the version it was made on::

    from consistbench.benchmark import dataversions
    v = dataversions.by_sha256(results["configs"][task]["metadata"]["data_sha256"])
    v.name, v.test, v.mini_groups, v.retrieval_dir
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from consistbench.benchmark.errors import DataVersionError
from consistbench.benchmark.paths import DATA_DIR
# The name of the version that ``consistbench data build`` writes into DATA_DIR.
CURRENT_NAME = "v3"
# Frozen earlier versions: subdirectories of DATA_DIR, oldest first.
FROZEN = ("v1", "v2")
# Subset files: the subset name a task asks for -> the file listing its group ids.
SUBSET_FILES = {"mini": "mini_groups.txt", "small": "small_groups.txt"}


@dataclass(frozen=True)
class DataVersion:
    """One shipped data version: its name, directory and the checksums of ``versions.json``."""

    name: str
    directory: Path
    checksums: dict  # versions.json: split -> {"rows", "sha256"}

    @property
    def sha256(self) -> str:
        """The data version: the test split's checksum."""
        return self.checksums["test"]["sha256"]

    @property
    def test(self) -> Path:
        return self.directory / "test.jsonl"

    def split(self, split: str) -> Path:
        return self.directory / f"{split}.jsonl"

    @property
    def mini_groups(self) -> Path:
        return self.directory / SUBSET_FILES["mini"]

    def subset_file(self, subset: str) -> Path:
        """The group list of a subset (``mini``, ``small``); error if this version has none."""
        if subset not in SUBSET_FILES:
            raise DataVersionError(f"unknown subset {subset!r} (expected one of {', '.join(SUBSET_FILES)})")
        path = self.directory / SUBSET_FILES[subset]
        if not path.is_file():
            raise DataVersionError(f"data version {self.name} has no {subset!r} subset ({path.name} is missing)")
        return path

    @property
    def retrieval_dir(self) -> Path:
        return self.directory / "retrieval"


def _read(name: str, directory: Path) -> DataVersion | None:
    path = directory / "versions.json"
    if not path.is_file():
        return None
    try:
        checksums = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataVersionError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(checksums, dict) or "sha256" not in (checksums.get("test") or {}):
        raise DataVersionError(f"{path}: no test checksum (test.sha256)")
    return DataVersion(name=str(checksums.get("name", name)), directory=directory, checksums=checksums)


def versions(data_dir: Path | None = None) -> list[DataVersion]:
    """Every shipped version, frozen ones first (oldest first), the current one last."""
    base = Path(data_dir) if data_dir else DATA_DIR
    found = [v for name in FROZEN if (v := _read(name, base / name)) is not None]
    current = _read(CURRENT_NAME, base)
    if current is not None:
        found.append(current)
    return found


def current(data_dir: Path | None = None) -> DataVersion:
    """The version in the data directory itself (what ``consistency`` and the leaderboard use)."""
    found = _read(CURRENT_NAME, Path(data_dir) if data_dir else DATA_DIR)
    if found is None:
        raise DataVersionError(f"{(Path(data_dir) if data_dir else DATA_DIR) / 'versions.json'}: missing; "
                               "run `consistbench data build`")
    return found


def by_name(name: str, data_dir: Path | None = None) -> DataVersion:
    """A version by name (``v1``, ``v2``)."""
    for v in versions(data_dir):
        if v.name == name:
            return v
    known = ", ".join(v.name for v in versions(data_dir)) or "none"
    raise DataVersionError(f"unknown data version {name!r} (shipped: {known})")


def by_sha256(sha256: str, data_dir: Path | None = None) -> DataVersion:
    """The shipped version whose test split has this checksum (a results JSON's ``data_sha256``)."""
    for v in versions(data_dir):
        if v.sha256 == sha256:
            return v
    known = ", ".join(f"{v.name} {v.sha256[:16]}..." for v in versions(data_dir)) or "none"
    raise DataVersionError(f"data version {str(sha256)[:16]}... is not shipped (shipped: {known})")
