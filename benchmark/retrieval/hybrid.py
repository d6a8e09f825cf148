"""Hybrid retrieval: reciprocal-rank fusion (RRF) of BM25 and dense rankings.

RRF (Cormack, Clarke and Buettcher, SIGIR 2009): ``score(d) = sum_r 1 / (rrf_k + rank_r(d))``
over the input rankings, rank starting at 1, ``rrf_k = 60`` as in the paper. Each input ranking
is cut at ``depth`` (default 100) before fusion. A few lines of arithmetic; written here because
neither bm25s nor sentence-transformers ships a fusion step. Scores lie in (0, 2/61]; a
threshold applies to the fused score.
"""

from __future__ import annotations

from collections import defaultdict

from consistbench.benchmark.retrieval.base import Hit, Retriever
from consistbench.benchmark.retrieval.bm25 import BM25Retriever
from consistbench.benchmark.retrieval.dense import DenseRetriever
from consistbench.benchmark.retrieval.passages import Corpus

RRF_K = 60


def rrf(rankings: list[list[str]], rrf_k: int = RRF_K) -> list[tuple[str, float]]:
    """Fuse rankings (lists of ids, best first); ties broken by best single rank, then id."""
    score: dict[str, float] = defaultdict(float)
    best: dict[str, int] = {}
    for ranking in rankings:
        for rank, pid in enumerate(ranking, start=1):
            score[pid] += 1.0 / (rrf_k + rank)
            best[pid] = min(best.get(pid, rank), rank)
    return sorted(score.items(), key=lambda kv: (-kv[1], best[kv[0]], kv[0]))


class HybridRetriever(Retriever):
    name = "hybrid"

    def __init__(self, corpus: Corpus, *, threshold: float | None = None, model: str | None = None,
                 depth: int = 100, rrf_k: int = RRF_K, index_root=None):
        super().__init__(corpus, threshold=threshold)
        self.depth, self.rrf_k = depth, rrf_k
        self.sparse = BM25Retriever(corpus, index_root=index_root)
        self.dense = DenseRetriever(corpus, model=model, index_root=index_root)
        self.built = self.sparse.built or self.dense.built

    def config(self) -> dict:
        return {"retriever": self.name, "fusion": "reciprocal rank fusion", "rrf_k": self.rrf_k,
                "depth": self.depth, "sparse": self.sparse.config(), "dense": self.dense.config()}

    def _search(self, queries: list[str], k: int) -> list[list[Hit]]:
        depth = max(self.depth, k)
        sparse = self.sparse.search(queries, depth)
        dense = self.dense.search(queries, depth)
        out = []
        for s, d in zip(sparse, dense):
            fused = rrf([[h.passage_id for h in s], [h.passage_id for h in d]], self.rrf_k)[:k]
            out.append([Hit(pid, score) for pid, score in fused])
        return out
