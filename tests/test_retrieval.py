"""Retrievers, index cache, threshold and retrieval-consistency metrics on a tiny corpus."""

from __future__ import annotations

import json
import math

import pytest

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.retrieval import Corpus, make_retriever
from consistbench.benchmark.retrieval.base import MANIFEST, index_dir
from consistbench.benchmark.retrieval.hybrid import RRF_K, rrf
from consistbench.benchmark.retrieval.metrics import jaccard, pair_results, rbo, summarise

PASSAGES = [
    ("copy.html#shallow", "Shallow copies: copy.copy(x) returns a shallow copy of a list or dictionary."),
    ("copy.html#deep", "Deep copies: copy.deepcopy(x) copies nested objects recursively."),
    ("shutil.html#copyfile", "shutil.copyfile(src, dst) copies the contents of a file to another file."),
    ("sorting.html#key", "Sorting with a key: sorted(items, key=func) orders items by the value func returns."),
    ("dict.html#views", "Dictionary views: dict.items(), dict.keys() and dict.values() return dynamic views."),
    ("threading.html#lock", "A lock (threading.Lock) lets one thread at a time enter a critical section."),
    ("socket.html#timeout", "Sockets can time out: socket.settimeout(seconds) limits blocking operations."),
    ("json.html#dumps", "json.dumps(obj) serialises a Python object to a JSON formatted string."),
]


@pytest.fixture
def corpus() -> Corpus:
    return Corpus.from_records(PASSAGES, name="tiny")


def _rbo_by_definition(a, b, p):
    """RBO_ext for equal-length lists straight from Webber et al. (2010), eq. 30."""
    k = len(a)
    agreement = [len(set(a[:d]) & set(b[:d])) / d for d in range(1, k + 1)]
    return agreement[-1] * p ** k + (1 - p) / p * sum(agreement[d - 1] * p ** d for d in range(1, k + 1))


# --- metrics ---------------------------------------------------------------------------------

def test_jaccard_identical_disjoint_partial():
    assert jaccard(["a", "b", "c"], ["c", "b", "a"]) == 1.0
    assert jaccard(["a", "b"], ["c", "d"]) == 0.0
    assert jaccard(["a", "b", "c"], ["b", "c", "d"]) == pytest.approx(2 / 4)
    assert jaccard([], []) == 1.0 and jaccard(["a"], []) == 0.0


def test_rbo_sanity():
    a = ["a", "b", "c", "d", "e"]
    assert rbo(a, a) == pytest.approx(1.0)
    assert rbo(a, ["f", "g", "h", "i", "j"]) == 0.0
    for b in (["b", "a", "c", "d", "e"], ["a", "b", "c", "e", "d"], ["e", "d", "c", "b", "a"], ["a", "x", "c", "y", "e"]):
        for p in (0.5, 0.8, 0.9):
            assert rbo(a, b, p) == pytest.approx(_rbo_by_definition(a, b, p))
            assert rbo(a, b, p) == pytest.approx(rbo(b, a, p))  # symmetric
            assert 0.0 <= rbo(a, b, p) < 1.0
    # top-weighted: a swap at the top costs more than the same swap at the bottom
    assert rbo(a, ["b", "a", "c", "d", "e"]) < rbo(a, ["a", "b", "c", "e", "d"])
    # same set, different order: Jaccard cannot tell, RBO can
    assert jaccard(a, a[::-1]) == 1.0 and rbo(a, a[::-1]) < 1.0
    # uneven lengths (a threshold cut one list short): a prefix extrapolates to full agreement
    assert rbo(["a", "b"], a) == pytest.approx(1.0)
    assert 0.0 < rbo(["b"], a) < 1.0
    assert rbo([], []) == 1.0 and rbo(["a"], []) == 0.0
    with pytest.raises(ConsistbenchError):
        rbo(a, a, p=1.0)


def _rows():
    from tests.conftest import make_row

    return [make_row("g1", "original", "q1", passage="p1"), make_row("g1", "how_to", "q1b", passage="p1"),
            make_row("g1", "paraphrase", "q1c", passage="p1"),
            make_row("g2", "original", "q2", passage="p9"), make_row("g2", "plural_article", "q2b", passage="p9")]


def test_pair_results_and_summary_by_type():
    rows = _rows()
    retrieved = {"g1-orig": ["p1", "p2", "p3"], "g1-howto": ["p1", "p2", "p3"], "g1-para": ["p4", "p5", "p1"],
                 "g2-orig": ["p7", "p8"], "g2-plural": ["p9", "p8"]}
    pairs = {p.variant_id: p for p in pair_results(rows, retrieved)}
    assert set(pairs) == {"g1-howto", "g1-para", "g2-plural"}
    assert pairs["g1-howto"].jaccard == 1.0 and pairs["g1-howto"].identical == 1.0
    assert pairs["g1-para"].jaccard == pytest.approx(1 / 5) and pairs["g1-para"].same_top1 == 0.0
    assert pairs["g1-para"].recall_original == 1.0 and pairs["g1-para"].recall_variant == 1.0
    assert pairs["g2-plural"].recall_original == 0.0 and pairs["g2-plural"].recall_variant == 1.0
    summary = summarise(list(pairs.values()), rows, retrieved)
    assert summary["overall"]["pairs"] == 3
    assert summary["how_to"]["jaccard"] == 1.0
    assert summary["plural_article"]["recall_variant"] == 1.0 and summary["plural_article"]["recall_original"] == 0.0
    assert summary["rows"]["original"]["recall"] == pytest.approx(0.5)
    assert summary["rows"]["paraphrase"]["mrr"] == pytest.approx(1 / 3)
    with pytest.raises(ConsistbenchError, match="no retrieval result"):
        pair_results(rows, {k: v for k, v in retrieved.items() if k != "g2-plural"})


