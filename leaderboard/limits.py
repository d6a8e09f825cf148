"""What the leaderboard reads from a submission, and how much: limits and file safety.

A submission is untrusted input. Every file is a plain file inside the submission directory
(:func:`inside`: no ``..``, no absolute path, no symbolic link, no FIFO or device), within the
size limits of :data:`LIMITS` (:func:`check_size`), and read by the hardened reader
(:mod:`consistbench.benchmark.untrusted`, with :func:`read_limits`: duplicate keys, nesting
depth, huge integers, lone surrogates, Infinity and gzip bombs are refused). The limits leave
room for real lm-eval output while keeping a hostile submission cheap to refuse.

Also here: :func:`fail`, the one way the leaderboard refuses a submission (one line naming the
file and the problem), and :func:`submission_sha256`, the content hash of a submission's files
that a reproduction record is bound to.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, NoReturn

from consistbench.benchmark import untrusted
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.leaderboard.schema import METADATA_FILE, REPRODUCTION_FILE, SubmissionMetadata

MiB = 1024 * 1024
# Size limits, in bytes. The full test task's samples file from `consistbench eval` is about
# 9 KB per document (prompt, doc and one item per metric), ~40 MB for 4,148 documents; the
# limits leave room for long chat templates while keeping a hostile submission cheap to refuse.
LIMITS = {
    "metadata": 64 * 1024,
    "results": 8 * MiB,
    "samples": 256 * MiB,  # uncompressed (a .jsonl.gz is measured after decompression too)
    "samples_compressed": 64 * MiB,
    "samples_line": 1 * MiB,  # one sample (~20 KB from consistbench eval)
    "reproduction": 256 * 1024,
}
# Every file of a submission: at most this many nested arrays/objects (lm-eval's deepest is ~6),
# strings of at most STRING_CHARS characters (the longest are prompts and the chat template),
# integers of at most 32 digits (the reader's default). A chat template longer than
# CHAT_TEMPLATE_CHARS is refused (real ones are 0.5-10 KB) and rendering it for one document may
# take at most RENDER_SECONDS of CPU time (it runs in Jinja's sandbox, which bounds each range()
# but not nested loops; a real template renders in well under a millisecond).
DEPTH = 32
STRING_CHARS = 256 * 1024
CHAT_TEMPLATE_CHARS = 64 * 1024
RENDER_SECONDS = 2.0


def fail(msg: str) -> NoReturn:
    """Refuse the submission: raise :class:`ConsistbenchError` with ``msg`` (one line naming the
    file and the problem; the command line prints it as its one error line)."""
    raise ConsistbenchError(msg)


def read_limits(kind: str) -> untrusted.ReadLimits:
    """The hardened reader's limits for one kind of submission file (read from :data:`LIMITS`
    at call time, so a test can lower them)."""
    if kind == "samples":
        return untrusted.ReadLimits(file_bytes=max(LIMITS["samples"], LIMITS["samples_compressed"]),
                                    text_bytes=LIMITS["samples"],
                                    line_bytes=LIMITS["samples_line"], depth=DEPTH, string_chars=STRING_CHARS,
                                    nan=False)
    size = LIMITS[kind]
    # NaN: lm-eval writes it for a metric without data (results); never in metadata or a record
    return untrusted.ReadLimits(file_bytes=size, text_bytes=size, line_bytes=size, depth=DEPTH,
                                string_chars=STRING_CHARS, nan=kind == "results")


def check_directory(directory: Path) -> None:
    """Refuse a submission directory that is a symbolic link or not a directory."""
    if directory.is_symlink():
        fail(f"{directory}: the submission directory is a symbolic link (refused: a submission is a plain "
             "directory; the site would copy whatever it points to)")
    if not directory.is_dir():
        fail(f"{directory}: not a directory")


def inside(directory: Path, name: str, what: str) -> Path:
    """The path of ``name`` in ``directory``; refuse anything that could leave it, any symbolic
    link and anything but a regular file."""
    if (not isinstance(name, str) or not name or name.startswith(("/", "\\", "~")) or "/" in name or "\\" in name
            or name in (".", "..") or ".." in name.split(".") or ":" in name or "\x00" in name):
        fail(f"{directory / METADATA_FILE}: {what} file name {name!r} tries to leave the submission directory "
             "(give a plain file name inside it)")
    path = directory / name
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):  # RuntimeError: Python 3.11's resolve() on a loop
            fail(f"{path}: {what} file is a symbolic link loop (or a dangling link)")
        if not target.is_relative_to(directory.resolve()):
            fail(f"{path}: {what} file is a link that leaves the submission directory")
        fail(f"{path}: {what} file is a symbolic link (a submission holds plain files, not links)")
    if not path.exists():
        fail(f"{path}: {what} file is missing")
    if not path.is_file():
        fail(f"{path}: {what} file is not a regular file")
    return path


def check_size(path: Path, limit: int, what: str) -> None:
    """Refuse a file above ``limit`` bytes on disk (measured without following a link)."""
    try:
        size = path.stat(follow_symlinks=False).st_size
    except OSError as exc:
        fail(untrusted.describe_os_error(path, exc, f"{what} file"))
    if size > limit:
        fail(f"{path}: {what} file is {size / MiB:.1f} MiB, above the limit of {limit / MiB:g} MiB")


def check_samples_file(path: Path) -> None:
    """A samples file: within its size limit on disk (compressed or not) and ``.jsonl``/``.jsonl.gz``."""
    if path.name.endswith(".gz"):
        check_size(path, LIMITS["samples_compressed"], "samples")
    else:
        check_size(path, LIMITS["samples"], "samples")
    if not (path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz")):
        fail(f"{path}: samples file must be .jsonl or .jsonl.gz")


def load_json(path: Path, what: str, kind: str) -> Any:
    """One submission JSON file through the hardened reader (never following a link)."""
    return untrusted.read_json(path, read_limits(kind), what=what, follow_symlinks=False)


def submission_sha256(directory: Path, meta: SubmissionMetadata) -> str:
    """The content hash a reproduction is bound to: the results JSON's bytes, the samples' text
    (decompressed) and the metadata's model description. Editing any of them makes an existing
    reproduction record stale; the reproduction's seed derives from it."""
    h = hashlib.sha256()
    h.update(b"consistbench-submission-v1\n")
    h.update(untrusted.content_sha256(directory / meta.files.results, read_limits("results"), what="results JSON",
                                      follow_symlinks=False).encode())
    h.update(untrusted.content_sha256(directory / meta.files.samples, read_limits("samples"), what="samples file",
                                      follow_symlinks=False).encode())
    h.update(json.dumps(meta.model.model_dump(mode="json"), sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def read_submission_file(directory: Path, meta: SubmissionMetadata, name: str) -> bytes:
    """The bytes of one validated submission file, read again without following links and
    within the size limits (the site copies them)."""
    path = directory / name
    limit = {METADATA_FILE: LIMITS["metadata"], REPRODUCTION_FILE: LIMITS["reproduction"],
             meta.files.results: LIMITS["results"]}.get(
        name, LIMITS["samples_compressed"] if name.endswith(".gz") else LIMITS["samples"])
    size = path.stat(follow_symlinks=False).st_size
    if size > limit:
        fail(f"{path}: grew above its size limit after validation")
    with untrusted.open_regular(path, follow_symlinks=False, what="submission file") as fh:
        data = fh.read(size + 1)
    if len(data) != size:
        fail(f"{path}: changed while the site was built")
    return data
