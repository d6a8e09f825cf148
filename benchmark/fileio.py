"""Reading JSONL strictly and writing any output atomically.

Input goes through :mod:`consistbench.benchmark.untrusted` (size, depth, number, Unicode and
duplicate-key limits), so a hostile file gives one error line, never a traceback.

Every output file is written to a temporary sibling and renamed into place, so an interrupted
or failed run never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from consistbench.benchmark.errors import DataError
from consistbench.benchmark.untrusted import DEFAULT_LIMITS, ReadLimits, iter_jsonl


def read_jsonl(path: str | os.PathLike, limits: ReadLimits = DEFAULT_LIMITS) -> list[dict[str, Any]]:
    """Read a JSONL file through the hardened reader (:mod:`consistbench.benchmark.untrusted`):
    any undecodable byte, bad JSON, refused value (duplicate key, lone surrogate, too deep, too
    long, ...) or non-object line is a DataError naming the file and the 1-based line number.

    Blank lines are skipped. Each row gets its line number as ``__line__``.
    """
    path = Path(path)
    rows: list[dict[str, Any]] = []
    for lineno, obj in iter_jsonl(path, limits):
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        obj["__line__"] = lineno
        rows.append(obj)
    return rows


def strip_line_numbers(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop the ``__line__`` bookkeeping key that :func:`read_jsonl` adds."""
    return [{k: v for k, v in r.items() if k != "__line__"} for r in rows]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    On any exception the temporary file or directory is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; outputs are ordinary directories
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        tmp.chmod(0o644)
    try:
        yield tmp
        if is_dir and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows as JSONL (UTF-8, one object per line, keys in insertion order), atomically."""
    with atomic_path(path) as tmp:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write one JSON document (indented, sorted keys for stable diffs), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (data files, weights, family files)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