def test_rrf_fusion():
    fused = dict(rrf([["a", "b", "c"], ["b", "d"]]))
    assert fused["b"] == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1))
    assert fused["a"] == pytest.approx(1 / (RRF_K + 1))
    assert [pid for pid, _ in rrf([["a", "b", "c"], ["b", "d"]])][0] == "b"


# --- retrievers ------------------------------------------------------------------------------

def test_bm25_identical_and_disjoint_queries(corpus, tmp_path):
    r = make_retriever("bm25", corpus, index_root=tmp_path)
    same = r.search(["how do I copy a list", "how do I copy a list"], 3)
    assert same[0] == same[1] and same[0][0].passage_id == "copy.html#shallow"
    hits = r.search(["deep copy of nested objects", "socket timeout for blocking operations"], 2)
    a, b = ([h.passage_id for h in hs] for hs in hits)
    assert jaccard(a, b) == 0.0 and rbo(a, b) == 0.0
    assert all(x.score >= y.score for hs in hits for x, y in zip(hs, hs[1:]))  # best first
    assert r.search(["zzzz qqqq"], 3) == [[]]  # no shared term: no hit, not an arbitrary tie
    assert len(r.search(["copy"], 100)[0]) <= len(corpus)


def test_threshold_removes_passages_below_it(corpus, tmp_path):
    query = ["copy a file or a list"]
    full = make_retriever("bm25", corpus, index_root=tmp_path).search(query, 5)[0]
    assert len(full) >= 3
    cut = full[1].score
    kept = make_retriever("bm25", corpus, index_root=tmp_path, threshold=cut).search(query, 5)[0]
    assert kept and all(h.score >= cut for h in kept)
    assert [h.passage_id for h in kept] == [h.passage_id for h in full if h.score >= cut]
    assert len(kept) < len(full)
    assert make_retriever("bm25", corpus, index_root=tmp_path, threshold=full[0].score + 1).search(query, 5) == [[]]


def test_cached_index_is_reused_and_rebuilt_when_the_corpus_changes(corpus, tmp_path):
    first = make_retriever("bm25", corpus, index_root=tmp_path)
    assert first.built
    again = make_retriever("bm25", corpus, index_root=tmp_path)
    assert not again.built  # loaded from disk
    assert again.search(["json string"], 2) == first.search(["json string"], 2)
    path = index_dir(first.config(), tmp_path)
    assert json.loads((path / MANIFEST).read_text())["corpus_sha256"] == corpus.checksum
    assert not list(path.glob("*.pkl")) and not list(path.glob("*.pickle"))

    changed = Corpus.from_records(PASSAGES[:-1] + [("json.html#dumps", "zebras gallop across the savanna")])
    assert changed.checksum != corpus.checksum
    rebuilt = make_retriever("bm25", changed, index_root=tmp_path)
    assert rebuilt.built
    assert json.loads((path / MANIFEST).read_text())["corpus_sha256"] == changed.checksum
    assert rebuilt.search(["zebras"], 1)[0][0].passage_id == "json.html#dumps"
    assert first.search(["zebras"], 1) == [[]]


def test_corpus_validation():
    with pytest.raises(ConsistbenchError, match="duplicate"):
        Corpus.from_records([("a", "x"), ("a", "y")])
    with pytest.raises(ConsistbenchError, match="empty"):
        Corpus.from_records([])
    c = Corpus.from_records([("a", "x"), ("b", "y")])
    assert c.checksum != Corpus.from_records([("b", "y"), ("a", "x")]).checksum  # order is part of the version
    with pytest.raises(ConsistbenchError):
        make_retriever("nope", c)


@pytest.fixture(scope="module")
def dense_pair(tmp_path_factory):
    corpus = Corpus.from_records(PASSAGES, name="tiny")
    root = tmp_path_factory.mktemp("dense-index")
    return make_retriever("dense", corpus, index_root=root), root


def test_dense_search_cache_and_threshold(dense_pair):
    import numpy as np

    r, root = dense_pair
    assert np.allclose(np.linalg.norm(r.embeddings, axis=1), 1.0, atol=1e-4)
    hits = r.search(["How can I make a duplicate of a list?", "limit how long a network call blocks"], 3)
    assert hits[0][0].passage_id == "copy.html#shallow"
    assert hits[1][0].passage_id == "socket.html#timeout"
    same = r.search(["serialise to JSON", "serialise to JSON"], 4)
    assert same[0] == same[1] and jaccard(*[[h.passage_id for h in hs] for hs in same]) == 1.0
    assert all(-1.0 - 1e-5 <= h.score <= 1.0 + 1e-5 for hs in hits for h in hs)
    again = make_retriever("dense", r.corpus, index_root=root)
    assert not again.built
    assert [h.passage_id for h in again.search(["serialise to JSON"], 4)[0]] == [h.passage_id for h in same[0]]
    cut = (same[0][1].score + same[0][2].score) / 2  # between the 2nd and 3rd (batching moves scores ~1e-7)
    kept = make_retriever("dense", r.corpus, index_root=root, threshold=cut).search(["serialise to JSON"], 4)[0]
    assert len(kept) == 2 and all(h.score >= cut for h in kept)


def test_hybrid_fuses_both(dense_pair, tmp_path):
    r, root = dense_pair
    h = make_retriever("hybrid", r.corpus, index_root=root)
    res = h.search(["copy.deepcopy nested objects"], 3)[0]
    assert res[0].passage_id == "copy.html#deep"
    assert all(0 < x.score <= 2 / (RRF_K + 1) + 1e-12 for x in res)
    assert not math.isnan(res[0].score)
