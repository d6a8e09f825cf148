"""The corpus a retriever searches: passage ids and texts, with a checksum that versions indexes.

:func:`docs_corpus` is the shipped corpus (the Python 3.11 documentation, see
``consistbench.benchmark.corpus``). Parsing its HTML takes ~30 s of CPU, so the parsed passages are kept as
JSONL in the cache, keyed by the documentation package version and the parser's source: a new
package or a changed parser gives a new file. Any other list of passages works too
(:meth:`Corpus.from_records`), which is how the tests use a tiny corpus.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import Progress

from consistbench.benchmark import corpus
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import read_jsonl, write_jsonl
from consistbench.benchmark.paths import cache_dir


@dataclass(frozen=True)
class Corpus:
    """Passage ids and texts in a fixed order (row i of an index is passage i)."""

    ids: tuple[str, ...]
    texts: tuple[str, ...]
    name: str = "custom"
    _pos: dict = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self):
        if len(self.ids) != len(self.texts):
            raise ConsistbenchError(f"corpus {self.name!r}: {len(self.ids)} ids but {len(self.texts)} texts")
        if not self.ids:
            raise ConsistbenchError(f"corpus {self.name!r} is empty")
        pos = {pid: i for i, pid in enumerate(self.ids)}
        if len(pos) != len(self.ids):
            dup = next(p for p in self.ids if self.ids.count(p) > 1)
            raise ConsistbenchError(f"corpus {self.name!r}: duplicate passage id {dup!r}")
        object.__setattr__(self, "_pos", pos)

    @classmethod
    def from_records(cls, records: Iterable[dict | tuple], name: str = "custom") -> Corpus:
        """From ``{"passage_id", "text"}`` dicts or ``(passage_id, text)`` tuples."""
        ids, texts = [], []
        for rec in records:
            pid, text = (rec["passage_id"], rec["text"]) if isinstance(rec, dict) else rec
            ids.append(str(pid))
            texts.append(str(text))
        return cls(tuple(ids), tuple(texts), name)

    def __len__(self) -> int:
        return len(self.ids)

    def text_of(self, passage_id: str) -> str:
        return self.texts[self._pos[passage_id]]

    def __contains__(self, passage_id: str) -> bool:
        return passage_id in self._pos

    @functools.cached_property
    def checksum(self) -> str:
        """SHA-256 over ids and texts in order: the corpus version an index is built for."""
        h = hashlib.sha256()
        for pid, text in zip(self.ids, self.texts):
            h.update(pid.encode("utf-8") + b"\x00" + text.encode("utf-8") + b"\x01")
        return h.hexdigest()


def _parser_key() -> str:
    source = Path(corpus.__file__).read_bytes()
    return f"{corpus.installed_version() or 'unknown'}-{hashlib.sha256(source).hexdigest()[:12]}"


@functools.lru_cache(maxsize=1)
def docs_corpus() -> Corpus:
    """The shipped passage corpus (parsed once, then read from the cache in well under a second)."""
    html = corpus.html_dir()
    if not html.is_dir():
        raise ConsistbenchError(f"{html}: documentation not found; run `consistbench data fetch` first")
    path = cache_dir() / "retrieval" / f"passages-{_parser_key()}.jsonl"
    if not path.is_file():
        recs = []
        with Progress(transient=True) as bar:
            task = bar.add_task("parsing the documentation into passages", total=None)
            for p in corpus.iter_passages(html):
                recs.append({"passage_id": p.passage_id, "text": p.text})
                bar.advance(task)
        write_jsonl(path, recs)
    return Corpus.from_records(read_jsonl(path), name="python-3.11-docs")


def load_corpus(path: str | Path | None = None) -> Corpus:
    """A JSONL of ``{"passage_id", "text"}`` objects, or the shipped corpus when ``path`` is None."""
    if path is None:
        return docs_corpus()

    recs = read_jsonl(path)
    for rec in recs:
        for key in ("passage_id", "text"):
            if not isinstance(rec.get(key), str) or not rec[key].strip():
                raise ConsistbenchError(f"{path}:{rec['__line__']}: missing or empty string field {key!r}")
    return Corpus.from_records(recs, name=Path(path).name)


def describe(corpus: Corpus) -> dict:
    return {"name": corpus.name, "passages": len(corpus), "sha256": corpus.checksum}


def check_ids(corpus: Corpus, ids: Sequence[str], where: str) -> None:
    missing = [p for p in ids if p not in corpus]
    if missing:
        raise ConsistbenchError(f"{where}: passage {missing[0]!r} is not in corpus {corpus.name!r}"
                                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))

