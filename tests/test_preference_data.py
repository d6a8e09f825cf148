"""``consistbench ref prefs``: preference pairs formed by score, a loadable file from a tiny model,
held-out passages and other splits refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from tests.preference_fixtures import QA

pytest_plugins = ["tests.preference_fixtures"]  # the tiny Llama's tokenizer, a second reference model


# ------------------------------------------------------------------------------------------------
# preference data

def _schema_rows(split: str = "train") -> list:
    from consistbench.benchmark.schema import parse_row

    out = []
    for i, (q, c, good, _bad, _src) in enumerate(QA[:2]):
        base = {"group_id": f"g{i}", "split": split, "context": c, "reference": good, "passage_id": f"doc.html#p{i}",
                "source": "https://docs.python.org/3.11/doc.html"}
        out.append(dict(base, id=f"g{i}-orig", variant_type="original", question=q))
        out.append(dict(base, id=f"g{i}-howto", variant_type="how_to", question=q.replace("How do I", "How to")[:-1]))
    return [parse_row(r, f"row {j}") for j, r in enumerate(out)]


def test_preference_pairs_are_formed_by_score(monkeypatch, tmp_path):
    from consistbench.reference_method.preference import data

    rows = _schema_rows()
    # scripted answers: [greedy, samples...] per query, in row order (g0 orig, g0 howto, g1 orig, g1 howto)
    scripted = {
        "T": [["Use list.copy().", "Bananas.", "Use list.copy() now."],
              ["Use list.copy() please.", "Something unrelated entirely.", "Use list.copy()."],
              ["Use sorted with a key.", "No idea.", "Use sorted."],
              ["Use sorted with a key.", "Use sorted with a key.", "Use sorted with a key."]],
        "S": [["Call list.copy().", "x", "y"], ["Use list.copy().", "z", "w"],
              ["Use sorted with a key.", "q", "r"], ["Use sorted with a key function.", "a", "b"]],
    }
    monkeypatch.setattr(data, "generate_answers", lambda path, queries, cfg, **kw: scripted[Path(path).name])
    cfg = data.PrefConfig(n_samples=2)
    out, stats = data.build_preferences(rows, tmp_path / "T", [tmp_path / "S"], cfg, log=lambda s: None)
    by_id = {r["id"]: r for r in out}
    # g1-howto: every target answer is the same: no margin, dropped
    assert stats.dropped_no_margin == 1 and "g1-howto" not in by_id and stats.pairs == 3
    r = by_id["g0-howto"]
    assert r["chosen"] == "Use list.copy()." and r["rejected"] == "Something unrelated entirely."
    assert r["target_anchor"] == "Use list.copy()."  # the target's greedy answer to the original
    assert r["source_chosen"] == "Use list.copy()." and r["source_anchor"] == "Call list.copy()."
    assert r["chosen_score"] > r["rejected_score"]
    from consistbench.benchmark.metrics import rouge_l

    expected = 0.5 * rouge_l(r["chosen"], r["reference"]) + 0.5 * rouge_l(r["chosen"], r["target_anchor"])
    assert r["chosen_score"] == pytest.approx(expected)
    assert json.loads(r["sampling"])["n_samples"] == 2 and "ROUGE-L" in r["score_definition"]
    # accuracy only: the consistency term is ignored
    cfg0 = data.PrefConfig(n_samples=2, consistency_weight=0.0)
    out0, _ = data.build_preferences(rows, tmp_path / "T", [tmp_path / "S"], cfg0, log=lambda s: None)
    r0 = {x["id"]: x for x in out0}["g0-howto"]
    assert r0["chosen_score"] == pytest.approx(rouge_l(r0["chosen"], r0["reference"]))


@pytest.mark.slow
def test_prefs_cli_on_tiny_model_writes_loadable_file(tiny_llama_dir, other_ref_dir, tmp_path, monkeypatch):
    from datasets import load_dataset

    from consistbench.reference_method.preference import data

    rows = [r.to_json() for r in _schema_rows()]
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    real = data.generate_answers
    calls = []

    def spy(path, queries, cfg, **kw):
        answers = real(path, queries, cfg, **kw)
        calls.append(answers)
        # a random model's answers all score about 0: make the last sample the passage itself,
        # which overlaps the reference, so every query has a clear best answer
        return [a[:-1] + [queries[i][0]] for i, a in enumerate(answers)]

    monkeypatch.setattr(data, "generate_answers", spy)
    out = tmp_path / "prefs.jsonl"
    rc = main(["ref", "prefs", "-o", str(out), "--data", str(src), "--model", str(tiny_llama_dir),
               "--source", str(other_ref_dir), "--n-samples", "2", "--max-new-tokens", "6", "--batch-size", "3"])
    assert rc == 0
    assert len(calls) == 2 and all(len(a) == 3 for a in calls[0]) and len(calls[0]) == len(rows)
    ds = load_dataset("json", data_files=str(out), split="train")
    assert {"prompt", "chosen", "rejected", "source_chosen", "target_model", "seed"} <= set(ds.column_names)
    assert all(c > r for c, r in zip(ds["chosen_score"], ds["rejected_score"]))
    variants = [r for r in ds if r["variant_type"] != "original"]
    assert variants and all(r["chosen"] == r["context"] for r in variants)
    meta = json.loads(out.with_name(out.name + ".meta.json").read_text())
    assert meta["config"]["n_samples"] == 2 and meta["stats"]["pairs"] == len(ds)


def test_prefs_refuses_heldout_and_other_splits(tiny_llama_dir, tmp_path):
    from consistbench.reference_method.preference.data import select_rows

    rows = _schema_rows()
    with pytest.raises(ConsistbenchError, match="train split only"):
        select_rows(_schema_rows("test"), limit=None, seed=0, holdout=(set(), set()))
    kept, refused = select_rows(rows, limit=None, seed=0, holdout=({"doc.html#p0"}, set()))
    assert refused == 2 and {r.group_id for r in kept} == {"g1"}
    kept, _ = select_rows(rows, limit=1, seed=0, holdout=(set(), set()))
    assert len({r.group_id for r in kept}) == 1 and len(kept) == 2
