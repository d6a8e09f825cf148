"""A cache of validation results, so that ``consistbench leaderboard build`` rescores only what changed.

An entry is one submission's :class:`~consistbench.leaderboard.validate.Validated`, stored as JSON
(never pickle) under ``<cache>/leaderboard/validated/`` (the cache directory of
:func:`~consistbench.benchmark.paths.cache_dir`: ``$CONSISTBENCH_CACHE`` or ``~/.cache/consistbench``;
``$CONSISTBENCH_LEADERBOARD_CACHE`` names the folder itself, as the tests do to keep each test's own).
It is found by a key, the SHA-256 of:

- the submission: every file under its directory, by relative path and *bytes* (any change, to
  any file, even one validation does not read, is a miss: a tampered submission is always
  validated again, never let through by an earlier result);
- the data version: every ``versions.json`` of the shipped data (the checksums of every split,
  frozen version and robust family), the task YAMLs, group lists and ``utils.py``;
- the scorer's version: the package version, the SHA-256 of the scoring code (every module of
  ``benchmark/`` and ``leaderboard/`` and the submission schema, so any code or settings change,
  tolerances included, is a miss), and the versions of the libraries that compute a metric or
  render a prompt;
- the track asked for (``--task``).

The submission's files are hashed before and after validation; the result is stored only if the
two agree (a file swapped during validation is not cached under the other file's key). Entries
are written atomically; a damaged or foreign entry counts as a miss. An entry whose key is
replaced (a changed file) is removed when its successor is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from consistbench.benchmark import paths
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import write_text
from consistbench.benchmark.untrusted import DEFAULT_LIMITS, MiB, read_json
from consistbench.leaderboard.prompts import PromptFormat
from consistbench.leaderboard.schema import ReproductionRecord, SubmissionMetadata
from consistbench.leaderboard.validate import Validated, validate_submission

FORMAT = "consistbench-leaderboard-validation"
FORMAT_VERSION = 1
# Libraries whose version changes a rescored number or a rendered prompt.
SCORING_LIBRARIES = ("rouge-score", "sacrebleu", "numpy", "jinja2", "pydantic", "nltk")
PACKAGE_ROOT = paths.PACKAGE_ROOT.parent  # the folder holding benchmark/ and leaderboard/
READ_LIMITS = DEFAULT_LIMITS.but(file_bytes=512 * MiB, line_bytes=512 * MiB, text_bytes=512 * MiB)


def cache_root() -> Path:
    """Where the entries live: ``$CONSISTBENCH_LEADERBOARD_CACHE``, else ``<cache>/leaderboard/validated``."""
    env = os.environ.get("CONSISTBENCH_LEADERBOARD_CACHE")
    return Path(env).expanduser() if env else paths.cache_dir() / "leaderboard" / "validated"


# ---------------------------------------------------------------------------------------------
# The key

def _tree_digest(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        rel = f.relative_to(root).as_posix()
        if f.is_symlink():  # never followed: its target string is its content
            data = b"symlink:" + os.readlink(f).encode("utf-8", "surrogateescape")
        else:
            data = f.read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode("utf-8", "surrogateescape"))
        h.update(data)
    return h.hexdigest()


def submission_digest(directory: str | Path) -> str:
    """SHA-256 over every file under the submission directory (relative path, size, bytes)."""
    root = Path(directory)
    files = [p for p in root.rglob("*") if p.is_symlink() or p.is_file()]
    return _tree_digest(root, files)


def data_digest(task_dir: Path | None = None) -> str:
    """SHA-256 of the shipped data version: every ``versions.json`` (the checksums of all splits,
    frozen versions and robust families), the task YAMLs, group lists and the task glue."""
    root = Path(task_dir) if task_dir is not None else paths.TASK_DIR
    files = [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
             and (p.name == "versions.json" or p.suffix in (".yaml", ".txt") or p.name.endswith("_yaml")
                  or p.name == "utils.py")]
    return _tree_digest(root, files)


def scorer_digest(package_root: Path | None = None) -> str:
    """SHA-256 of the scorer's version: the package version, the scoring code (``benchmark/`` and
    ``leaderboard/`` sources, the submission schema) and the versions of the scoring libraries."""
    root = Path(package_root) if package_root is not None else PACKAGE_ROOT
    files = [p for sub in ("benchmark", "leaderboard") for p in (root / sub).rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".json")
             and "submissions" not in p.relative_to(root / sub).parts]
    versions = {"consistbench": _version("consistbench")} | {lib: _version(lib) for lib in SCORING_LIBRARIES}
    return hashlib.sha256((json.dumps(versions, sort_keys=True) + _tree_digest(root, files)).encode()).hexdigest()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def cache_key(directory: str | Path, task: str | None, *, data: str | None = None, scorer: str | None = None) -> str:
    """The entry's key: the submission's bytes, the data version, the scorer's version, the track."""
    parts = {"format": FORMAT_VERSION, "submission": submission_digest(directory), "task": task,
             "data": data if data is not None else data_digest(), "scorer": scorer if scorer is not None else scorer_digest()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Entries

def to_json(v: Validated) -> dict[str, Any]:
    """A Validated as plain JSON (its directory is not stored: a hit takes the current one)."""
    out = {f.name: getattr(v, f.name) for f in fields(v) if f.name not in ("directory", "metadata", "reproduction",
                                                                          "prompts")}
    out["metadata"] = v.metadata.model_dump(mode="json")
    out["reproduction"] = v.reproduction.model_dump(mode="json") if v.reproduction is not None else None
    out["prompts"] = asdict(v.prompts) if v.prompts is not None else None
    return json.loads(json.dumps(out))  # tuples become lists now, as they will on reading


def from_json(data: dict[str, Any], directory: Path) -> Validated:
    """The Validated an entry holds, for the submission at ``directory``."""
    values = dict(data)
    values["metadata"] = SubmissionMetadata.model_validate(data["metadata"])
    values["reproduction"] = (ReproductionRecord.model_validate(data["reproduction"])
                              if data["reproduction"] is not None else None)
    p = data["prompts"]
    values["prompts"] = (PromptFormat(kind=p["kind"], template=p["template"],
                                      special_tokens=tuple(tuple(t) for t in p["special_tokens"]))
                         if p is not None else None)
    return Validated(directory=directory, **values)


def _entry_path(root: Path, slug: str, key: str) -> Path:
    return root / f"{slug}.{key}.json"


def lookup(directory: Path, key: str, root: Path) -> Validated | None:
    """The cached result under ``key``, or None (absent, damaged or written for another key)."""
    path = _entry_path(root, directory.name, key)
    if not path.is_file():
        return None
    try:
        doc = read_json(path, READ_LIMITS, what="leaderboard cache entry")
        if doc.get("format") != FORMAT or doc.get("version") != FORMAT_VERSION or doc.get("key") != key:
            return None
        return from_json(doc["validated"], directory)
    except (ConsistbenchError, KeyError, TypeError, ValueError, AttributeError):
        return None  # a damaged entry is a miss; the result is recomputed and rewritten


def store(directory: Path, key: str, v: Validated, root: Path) -> Path | None:
    """Write the entry atomically and drop the submission's entries under older keys. Not stored
    (None) if the JSON form would not give back the same result."""
    data = to_json(v)
    if json.dumps(to_json(from_json(data, directory))) != json.dumps(data):  # key order included: pages follow it
        return None
    path = _entry_path(root, directory.name, key)
    # not sorted: the order of the metrics is the order the site shows them in
    write_text(path, json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "key": key, "validated": data},
                                ensure_ascii=False))
    for old in root.glob(f"{directory.name}.*.json"):
        if old != path and len(old.name) == len(path.name):
            old.unlink(missing_ok=True)
    return path


def validate_cached(directory: str | Path, task: str | None = None, *, use_cache: bool = True,
                    root: str | Path | None = None) -> tuple[Validated, bool]:
    """``validate_submission(directory, task=task)``, from the cache when nothing in the key changed.

    Returns ``(result, hit)``. ``use_cache=False`` validates and stores nothing.
    """
    directory = Path(directory)
    if not use_cache:
        return validate_submission(directory, task=task), False
    root = Path(root) if root is not None else cache_root()
    data, scorer = data_digest(), scorer_digest()
    key = cache_key(directory, task, data=data, scorer=scorer)
    hit = lookup(directory, key, root)
    if hit is not None:
        return hit, True
    result = validate_submission(directory, task=task)
    if cache_key(directory, task, data=data, scorer=scorer) == key:  # unchanged while validating
        store(directory, key, result, root)
    return result, False
