"""One hardened reader for JSON and JSON Lines files that nobody vouches for.

Every file a user or a submitter hands to consistbench (a responses JSONL for ``score``, a data
file for ``data validate`` / ``data audit``, lm-eval output for ``compare``, a leaderboard
submission for ``leaderboard validate`` / ``build`` / ``reproduce``) is read through
:func:`read_json` or :func:`iter_jsonl`. Whatever the bytes are, the result is either the
parsed value or one :class:`~consistbench.benchmark.errors.DataError` line naming the file
(and line) and the problem; never a traceback, never unbounded memory or time.

Decisions, each with its limit in :class:`ReadLimits` (the defaults are in the table of
docs/LEADERBOARD.md, "Limits"):

* **Files.** Only regular files are read: a directory, FIFO, socket or device is refused
  before any byte is read (a FIFO would block ``open``; a device can be endless), and so is a
  symbolic-link loop. With ``follow_symlinks=False`` (leaderboard submissions) a symbolic link
  is refused outright. The size on disk is checked before reading; reading stops at the limit
  even if the file grows meanwhile.
* **gzip.** ``.gz`` files are decompressed incrementally, line by line, with a bound on each
  line and on the total decompressed size: a gzip bomb (a small member that expands to GiBs,
  or one endless line) is refused after at most one line's limit in memory.
* **Nesting depth.** CPython's parser recurses; a document nested thousands deep raises
  ``RecursionError`` inside it. That is caught and refused, and every parsed value is walked
  with an explicit stack (no recursion) to enforce :attr:`ReadLimits.depth`.
* **Integers.** Python refuses to convert integer literals above 4,300 digits with a
  ``ValueError``; far below that, an integer longer than :attr:`ReadLimits.int_digits` digits
  is refused here with a clear message (no field of any consistbench file needs one).
* **NaN and Infinity.** ``NaN`` is accepted where :attr:`ReadLimits.nan` allows it (lm-eval
  writes NaN for a metric that has no data, e.g. a variant type absent from a subset);
  ``Infinity``, ``-Infinity`` and float literals that overflow to infinity are always refused:
  no consistbench value is infinite.
* **Unicode.** Bytes must be valid UTF-8 (a leading byte-order mark is dropped; any other byte
  that is not UTF-8, such as a Latin-1 file's, is refused with its line and byte offset). A ``\\uD800``-style escape decodes to a lone surrogate,
  which Python keeps in a ``str`` but cannot encode again (``UnicodeEncodeError`` far from the
  input); any string or key holding one is refused at read time.
* **Duplicate keys.** ``{"em": 0.2, "em": 0.9}`` means 0.2 to one parser and 0.9 to another;
  any object with a repeated key is refused (``object_pairs_hook``).
* **Strings.** One string longer than :attr:`ReadLimits.string_chars` characters is refused.
  Tighter, per-field limits (a response, a reference) live with the schema that knows the field
  (:data:`consistbench.benchmark.schema.FIELD_LIMITS`).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import re
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from consistbench.benchmark.errors import DataError

KiB = 1024
MiB = 1024 * KiB
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class ReadLimits:
    """Bounds for one untrusted file. Sizes in bytes; ``string_chars`` in characters."""

    file_bytes: int = 1024 * MiB  # on disk (a .gz file: compressed)
    text_bytes: int = 1024 * MiB  # decompressed text in total (equals the file for plain files)
    line_bytes: int = 16 * MiB  # one JSONL line including its newline; a JSON file: the whole document
    depth: int = 64  # arrays and objects nested in each other
    string_chars: int = 4 * MiB  # one string (or key)
    int_digits: int = 32  # one integer literal (sign not counted)
    nan: bool = True  # accept NaN (Infinity is never accepted)

    def but(self, **changes) -> ReadLimits:
        return replace(self, **changes)


DEFAULT_LIMITS = ReadLimits()


def _mib(n: int) -> str:
    if n >= MiB:
        return f"{n / MiB:g} MiB"
    if n >= KiB:
        return f"{n / KiB:g} KiB"
    return f"{n} bytes"


def _fail(msg: str):
    raise DataError(msg)


# ---------------------------------------------------------------------------------------------
# Opening

def describe_os_error(path: Path | str, exc: OSError, what: str = "file") -> str:
    """One line for an OSError met while opening ``path``."""
    if exc.errno == errno.ENOENT:
        return f"{path}: no such {what}"
    if exc.errno == errno.ELOOP:
        return f"{path}: symbolic link loop (or a chain of links too long to follow)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{path}: permission denied"
    if exc.errno == errno.ENOTDIR:
        return f"{path}: a part of the path is not a directory"
    if exc.errno == errno.ENAMETOOLONG:
        return f"{path}: file name too long"
    return f"{path}: cannot open the {what} ({exc.strerror or type(exc).__name__})"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | os.PathLike, *, follow_symlinks: bool = True, what: str = "file") -> BinaryIO:
    """Open ``path`` for binary reading if, and only if, it is a regular file.

    Opened non-blocking (so a FIFO cannot hang ``open``) and checked with ``fstat`` on the open
    descriptor (so the file checked is the file read). ``follow_symlinks=False`` refuses a
    symbolic link in the last component (``O_NOFOLLOW``).
    """
    path = Path(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
        if path.is_symlink():
            _fail(f"{path}: {what} is a symbolic link (refused: only plain files are read)")
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks and path.is_symlink():
            _fail(f"{path}: {what} is a symbolic link (refused: only plain files are read)")
        _fail(describe_os_error(path, exc, what))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            _fail(f"{path}: {what} is {_kind(st.st_mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_disk_size(fh: BinaryIO, path: Path, limit: int, what: str) -> None:
    size = os.fstat(fh.fileno()).st_size
    if size > limit:
        _fail(f"{path}: {what} is {_mib(size)}, above the limit of {_mib(limit)}")


# ---------------------------------------------------------------------------------------------
# Parsing

class _Refused(Exception):
    """Raised from the parser's hooks; turned into a DataError with the location added."""


