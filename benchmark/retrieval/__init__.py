"""Retrievers over the passage corpus and retrieval-consistency metrics.

- :class:`Retriever` (``base``): ``search(queries, k) -> [[Hit(passage_id, score), ...], ...]``,
  best first, with an optional relevance threshold.
- ``bm25`` (bm25s), ``dense`` (sentence-transformers, embedded MiniLM by default) and
  ``hybrid`` (reciprocal-rank fusion of the two); build one with :func:`make_retriever`.
- ``metrics``: Jaccard@k, rank-biased overlap and gold recall@k per (original, variant) pair.
- ``e2e``: precomputed retrieval for the ``consistency_e2e_*`` lm-eval tasks.
- ``decompose``: generator vs retriever share of inconsistency for one model.
"""

from __future__ import annotations

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.retrieval.base import Hit, Retriever
from consistbench.benchmark.retrieval.bm25 import BM25Retriever
from consistbench.benchmark.retrieval.dense import DenseRetriever
from consistbench.benchmark.retrieval.hybrid import HybridRetriever
from consistbench.benchmark.retrieval.passages import Corpus, docs_corpus

RETRIEVERS = ("bm25", "dense", "hybrid")


def make_retriever(name: str, corpus: Corpus | None = None, *, threshold: float | None = None,
                   model: str | None = None, index_root=None) -> Retriever:
    """A retriever by name over ``corpus`` (default: the shipped documentation corpus)."""
    corpus = corpus if corpus is not None else docs_corpus()
    if name == "bm25":
        if model:
            raise ConsistbenchError("--model applies to the dense and hybrid retrievers, not bm25")
        return BM25Retriever(corpus, threshold=threshold, index_root=index_root)
    if name == "dense":
        return DenseRetriever(corpus, threshold=threshold, model=model, index_root=index_root)
    if name == "hybrid":
        return HybridRetriever(corpus, threshold=threshold, model=model, index_root=index_root)
    raise ConsistbenchError(f"unknown retriever {name!r} (expected one of {', '.join(RETRIEVERS)})")


__all__ = ["RETRIEVERS", "Corpus", "Hit", "Retriever", "docs_corpus", "make_retriever"]
