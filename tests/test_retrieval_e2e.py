"""End-to-end task data (precomputed retrieval + checksum checks), decomposition and the CLI."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.retrieval import Corpus
from consistbench.benchmark.metrics import ScoreSettings
from consistbench.benchmark.retrieval.decompose import decompose, read_samples
from consistbench.benchmark.retrieval.e2e import RETRIEVAL_DIR, SEPARATOR, RetrievalVersionError, build
from tests.conftest import make_row, write_jsonl
from tests.test_retrieval import PASSAGES

TEXT = dict(PASSAGES)


def _rows():
    return [make_row("g1", "original", "How do I copy a list?", passage="copy.html#shallow"),
            make_row("g1", "paraphrase", "What makes a duplicate of a list?", passage="copy.html#shallow"),
            make_row("g2", "original", "How do I serialise an object to JSON?", passage="json.html#dumps"),
            make_row("g2", "how_to", "How to serialise an object to JSON", passage="json.html#dumps"),
            make_row("g3", "original", "How do I set a socket timeout?", passage="socket.html#timeout"),
            make_row("g3", "plural_article", "How do I set socket timeouts?", passage="socket.html#timeout")]


@pytest.fixture
def built(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "test.jsonl", _rows())
    (data / "mini_groups.txt").write_text("g1\ng3\n")
    corpus = Corpus.from_records(PASSAGES, name="tiny")
    manifest = build(["bm25"], k=3, out_dir=data / "retrieval", data_path=data / "test.jsonl", corpus=corpus,
                     index_root=tmp_path / "index")
    return data, manifest


def _load(data, **kw):
    from consistbench.tasks.consistency import utils

    return utils.load(data_dir=str(data), **kw)["test"]


def test_e2e_data_loads_with_retrieved_contexts(built):
    data, manifest = built
    assert manifest["k"] == 3 and manifest["rows"] == 6 and set(manifest["retrievers"]) == {"bm25"}
    ranked = {}
    with gzip.open(data / "retrieval" / "bm25.jsonl.gz", "rt") as fh:
        for line in fh:
            rec = json.loads(line)
            ranked[rec["id"]] = rec["passage_ids"]
    ds = _load(data, retriever="bm25", retrieval_k=2)
    assert len(ds) == 6
    for doc in ds:
        assert doc["retrieved_ids"] == ranked[doc["id"]][:2]
        assert doc["context"] == SEPARATOR.join(TEXT[p] for p in doc["retrieved_ids"])
        assert doc["gold_retrieved"] == (doc["passage_id"] in doc["retrieved_ids"])
    assert any(doc["gold_retrieved"] for doc in ds)
    gold = _load(data)  # without a retriever the fixed gold context stays
    fixed = {r["id"]: r["context"] for r in _rows()}
    assert all(d["context"] == fixed[d["id"]] for d in gold) and "retrieved_ids" not in gold.column_names
    mini = _load(data, subset="mini", retriever="bm25", retrieval_k=3)
    assert {d["group_id"] for d in mini} == {"g1", "g3"} and all(len(d["retrieved_ids"]) <= 3 for d in mini)


def test_checksum_check_fires_when_the_data_changes(built, tmp_path):
    data, _ = built
    other = tmp_path / "other"
    shutil.copytree(data, other)
    rows = _rows()
    rows[1]["question"] = "A different paraphrase of the question?"
    write_jsonl(other / "test.jsonl", rows)
    with pytest.raises(RetrievalVersionError, match="retrieval build"):
        _load(other, retriever="bm25")
    with pytest.raises(RetrievalVersionError, match="no precomputed retrieval for 'dense'"):
        _load(data, retriever="dense")
    with pytest.raises(RetrievalVersionError, match="top 3"):
        _load(data, retriever="bm25", retrieval_k=4)


def test_checksum_check_fires_when_a_file_changes(built, tmp_path):
    data, _ = built
    other = tmp_path / "tampered"
    shutil.copytree(data, other)
    path = other / "retrieval" / "bm25.jsonl.gz"
    recs = [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]
    recs[0]["passage_ids"] = list(reversed(recs[0]["passage_ids"]))
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in recs).encode()))
    with pytest.raises(RetrievalVersionError, match="sha256"):
        _load(other, retriever="bm25")


def test_build_is_reproducible(built, tmp_path):
    data, manifest = built
    again = build(["bm25"], k=3, out_dir=tmp_path / "again", data_path=data / "test.jsonl",
                  corpus=Corpus.from_records(PASSAGES, name="tiny"), index_root=tmp_path / "index")
    assert again["retrievers"]["bm25"]["sha256"] == manifest["retrievers"]["bm25"]["sha256"]
    assert (tmp_path / "again" / "bm25.jsonl.gz").read_bytes() == (data / "retrieval" / "bm25.jsonl.gz").read_bytes()


def test_shipped_e2e_files_match_the_shipped_test_data():
    """The committed precomputed retrieval belongs to the committed test split (else rebuild it)."""
    import yaml

    from consistbench.tasks.consistency import utils

    manifest = json.loads((RETRIEVAL_DIR / "manifest.json").read_text())
    template = (RETRIEVAL_DIR.parents[1] / "_default_template_yaml").read_text()
    sha = next(line.split(":", 1)[1].strip() for line in template.splitlines() if "data_sha256:" in line
               and not line.strip().startswith("#"))
    assert manifest["data_sha256"] == sha
    mini = utils.load(data_sha256=sha, subset="mini")["test"]
    for name in ("bm25", "dense", "hybrid"):
        cfg = yaml.safe_load((RETRIEVAL_DIR.parents[1] / f"consistency_e2e_{name}_mini.yaml").read_text())
        ds = utils.load(data_sha256=sha, **cfg["dataset_kwargs"])["test"]
        assert len(ds) == len(mini) and all(d["context"].strip() and d["retrieved_ids"] for d in ds)
        assert cfg["dataset_kwargs"]["retrieval_k"] <= manifest["k"]


def test_lm_eval_sees_the_e2e_tasks():
    from consistbench.benchmark.evaluate import task_manager

    names = set(task_manager().all_tasks)
    for r in ("bm25", "dense", "hybrid"):
        assert {f"consistency_e2e_{r}", f"consistency_e2e_{r}_mini"} <= names


# --- decomposition ---------------------------------------------------------------------------

def _sample(doc_id, gid, vtype, response, retrieved=None):
    doc = {"id": doc_id, "group_id": gid, "variant_type": vtype, "reference": "ref"}
    if retrieved is not None:
        doc["retrieved_ids"] = retrieved
    return {"doc": doc, "filtered_resps": [response], "resps": [[response]]}


def _decomp_files(tmp_path):
    far = "a completely unrelated sentence about zebras"
    gold = [_sample("g1-orig", "g1", "original", "use slicing"), _sample("g1-para", "g1", "paraphrase", "use slicing"),
            _sample("g2-orig", "g2", "original", "json dumps"), _sample("g2-howto", "g2", "how_to", far),
            _sample("g3-orig", "g3", "original", "settimeout"), _sample("g3-plural", "g3", "plural_article", "settimeout"),
            _sample("g4-orig", "g4", "original", "same"), _sample("g4-para", "g4", "paraphrase", "same")]
    retr = [_sample("g1-orig", "g1", "original", "use slicing", ["a", "b"]),
            _sample("g1-para", "g1", "paraphrase", far, ["c", "b"]),          # retrieval only
            _sample("g2-orig", "g2", "original", "json dumps", ["a"]),
            _sample("g2-howto", "g2", "how_to", far, ["b"]),                  # both
            _sample("g3-orig", "g3", "original", "settimeout", ["x", "y"]),
            _sample("g3-plural", "g3", "plural_article", far, ["x", "y"]),    # generator only
            _sample("g4-orig", "g4", "original", "same", ["x"]),
            _sample("g4-para", "g4", "paraphrase", "same", ["z"])]            # consistent
    g, r = tmp_path / "gold.jsonl", tmp_path / "retr.jsonl"
    write_jsonl(g, gold)
    write_jsonl(r, retr)
    return g, r


def test_decomposition_cells(tmp_path):
    g, r = _decomp_files(tmp_path)
    report = decompose(read_samples(g), read_samples(r), ScoreSettings(compute_bs=False))
    cells = {p["variant_id"]: p["cell"] for p in report["pairs"]}
    assert cells == {"g1-para": "retrieval_only", "g2-howto": "both", "g3-plural": "generator_only", "g4-para": None}
    overall = report["summary"]["overall"]
    assert overall["pairs"] == 4 and overall["inconsistent"] == 3
    assert overall["share_differed"] == pytest.approx(2 / 3)
    assert overall["context_differed"] == pytest.approx(3 / 4)
    assert overall["rs_gold"] == pytest.approx(3 / 4) and overall["rs_retrieved"] == pytest.approx(1 / 4)
    assert report["summary"]["paraphrase"]["pairs"] == 2 and report["summary"]["paraphrase"]["inconsistent"] == 1
    with pytest.raises(Exception, match="retrieved_ids"):
        decompose(read_samples(g), read_samples(g), ScoreSettings(compute_bs=False))


def test_cli_decompose_from_samples(tmp_path, capsys):
    g, r = _decomp_files(tmp_path)
    out = tmp_path / "out"
    rc = main(["retrieval", "decompose", "--gold-samples", str(g), "--retrieved-samples", str(r), "--no-bs",
               "--retriever", "bm25", "-o", str(out)])
    assert rc == 0
    report = json.loads((out / "decompose_bm25_mini.json").read_text())
    assert report["summary"]["overall"]["inconsistent"] == 3
    assert (out / "decompose_bm25_mini.png").read_bytes()[:4] == b"\x89PNG"
    assert "| overall |" in (out / "decompose_bm25_mini.md").read_text()


# --- CLI -------------------------------------------------------------------------------------

def test_cli_eval_on_a_tiny_corpus(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONSISTBENCH_CACHE", str(tmp_path / "cache"))
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"passage_id": p, "text": t} for p, t in PASSAGES])
    data = write_jsonl(tmp_path / "test.jsonl", _rows())
    out = tmp_path / "res.json"
    rc = main(["retrieval", "eval", "--retriever", "bm25", "--k", "2", "--corpus", str(corpus), "--data", str(data),
               "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["k"] == 2 and res["summary"]["overall"]["pairs"] == 3 and len(res["pairs"]) == 3
    assert res["retriever"]["corpus_passages"] == len(PASSAGES)
    assert "retrieval consistency" in capsys.readouterr().out
    assert (tmp_path / "cache" / "retrieval").is_dir()  # the index went to the cache dir


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    bad = write_jsonl(tmp_path / "corpus.jsonl", [{"passage_id": "a", "text": ""}])
    data = write_jsonl(tmp_path / "test.jsonl", _rows())
    assert main(["retrieval", "eval", "--corpus", str(bad), "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("consistbench: error:") and "text" in err[0]
    good = write_jsonl(tmp_path / "c2.jsonl", [{"passage_id": p, "text": t} for p, t in PASSAGES])
    assert main(["retrieval", "eval", "--corpus", str(good), "--data", str(data), "--k", "0",
                 "--json", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_decompose_takes_the_gold_samples_not_the_retrieved_ones():
    # one decompose run writes `consistency` and `consistency_e2e_bm25` samples side by side; the
    # gold task's name is a prefix of the retrieval task's, and the later-sorting file used to win
    from pathlib import Path

    from consistbench.benchmark.errors import ConsistbenchError
    from consistbench.benchmark.retrieval.cli import _samples_of

    stamp = "2026-12-06T05-26-25.326667"
    files = [Path(f"/out/m/samples_{t}_{stamp}.jsonl") for t in ("consistency", "consistency_e2e_bm25")]
    files.append(Path(f"/out/m/results_{stamp}.json"))
    assert _samples_of(files, "consistency").name == f"samples_consistency_{stamp}.jsonl"
    assert _samples_of(files, "consistency_e2e_bm25").name == f"samples_consistency_e2e_bm25_{stamp}.jsonl"
    with pytest.raises(ConsistbenchError, match="no samples for task 'consistency_mini'"):
        _samples_of(files, "consistency_mini")
