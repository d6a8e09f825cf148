"""Reading JSONL strictly and writing any output atomically.

Input goes through :mod:`consistbench.benchmark.untrusted` (size, depth, number, Unicode and
duplicate-key limits), so a hostile file gives one error line, never a traceback. Text is UTF-8:
a leading byte-order mark (files saved by Windows tools and Excel) is accepted, and any byte that
is not UTF-8 (a Latin-1 file, say) is refused with the file, line and byte offset
(:func:`~consistbench.benchmark.untrusted.decode_utf8`, the one decoder of every reader here).

Every output file is written to a temporary sibling and renamed into place, so an interrupted
or failed run never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from consistbench.benchmark.errors import DataError
from consistbench.benchmark.untrusted import DEFAULT_LIMITS, ReadLimits, decode_utf8, iter_jsonl, open_regular


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


def read_text(path: str | os.PathLike, *, what: str = "file", max_bytes: int = 64 * 1024 * 1024) -> str:
    """A user's text file (YAML, a list, ...) as ``str``: a regular file of at most ``max_bytes``,
    UTF-8 with an optional byte-order mark; anything else is one DataError line (file, line, byte
    offset for a byte that is not UTF-8)."""
    path = Path(path)
    with open_regular(path, what=what) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise DataError(f"{path}: {what} is larger than {max_bytes:,} bytes")
    return decode_utf8(data, path, strip_bom=True)


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


# ---------------------------------------------------------------------------------------------
# Temporary folders left by a killed process

TMP_MARKER = ".consistbench-owner.json"


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux ``/proc``), to tell a reused pid from its first owner."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def mark_tmp_owner(tmp: str | os.PathLike, command: str) -> Path:
    """Write the owner marker into the temporary folder ``tmp``: this process's pid, its start
    time, the host name and ``command``, so that a later run can prove a leftover is stale
    (:func:`remove_stale_tmp`). Remove it before the folder is renamed into place."""
    marker = Path(tmp) / TMP_MARKER
    marker.write_text(json.dumps({"pid": os.getpid(), "start": _process_start(os.getpid()),
                                  "host": socket.gethostname(), "command": command}), encoding="utf-8")
    return marker


def _is_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    now = _process_start(pid)
    return start is None or now is None or now == start  # a different start time: the pid was reused


def remove_stale_tmp(path: str | os.PathLike, command: str) -> list[tuple[Path, dict]]:
    """Remove the temporary folders ``.NAME.*.tmp`` beside ``path`` that a killed run of ``command``
    left: only those whose owner marker (:func:`mark_tmp_owner`) names this host, the same
    command and a process that is no longer running. A folder without a readable marker, from
    another host or command, or whose process is alive is left alone. Returns ``(folder, marker)``
    for each folder removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    host, removed = socket.gethostname(), []
    for tmp in sorted(path.parent.glob(f".{glob_escape(path.name)}.*.tmp")):
        marker = tmp / TMP_MARKER
        if tmp.is_symlink() or not tmp.is_dir() or marker.is_symlink() or not marker.is_file():
            continue
        try:
            owner = json.loads(marker.read_bytes()[:4096].decode("utf-8"))
            pid, start = int(owner["pid"]), owner.get("start")
            same = owner["host"] == host and owner["command"] == command
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if same and pid > 0 and not _is_alive(pid, start):
            shutil.rmtree(tmp)
            removed.append((tmp, owner))
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters matched literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
