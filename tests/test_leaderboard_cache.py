"""The leaderboard build's cache of validation results (leaderboard/cache.py): a hit only when the
submission's bytes, the data version, the scorer's version and the track are all unchanged; any
changed byte is validated again (a tampered submission is never let through by an old result)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import consistbench.leaderboard.cache as C
from consistbench.benchmark.errors import ConsistbenchError

REPO = Path(__file__).resolve().parents[1]
SLUG = "smollm2-135m-instruct-mini"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Path:
    return REPO / "leaderboard" / "submissions" / SLUG


@pytest.fixture(scope="module")
def real_result(shipped):
    """One real validation of a shipped submission (rescored), reused by the fake validations below."""
    return C.validate_submission(shipped)


@pytest.fixture
def sub(tmp_path, shipped) -> Path:
    out = tmp_path / "subs" / SLUG
    shutil.copytree(shipped, out)
    return out


@pytest.fixture
def calls(monkeypatch, real_result):
    """Count validations; each returns the real result for the directory asked."""
    seen = []

    def fake(directory, task=None, **_):
        seen.append(Path(directory))
        return C.from_json(C.to_json(real_result), Path(directory))

    monkeypatch.setattr(C, "validate_submission", fake)
    return seen


def test_a_hit_gives_back_the_same_result(sub, calls, tmp_path):
    first, hit1 = C.validate_cached(sub, root=tmp_path / "c")
    second, hit2 = C.validate_cached(sub, root=tmp_path / "c")
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    assert json.dumps(C.to_json(second)) == json.dumps(C.to_json(first))  # the same values in the same order
    assert list(second.metrics) == list(first.metrics) and list(second.reported) == list(first.reported)
    assert second.directory == sub
    assert [p.name for p in (tmp_path / "c").iterdir()] == [f"{SLUG}.{C.cache_key(sub, None)}.json"]


def test_the_round_trip_keeps_every_field(real_result, tmp_path):
    back = C.from_json(json.loads(json.dumps(C.to_json(real_result))), real_result.directory)
    assert back.metadata == real_result.metadata and back.reproduction == real_result.reproduction
    assert back.prompts == real_result.prompts and back.responses == real_result.responses
    assert back.metrics == pytest.approx(real_result.metrics, nan_ok=True)


@pytest.mark.parametrize("where", ["metadata.json", "results", "samples", "new file"])
def test_one_changed_byte_anywhere_is_a_miss(sub, calls, tmp_path, where):
    C.validate_cached(sub, root=tmp_path / "c")
    if where == "new file":
        (sub / "notes.txt").write_text("x")
    else:
        path = sub / where if where == "metadata.json" else next(sub.glob(f"{where}_*"))
        data = bytearray(path.read_bytes())
        data[-1] ^= 0x01
        path.write_bytes(bytes(data))
    _, hit = C.validate_cached(sub, root=tmp_path / "c")
    assert not hit and len(calls) == 2
    assert len(list((tmp_path / "c").iterdir())) == 1  # the entry under the old key is gone


def test_a_tampered_submission_is_refused_although_its_earlier_result_is_cached(sub, real_result, monkeypatch,
                                                                                 tmp_path):
    monkeypatch.setattr(C, "validate_submission", lambda d, task=None: C.from_json(C.to_json(real_result), Path(d)))
    C.validate_cached(sub, root=tmp_path / "c")
    monkeypatch.undo()  # the real validation from here on
    meta = json.loads((sub / "metadata.json").read_text())
    meta["schema_version"] = 99
    (sub / "metadata.json").write_text(json.dumps(meta, indent=2))
    with pytest.raises(ConsistbenchError, match="schema_version"):
        C.validate_cached(sub, root=tmp_path / "c")


def test_a_new_data_version_or_scorer_version_is_a_miss(sub, calls, monkeypatch, tmp_path):
    C.validate_cached(sub, root=tmp_path / "c")
    monkeypatch.setattr(C, "data_digest", lambda: "another data version")
    assert C.validate_cached(sub, root=tmp_path / "c")[1] is False
    monkeypatch.setattr(C, "scorer_digest", lambda: "another scorer")
    assert C.validate_cached(sub, root=tmp_path / "c")[1] is False
    assert C.validate_cached(sub, root=tmp_path / "c")[1] is True
    assert C.validate_cached(sub, "consistency", root=tmp_path / "c")[1] is False  # another track asked for
    assert len(calls) == 4


def test_the_data_digest_follows_every_versions_file(tmp_path):
    tasks = tmp_path / "consistency"
    shutil.copytree(REPO / "tasks" / "consistency", tasks,
                    ignore=shutil.ignore_patterns("*.jsonl", "*.gz", "__pycache__", "*.md"))
    before = C.data_digest(tasks)
    for rel in ("data/versions.json", "data/robust/versions.json", "data/v1/versions.json", "consistency.yaml"):
        path = tasks / rel
        saved = path.read_bytes()
        path.write_bytes(saved.replace(b"rows", b"Rows", 1) if b"rows" in saved else saved + b"\n")
        assert C.data_digest(tasks) != before, rel
        path.write_bytes(saved)
    assert C.data_digest(tasks) == before
    (tasks / "data" / "test.jsonl").write_text("not part of the data version: its checksum is in versions.json")
    assert C.data_digest(tasks) == before


def test_the_scorer_digest_follows_the_code_and_the_package_version(tmp_path, monkeypatch):
    root = tmp_path / "pkg"
    for sub in ("benchmark", "leaderboard"):
        shutil.copytree(REPO / sub, root / sub, ignore=shutil.ignore_patterns("__pycache__", "submissions", "templates"))
    before = C.scorer_digest(root)
    path = root / "leaderboard" / "rescore.py"
    path.write_bytes(path.read_bytes() + b"\n# a tolerance changed\n")
    changed = C.scorer_digest(root)
    assert changed != before
    real = C.metadata.version
    monkeypatch.setattr(C.metadata, "version", lambda dist: "9.9.9" if dist == "consistbench" else real(dist))
    assert C.scorer_digest(root) != changed


def test_no_cache_validates_and_stores_nothing(sub, calls, tmp_path):
    C.validate_cached(sub, root=tmp_path / "c")
    assert C.validate_cached(sub, use_cache=False, root=tmp_path / "c")[1] is False
    assert len(calls) == 2 and len(list((tmp_path / "c").iterdir())) == 1


def test_a_damaged_or_foreign_entry_is_a_miss_and_is_rewritten(sub, calls, tmp_path):
    C.validate_cached(sub, root=tmp_path / "c")
    entry = next((tmp_path / "c").iterdir())
    for damage in (b"{not json", json.dumps({"format": C.FORMAT, "version": 1, "key": "0" * 64,
                                              "validated": {}}).encode()):
        entry.write_bytes(damage)
        assert C.validate_cached(sub, root=tmp_path / "c")[1] is False
        assert json.loads(entry.read_text())["key"] == C.cache_key(sub, None)
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.endswith(".tmp")]


def test_a_file_changed_during_validation_is_not_cached(sub, monkeypatch, real_result, tmp_path):
    def swap(directory, task=None):
        (Path(directory) / "metadata.json").write_bytes((Path(directory) / "metadata.json").read_bytes() + b" ")
        return C.from_json(C.to_json(real_result), Path(directory))

    monkeypatch.setattr(C, "validate_submission", swap)
    C.validate_cached(sub, root=tmp_path / "c")
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


def test_the_build_uses_the_cache_and_no_cache_bypasses_it(tmp_path, sub, calls, monkeypatch):
    from consistbench.benchmark.cli import main

    monkeypatch.setenv("CONSISTBENCH_LEADERBOARD_CACHE", str(tmp_path / "c"))
    for argv, expected in ((["-o", str(tmp_path / "site")], 1), (["-o", str(tmp_path / "site")], 1),
                           (["-o", str(tmp_path / "site"), "--no-cache"], 2)):
        assert main(["leaderboard", "build", str(sub.parent), *argv]) == 0
        assert len(calls) == expected
    assert (tmp_path / "site" / "index.html").is_file()


@pytest.mark.slow
def test_a_site_built_from_the_cache_is_byte_identical(tmp_path, sub, monkeypatch):
    from consistbench.leaderboard.site import build_site

    monkeypatch.setenv("CONSISTBENCH_LEADERBOARD_CACHE", str(tmp_path / "c"))
    build_site(sub.parent, tmp_path / "fresh")   # validated (the cache is empty) and stored
    build_site(sub.parent, tmp_path / "cached")  # every result from the cache
    fresh = {p.relative_to(tmp_path / "fresh"): p.read_bytes() for p in (tmp_path / "fresh").rglob("*") if p.is_file()}
    cached = {p.relative_to(tmp_path / "cached"): p.read_bytes() for p in (tmp_path / "cached").rglob("*") if p.is_file()}
    assert fresh == cached
