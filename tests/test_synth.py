"""`consistbench ref synth`: filtered, deduplicated variants of train questions, never on dev/test passages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.schema import load_data
from consistbench.reference_method.synth import SYNTH_COLUMNS, synthesize, synthesize_file

QUESTIONS = {
    "g0": ("How do I copy a list?", "Use list.copy().", "doc.html#copy"),
    "g1": ("How do I sort a dictionary by value?", "Use sorted() with a key.", "doc.html#sort"),
    "g2": ("How do I read a file line by line?", "Iterate over the file.", "doc.html#read"),
    "g3": ("How do I remove a directory tree?", "Use shutil.rmtree().", "doc.html#rmtree"),
}


class FakeParaphraser:
    """A paraphrase backend with fixed answers (the interface of benchmark.variants.paraphrase)."""

    name = "fake"
    replies = {
        "How do I copy a list?": ["What is the way to duplicate a list?", "How to copy a list"],
        "How do I sort a dictionary by value?": ["In what way can a dict be ordered by its values?"],
        "How do I read a file line by line?": ["How can I go through a file one line at a time?"],
        "How do I remove a directory tree?": ["What deletes a whole folder hierarchy?"],
    }

    def __init__(self):
        self.calls = []

    def describe(self):
        return {"name": self.name, "version": 1}

    def paraphrase(self, questions, n=1, seed=0):
        self.calls.append((list(questions), n, seed))
        return [list(self.replies.get(q, [])) for q in questions]


def data_row(gid: str, split: str = "train", passage: str | None = None, question: str | None = None) -> dict:
    q, a, p = QUESTIONS.get(gid, (question, "An answer.", passage))
    return {"id": f"{gid}-orig", "group_id": gid, "split": split, "variant_type": "original",
            "question": question or q, "context": f"The passage {passage or p} says: {a}", "reference": a,
            "passage_id": passage or p, "source": "https://docs.python.org/3.11/doc.html", "origin": "written"}


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path):
    train = write(tmp_path / "train.jsonl", [data_row(g) for g in QUESTIONS])
    # the test split holds g3's passage: g3 must be refused
    test = write(tmp_path / "test.jsonl", [data_row("t0", "test", passage="doc.html#rmtree", question="What is rmtree?")])
    dev = write(tmp_path / "dev.jsonl", [data_row("d0", "dev", passage="doc.html#other", question="What is other?")])
    return train, dev, test


def test_synth_writes_filtered_variants_with_provenance(files, tmp_path):
    train, dev, test = files
    para = FakeParaphraser()
    out = tmp_path / "synth.jsonl"
    stats = synthesize_file(train, out, holdout=[dev, test], n=2, seed=5, paraphraser=para)
    rows = load_data(out)  # a valid data file in the benchmark schema
    assert stats.refused_holdout == 1 and stats.originals == 3
    assert not any(r.group_id == "g3" or r.passage_id == "doc.html#rmtree" for r in rows)
    assert para.calls and para.calls[0][2] == 5
    by_group = {}
    for r in rows:
        by_group.setdefault(r.group_id, []).append(r)
    assert set(by_group) == {"g0", "g1", "g2"}
    g0 = {(r.variant_type, r.question) for r in by_group["g0"]}
    assert ("original", "How do I copy a list?") in g0
    assert ("paraphrase", "What is the way to duplicate a list?") in g0
    assert any(t == "how_to" for t, _ in g0) and any(t == "plural_article" for t, _ in g0)
    for r in rows:
        assert set(SYNTH_COLUMNS) <= set(r.extra)
        assert r.split == "train" and r.reference == QUESTIONS[r.group_id][1]
        if r.variant_type == "original":
            assert r.extra["generator"] == "original" and r.extra["cosine"] == 1.0
        elif r.variant_type == "paraphrase":
            assert r.extra["generator"] == "fake" and json.loads(r.extra["settings"]) == {"name": "fake", "version": 1}
            assert r.extra["seed"] == 5 and 0.6 <= r.extra["cosine"] < 1.0
        else:
            assert r.extra["generator"] == f"rules:{r.variant_type}"
    assert stats.variants["paraphrase"] == sum(1 for r in rows if r.variant_type == "paraphrase")


def test_duplicates_across_types_and_groups_are_dropped(files, monkeypatch):
    from consistbench.benchmark.variants import generate

    train, dev, test = files
    rows = load_data(train)[:2]
    rows.append(rows[0].__class__(**{**{k: getattr(rows[0], k) for k in ("split", "variant_type", "context", "reference",
                                                                          "passage_id", "source")},
                                     "id": "g9-orig", "group_id": "g9", "question": "how do I copy a list"}))
    fake = [generate.Variant(0, "how_to", "How to copy a list", 0.9, {"type": "how_to", "seed": 0, "backend": "rules:how_to"}),
            generate.Variant(0, "paraphrase", "how to copy a list?", 0.9, {"type": "paraphrase", "seed": 0,
                                                                             "backend": {"name": "fake"}}),
            generate.Variant(0, "plural_article", "How do I copy a list?", 1.0,
                             {"type": "plural_article", "seed": 0, "backend": "rules:plural_article"}),
            generate.Variant(1, "how_to", "How to sort a dictionary by value", 0.9,
                             {"type": "how_to", "seed": 0, "backend": "rules:how_to"})]
    monkeypatch.setattr(generate, "generate_variants", lambda *a, **k: fake)
    out, stats = synthesize(rows, types=["how_to", "plural_article", "paraphrase"], paraphraser=FakeParaphraser())
    assert [(r["group_id"], r["variant_type"], r["question"]) for r in out] == [
        ("g0", "original", "How do I copy a list?"), ("g0", "how_to", "How to copy a list"),
        ("g1", "original", "How do I sort a dictionary by value?"),
        ("g1", "how_to", "How to sort a dictionary by value")]
    # g0's paraphrase and plural variant repeat queries of the group; g9 repeats g0's question on its passage
    assert stats.duplicates == 3 and stats.variants == {"how_to": 2, "plural_article": 0, "paraphrase": 0}


def test_synth_is_deterministic_and_loads_with_datasets(files, tmp_path):
    import datasets

    train, dev, test = files
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    synthesize_file(train, a, holdout=[dev, test], types=["how_to", "plural_article"], seed=1)
    synthesize_file(train, b, holdout=[dev, test], types=["how_to", "plural_article"], seed=1)
    assert a.read_bytes() == b.read_bytes()
    ds = datasets.load_dataset("json", data_files=str(a), split="train")
    assert len(ds) == len(a.read_text().splitlines())
    for col in ("question", "variant_type", "group_id", "generator", "settings", "seed", "cosine"):
        assert col in ds.column_names


def test_rows_from_other_splits_and_missing_holdouts_are_errors(files, tmp_path):
    train, dev, test = files
    with pytest.raises(ConsistbenchError, match="train split only"):
        synthesize(load_data(test), types=["how_to"])
    with pytest.raises(ConsistbenchError, match="held-out file not found"):
        synthesize_file(train, tmp_path / "o.jsonl", holdout=[tmp_path / "missing.jsonl"], types=["how_to"])
    with pytest.raises(ConsistbenchError, match="overwrite an input"):
        synthesize_file(train, train, holdout=[dev, test], types=["how_to"])
    with pytest.raises(ConsistbenchError, match="paraphraser"):
        synthesize_file(train, tmp_path / "o.jsonl", holdout=[dev, test], types=["paraphrase"])
    assert not (tmp_path / "o.jsonl").exists()


def test_limit_takes_a_seeded_sample(files):
    train, dev, test = files
    rows = load_data(train)
    picks = {tuple(sorted({r["group_id"] for r in synthesize(rows, types=["how_to"], limit=2, seed=s)[0]}))
             for s in range(6)}
    assert all(len(p) == 2 for p in picks) and len(picks) > 1


def test_cli_synth(files, tmp_path, capsys):
    train, dev, test = files
    out = tmp_path / "synth.jsonl"
    rc = main(["ref", "synth", "--train", str(train), "--holdout", str(dev), "--holdout", str(test), "-o", str(out),
               "--types", "how_to,plural_article"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "4 originals" not in printed and "3 originals" in printed and "1 refused" in printed
    assert {r.variant_type for r in load_data(out)} <= {"original", "how_to", "plural_article"}


def test_cli_synth_refuses_when_every_passage_is_held_out(files, tmp_path, capsys):
    train, dev, test = files
    out = tmp_path / "synth.jsonl"
    rc = main(["ref", "synth", "--train", str(train), "--holdout", str(train), "-o", str(out), "--types", "how_to"])
    assert rc == 2
    assert "no train questions left" in capsys.readouterr().err
    assert not out.exists()
