"""Dense retrieval: sentence-transformers embeddings, cosine similarity by one matrix product.

The default encoder is the embedded all-MiniLM-L6-v2 (``consistbench.benchmark.embedded``); any
sentence-transformers model name or folder works (``model=``). Passage embeddings are
L2-normalised float32, stored as safetensors, so a query's scores against the whole corpus are
one ``(n_queries, d) @ (d, n_passages)`` product and the top-k an ``argpartition``. Exact search
needs no approximate index at this size (~9k passages x 384 dims = 13 MB).
"""

from __future__ import annotations

import numpy as np

from consistbench.benchmark.embedded import sentence_encoder
from consistbench.benchmark.retrieval.base import Hit, Retriever, cached_index
from consistbench.benchmark.retrieval.passages import Corpus

EMBEDDED = "embedded:all-MiniLM-L6-v2"


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest scores per row, best first (ties: lower index)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(scores, idx, axis=1)


class DenseRetriever(Retriever):
    name = "dense"

    def __init__(self, corpus: Corpus, *, threshold: float | None = None, model: str | None = None,
                 batch_size: int = 64, index_root=None):
        super().__init__(corpus, threshold=threshold)
        self.model = model
        self.batch_size = batch_size
        self.embeddings, self.built = cached_index(self.config(), corpus, self._build, self._load, root=index_root)

    def config(self) -> dict:
        return {"retriever": self.name, "model": self.model or EMBEDDED, "normalised": True,
                "similarity": "cosine (dot product of normalised embeddings)"}

    def encode(self, texts: list[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        enc = sentence_encoder(self.model)
        return np.asarray(enc.encode(texts, batch_size=batch_size or self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=progress), dtype=np.float32)

    def _build(self, path) -> None:
        from safetensors.numpy import save_file

        emb = self.encode(list(self.corpus.texts), progress=True)
        save_file({"embeddings": np.ascontiguousarray(emb)}, str(path / "embeddings.safetensors"),
                  metadata={"model": self.model or EMBEDDED, "corpus_sha256": self.corpus.checksum})

    def _load(self, path) -> np.ndarray:
        from safetensors.numpy import load_file

        emb = load_file(str(path / "embeddings.safetensors"))["embeddings"]
        if emb.shape[0] != len(self.corpus):
            raise ValueError(f"{path}: {emb.shape[0]} embeddings for {len(self.corpus)} passages")
        return emb

    def _search(self, queries: list[str], k: int) -> list[list[Hit]]:
        q = self.encode(queries)  # small batches: ~10% more queries per CPU-second than 256 here
        idx, vals = top_k(q @ self.embeddings.T, k)
        ids = self.corpus.ids
        return [[Hit(ids[int(i)], float(s)) for i, s in zip(ri, rv)] for ri, rv in zip(idx, vals)]
