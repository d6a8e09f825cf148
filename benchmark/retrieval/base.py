"""The retriever interface, the threshold, and the on-disk index cache shared by all retrievers.

A retriever answers a batch of queries with ranked ``(passage_id, score)`` lists, best first.
Scores are on the retriever's own scale (BM25 score, cosine similarity, RRF score), and the
optional relevance ``threshold`` drops every hit scoring below it, so a query may get fewer
than ``k`` passages or none.

Indexes are built once per (retriever configuration, corpus version) and kept under
``<cache>/retrieval/<retriever>-<config hash>/``: a ``manifest.json`` records the corpus
checksum, and an index whose checksum differs from the corpus it is asked for is rebuilt
(atomically: a temporary directory renamed into place). Arrays are ``.npy``/safetensors and
metadata JSON; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import atomic_path
from consistbench.benchmark.paths import cache_dir
from consistbench.benchmark.retrieval.passages import Corpus

MANIFEST = "manifest.json"
INDEX_FORMAT = 1


class Hit(NamedTuple):
    passage_id: str
    score: float


class Retriever(ABC):
    """Ranked passages for a batch of queries; subclasses implement :meth:`_search`."""

    name: str = "retriever"

    def __init__(self, corpus: Corpus, *, threshold: float | None = None):
        if threshold is not None and not math.isfinite(threshold):
            raise ConsistbenchError(f"threshold must be a finite number, got {threshold!r}")
        self.corpus = corpus
        self.threshold = threshold
        self.built = False  # True when this process built the index instead of loading it

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-``k`` hits per query, best first, without hits under the threshold."""
        if isinstance(queries, str):
            raise TypeError("search() takes a sequence of queries, not one string")
        if k < 1:
            raise ConsistbenchError(f"k must be at least 1, got {k}")
        if not queries:
            return []
        results = self._search(list(queries), min(k, len(self.corpus)))
        if self.threshold is not None:
            results = [[h for h in hits if h.score >= self.threshold] for hits in results]
        return results

    @abstractmethod
    def _search(self, queries: list[str], k: int) -> list[list[Hit]]:
        ...

    def config(self) -> dict:
        """Everything that changes the ranking (written into results and cache keys)."""
        return {"retriever": self.name}

    def describe(self) -> dict:
        return {**self.config(), "threshold": self.threshold, "corpus_sha256": self.corpus.checksum,
                "corpus_passages": len(self.corpus)}


def index_root() -> Path:
    return cache_dir() / "retrieval"


def config_key(config: dict) -> str:
    blob = json.dumps({**config, "index_format": INDEX_FORMAT}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def index_dir(config: dict, root: Path | None = None) -> Path:
    return (root or index_root()) / f"{config['retriever']}-{config_key(config)}"


def read_manifest(path: Path) -> dict | None:
    try:
        return json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cached_index(config: dict, corpus: Corpus, build, load, *, root: Path | None = None):
    """Load the index for ``(config, corpus)`` or build it; return ``(index, built)``.

    ``build(tmp_dir)`` writes the index files into ``tmp_dir``; ``load(dir)`` reads them.
    The manifest is written last, so a directory without one is never trusted.
    """
    target = index_dir(config, root)
    manifest = read_manifest(target)
    if manifest and manifest.get("corpus_sha256") == corpus.checksum and manifest.get("config") == config:
        return load(target), False
    with atomic_path(target, is_dir=True) as tmp:
        build(tmp)
        (tmp / MANIFEST).write_text(json.dumps({"config": config, "corpus_sha256": corpus.checksum,
                                                "corpus_name": corpus.name, "passages": len(corpus),
                                                "index_format": INDEX_FORMAT}, indent=2, sort_keys=True))
    return load(target), True
