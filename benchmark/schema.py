"""The data schema: one JSON object per line, validated with errors that name file and line.

Fields (all strings, all required):
    id           unique row id
    group_id     shared by an original and all its variants
    split        train | dev | test
    variant_type original | how_to | plural_article | paraphrase, or a robust family:
                 typo | surface | template (``data/robust/``; see benchmark/variants)
    question     the query
    context      the retrieved passage(s) given to the generator
    reference    the gold answer
    passage_id   id of the passage in the corpus (``doc.html#anchor``)
    source       where the passage came from (a URL)
A responses file holds data rows plus a string ``response``. Extra fields are kept untouched.

Length limits (:data:`FIELD_LIMITS`, characters): ``question``, ``reference`` and ``response``
at most :data:`consistbench.benchmark.metrics.MAX_TEXT_CHARS` (they are scored, and ROUGE-L is
quadratic), ``context`` at most 65,536, every other field at most 1,024. Longer values are
refused when the file is read, before any metric runs.

Group rules: exactly one original per group; all rows of a group share ``split``,
``passage_id`` and ``reference``; no passage appears in two splits.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consistbench.benchmark.errors import DataError
from consistbench.benchmark.fileio import read_jsonl
from consistbench.benchmark.metrics import MAX_TEXT_CHARS
from consistbench.benchmark.variants import ROW_TYPES

FIELDS = ("id", "group_id", "split", "variant_type", "question", "context", "reference", "passage_id", "source")
FIELD_LIMITS = {"question": MAX_TEXT_CHARS, "reference": MAX_TEXT_CHARS, "response": MAX_TEXT_CHARS,
                "context": 65_536}
OTHER_FIELD_LIMIT = 1024


def field_limit(name: str) -> int:
    return FIELD_LIMITS.get(name, OTHER_FIELD_LIMIT)
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Row:
    id: str
    group_id: str
    split: str
    variant_type: str
    question: str
    context: str
    reference: str
    passage_id: str
    source: str
    response: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    line: int = field(default=0, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in FIELDS}
        out.update(self.extra)
        if self.response is not None:
            out["response"] = self.response
        return out


def parse_row(obj: dict[str, Any], where: str, *, require_response: bool = False) -> Row:
    """Validate one decoded JSON object; ``where`` (``file:line``) prefixes every error."""
    for name in FIELDS:
        if name not in obj:
            raise DataError(f"{where}: missing field {name!r}")
        if not isinstance(obj[name], str):
            raise DataError(f"{where}: field {name!r} must be a string, got {type(obj[name]).__name__}")
    for name in (*FIELDS, "response"):
        value = obj.get(name)
        if isinstance(value, str) and len(value) > field_limit(name):
            raise DataError(f"{where}: field {name!r} has {len(value):,} characters, above the limit of "
                            f"{field_limit(name):,}")
    for name in ("id", "group_id", "question"):
        if not obj[name].strip():
            raise DataError(f"{where}: field {name!r} is empty")
    if obj["variant_type"] not in ROW_TYPES:
        raise DataError(f"{where}: unknown variant_type {obj['variant_type']!r} (expected one of {', '.join(ROW_TYPES)})")
    if obj["split"] not in SPLITS:
        raise DataError(f"{where}: unknown split {obj['split']!r} (expected one of {', '.join(SPLITS)})")
    response = obj.get("response")
    if require_response:
        if "response" not in obj:
            raise DataError(f"{where}: missing field 'response'")
        if not isinstance(response, str):
            raise DataError(f"{where}: field 'response' must be a string, got {type(response).__name__}")
    extra = {k: v for k, v in obj.items() if k not in FIELDS and k not in {"response", "__line__"}}
    return Row(**{k: obj[k] for k in FIELDS}, response=response if isinstance(response, str) else None,
               extra=extra, line=obj.get("__line__", 0))


def check_groups(rows: Sequence[Row], path: str) -> None:
    """Enforce unique ids, one original per group, group-shared fields, split-disjoint passages."""
    if not rows:
        raise DataError(f"{path}: no rows")
    seen: dict[str, Row] = {}
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row.id in seen:
            raise DataError(f"{path}:{row.line}: duplicate id {row.id!r} (first on line {seen[row.id].line})")
        seen[row.id] = row
        groups[row.group_id].append(row)
    passage_split: dict[str, Row] = {}
    for gid, members in groups.items():
        originals = [r for r in members if r.variant_type == "original"]
        if not originals:
            raise DataError(f"{path}:{members[0].line}: group {gid!r} has no original")
        if len(originals) > 1:
            raise DataError(f"{path}:{originals[1].line}: group {gid!r} has a second original (first on line {originals[0].line})")
        first = originals[0]
        for row in members:
            for name in ("split", "passage_id", "reference"):
                if getattr(row, name) != getattr(first, name):
                    raise DataError(f"{path}:{row.line}: {name} differs from its group's original (line {first.line})")
    for row in rows:
        other = passage_split.setdefault(row.passage_id, row)
        if other.split != row.split:
            raise DataError(f"{path}:{row.line}: passage {row.passage_id!r} is in split {row.split!r} "
                            f"and in split {other.split!r} (line {other.line})")


def load_rows(path: str | Path, *, require_response: bool = False) -> list[Row]:
    """Read and validate a data file (or a responses file with ``require_response``)."""
    raw = read_jsonl(path)
    rows = [parse_row(obj, f"{path}:{obj['__line__']}", require_response=require_response) for obj in raw]
    check_groups(rows, str(path))
    return rows


def load_data(path: str | Path) -> list[Row]:
    return load_rows(path)


def load_responses(path: str | Path) -> list[Row]:
    return load_rows(path, require_response=True)


def group_id_for(passage_id: str, question: str) -> str:
    """A content-derived group id: stable across rebuilds and independent of row order."""
    digest = hashlib.sha1(f"{passage_id}\n{question}".encode()).hexdigest()[:12]
    return f"g{digest}"


VARIANT_SUFFIX = {"original": "orig", "how_to": "howto", "plural_article": "plural", "paraphrase": "para",
                  "typo": "typo", "surface": "surface", "template": "template"}


def row_id_for(group_id: str, variant_type: str, n: int = 1) -> str:
    suffix = VARIANT_SUFFIX[variant_type]
    return f"{group_id}-{suffix}" if n == 1 else f"{group_id}-{suffix}{n}"


def data_checksum(rows: Iterable[Row]) -> str:
    """SHA-256 over the rows' scored content, order-independent: the data version of a split.

    Any change to an id, question, context, reference or variant type changes it, so results on
    different data versions are never mixed.
    """
    h = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r.id):
        h.update(json.dumps([row.id, row.group_id, row.variant_type, row.question, row.context, row.reference],
                            ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()