def _hooks(limits: ReadLimits) -> dict:
    def pairs(items):
        obj = dict(items)
        if len(obj) != len(items):
            seen = set()
            for key, _ in items:
                if key in seen:
                    raise _Refused(f"duplicate key {_show(key)} in one object (parsers disagree on which "
                                   "value counts)")
                seen.add(key)
        return obj

    def parse_int(text: str) -> int:
        digits = len(text) - (text[0] == "-")
        if digits > limits.int_digits:
            raise _Refused(f"an integer of {digits} digits (at most {limits.int_digits} are accepted)")
        return int(text)

    def parse_float(text: str) -> float:
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise _Refused(f"number {text[:40]}{'...' if len(text) > 40 else ''} overflows to infinity")
        return value

    def parse_constant(name: str) -> float:
        if name == "NaN" and limits.nan:
            return float("nan")
        raise _Refused(f"{name} is not accepted" + ("" if name != "NaN" else " in this file"))

    return {"object_pairs_hook": pairs, "parse_int": parse_int, "parse_float": parse_float,
            "parse_constant": parse_constant}


def _show(text: str, n: int = 40) -> str:
    text = _SURROGATE.sub("\ufffd", text)
    return repr(text[:n] + ("..." if len(text) > n else ""))


def check_value(value: Any, limits: ReadLimits = DEFAULT_LIMITS) -> None:
    """Walk a parsed value with an explicit stack: depth, string length, lone surrogates.

    Raises :class:`_Refused`; :func:`loads` adds the location.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if len(item) > limits.string_chars:
                raise _Refused(f"a string of {len(item):,} characters (at most {limits.string_chars:,} are accepted)")
            m = _SURROGATE.search(item)
            if m:
                raise _Refused(f"a lone surrogate \\u{ord(m.group()):04x} in a string (not valid Unicode text)")
        elif isinstance(item, (dict, list)):
            if depth > limits.depth:
                raise _Refused(f"values nested more than {limits.depth} deep")
            if isinstance(item, dict):
                for key, sub in item.items():
                    stack.append((key, depth + 1))
                    stack.append((sub, depth + 1))
            else:
                stack.extend((sub, depth + 1) for sub in item)


BOM = b"\xef\xbb\xbf"


def decode_utf8(raw: bytes, path: str | os.PathLike, *, line: int = 1, offset: int = 0,
                strip_bom: bool = False) -> str:
    """``raw`` decoded as UTF-8, or one DataError naming the file, the line and the byte offset.

    ``raw`` starts at byte ``offset`` of the file (of the decompressed text for ``.gz``), on line
    ``line``. ``strip_bom``: ``raw`` is the file's start, where a UTF-8 byte-order mark (written by
    Windows editors and Excel) is dropped. Other encodings (Latin-1, UTF-16) are refused, never guessed.
    """
    if strip_bom and raw.startswith(BOM):
        raw, offset = raw[len(BOM):], offset + len(BOM)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        at_line = line + raw.count(b"\n", 0, exc.start)
        start = raw.rfind(b"\n", 0, exc.start) + 1
        _fail(f"{path}:{at_line}: invalid UTF-8 at line {at_line}, byte offset {offset + exc.start} "
              f"(byte {exc.start - start + 1} of the line, 0x{raw[exc.start]:02x}: {exc.reason}); "
              "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)")


def loads(text: str | bytes, where: str, limits: ReadLimits = DEFAULT_LIMITS) -> Any:
    """Parse one JSON document under ``limits``; ``where`` (``file`` or ``file:line``) prefixes errors."""
    if isinstance(text, bytes):
        text = decode_utf8(text, where)
    try:
        value = json.loads(text, **_hooks(limits))
        check_value(value, limits)
    except _Refused as exc:
        _fail(f"{where}: {exc}")
    except RecursionError:
        _fail(f"{where}: values nested too deep for the parser (at most {limits.depth} levels are accepted)")
    except json.JSONDecodeError as exc:
        _fail(f"{where}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
    except ValueError as exc:  # anything else the parser refuses, as one line
        _fail(f"{where}: invalid JSON ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
    return value


# ---------------------------------------------------------------------------------------------
# Files

def read_json(path: str | os.PathLike, limits: ReadLimits = DEFAULT_LIMITS, *, what: str = "JSON file",
              follow_symlinks: bool = True) -> Any:
    """One JSON document from a regular file, at most ``limits.line_bytes`` (and ``file_bytes``) long."""
    path = Path(path)
    limit = min(limits.file_bytes, limits.line_bytes)
    with open_regular(path, follow_symlinks=follow_symlinks, what=what) as fh:
        _check_disk_size(fh, path, limit, what)
        chunks, total = [], 0
        try:  # in chunks: read(limit + 1) would allocate the whole limit up front
            while chunk := fh.read(min(MiB, limit + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    _fail(f"{path}: {what} is above the limit of {_mib(limit)}")
        except OSError as exc:
            _fail(f"{path}: cannot read the {what} ({exc.strerror or type(exc).__name__})")
    return loads(decode_utf8(b"".join(chunks), path, strip_bom=True), str(path), limits)


def iter_lines(path: str | os.PathLike, limits: ReadLimits = DEFAULT_LIMITS, *, what: str = "JSONL file",
               follow_symlinks: bool = True) -> Iterator[tuple[int, bytes]]:
    """Raw lines (1-based numbers) of a .jsonl or .jsonl.gz file, each and all within the limits.

    A ``.gz`` file is decompressed incrementally: ``readline(limit + 1)`` never holds more than
    one line's limit of decompressed text, however large the member expands.
    """
    path = Path(path)
    gz = path.name.endswith(".gz")
    total = 0
    with open_regular(path, follow_symlinks=follow_symlinks, what=what) as raw:
        _check_disk_size(raw, path, limits.file_bytes, what)
        fh: io.BufferedIOBase = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        try:
            lineno = 0
            while True:
                line = fh.readline(limits.line_bytes + 1)
                if not line:
                    return
                lineno += 1
                total += len(line)
                if len(line) > limits.line_bytes:
                    _fail(f"{path}:{lineno}: line longer than the limit of {_mib(limits.line_bytes)}"
                          + (" once decompressed" if gz else ""))
                if total > limits.text_bytes:
                    _fail(f"{path}: {what} is above the limit of {_mib(limits.text_bytes)}"
                          + (" once decompressed" if gz else ""))
                yield lineno, line
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            _fail(f"{path}: not a readable gzip file ({exc or type(exc).__name__})")
        except OSError as exc:
            _fail(f"{path}: cannot read the {what} ({exc.strerror or exc or type(exc).__name__})")
        finally:
            if gz:
                fh.close()


def iter_jsonl(path: str | os.PathLike, limits: ReadLimits = DEFAULT_LIMITS, *, what: str = "JSONL file",
               follow_symlinks: bool = True) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line, parsed by :func:`loads`.

    A byte-order mark at the start is dropped; a byte that is not UTF-8 is refused with its line
    and byte offset (:func:`decode_utf8`).
    """
    offset = 0
    for lineno, raw in iter_lines(path, limits, what=what, follow_symlinks=follow_symlinks):
        text = decode_utf8(raw, path, line=lineno, offset=offset, strip_bom=lineno == 1)
        offset += len(raw)
        if not text.strip():
            continue
        yield lineno, loads(text, f"{path}:{lineno}", limits)


def content_sha256(path: str | os.PathLike, limits: ReadLimits = DEFAULT_LIMITS, *, what: str = "file",
                   follow_symlinks: bool = True) -> str:
    """SHA-256 of a file's text (a ``.gz`` file: of its decompressed text), read within the limits."""
    h = hashlib.sha256()
    path = Path(path)
    if path.name.endswith(".gz"):
        for _, line in iter_lines(path, limits, what=what, follow_symlinks=follow_symlinks):
            h.update(line)
        return h.hexdigest()
    with open_regular(path, follow_symlinks=follow_symlinks, what=what) as fh:
        _check_disk_size(fh, path, limits.file_bytes, what)
        while chunk := fh.read(MiB):
            h.update(chunk)
    return h.hexdigest()
