"""Sparse retrieval: BM25 through ``bm25s`` (Lucene's BM25 variant, k1=1.5, b=0.75 by default).

Tokenisation: ``bm25s.tokenize`` (lower-case, words of 2+ word characters, English stop words
removed) with NLTK's Snowball stemmer, so "list" and "lists" meet (the plural/article variants
of the benchmark would otherwise retrieve differently for a trivial reason). A hit with score 0
shares no term with the query and is dropped: it is not a match, only an arbitrary tie.
"""

from __future__ import annotations

import functools

import numpy as np

from consistbench.benchmark.retrieval.base import Hit, Retriever, cached_index
from consistbench.benchmark.retrieval.passages import Corpus


@functools.lru_cache(maxsize=1)
def _stem_word():
    from nltk.stem.snowball import SnowballStemmer

    return functools.lru_cache(maxsize=200_000)(SnowballStemmer("english").stem)


def _stem(words: list[str]) -> list[str]:
    stem = _stem_word()
    return [stem(w) for w in words]


def tokenize(texts: list[str], *, return_ids: bool):
    import bm25s

    return bm25s.tokenize(texts, lower=True, stopwords="en", stemmer=_stem, return_ids=return_ids,
                          show_progress=False)


class BM25Retriever(Retriever):
    name = "bm25"

    def __init__(self, corpus: Corpus, *, threshold: float | None = None, k1: float = 1.5, b: float = 0.75,
                 method: str = "lucene", index_root=None):
        super().__init__(corpus, threshold=threshold)
        self.k1, self.b, self.method = k1, b, method
        self.index, self.built = cached_index(self.config(), corpus, self._build, self._load, root=index_root)

    def config(self) -> dict:
        import bm25s

        return {"retriever": self.name, "library": f"bm25s {bm25s.__version__}", "method": self.method,
                "k1": self.k1, "b": self.b, "tokenizer": "bm25s.tokenize, stopwords=en, nltk snowball stemmer"}

    def _build(self, path) -> None:
        import bm25s

        model = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        model.index(tokenize(list(self.corpus.texts), return_ids=True), show_progress=False)
        model.save(str(path), allow_pickle=False, show_progress=False)

    def _load(self, path):
        import bm25s

        return bm25s.BM25.load(str(path), allow_pickle=False, load_vocab=True, show_progress=False)

    def _search(self, queries: list[str], k: int) -> list[list[Hit]]:
        tokens = tokenize(queries, return_ids=False)
        docs, scores = self.index.retrieve(tokens, k=k, show_progress=False, n_threads=0, sorted=True)
        ids = self.corpus.ids
        out = []
        for row_docs, row_scores in zip(np.asarray(docs), np.asarray(scores)):
            out.append([Hit(ids[int(d)], float(s)) for d, s in zip(row_docs, row_scores) if s > 0])
        return out
