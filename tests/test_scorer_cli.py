"""`consistbench score`: the table on the terminal and the results JSON on disk."""

import json

from consistbench.benchmark.cli import main


def test_score_prints_table_and_writes_json(responses_file, tmp_path, capsys):
    out = tmp_path / "result.json"
    assert main(["score", str(responses_file), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for label in ("overall", "original", "how_to", "plural_article", "paraphrase", "rougeL", "bleu", "em", "rs", "bs"):
        assert label in printed
    result = json.loads(out.read_text())
    metrics = result["metrics"]
    for name in ("rougeL", "bleu", "em", "rs", "bs", "em_how_to", "rs_paraphrase", "bs_plural_article", "rougeL_original"):
        assert 0.0 <= metrics[name] <= 1.0, name
    assert metrics["em"] == 0.4
    assert result["settings"]["rs_threshold"] == 0.8
    assert result["settings"]["bertscore"]["num_layers"] == 6
    assert result["counts"] == {"rows": 8, "groups": 3, "pairs": 5,
                                "rows_per_type": {"how_to": 2, "original": 3, "paraphrase": 2, "plural_article": 1},
                                "pairs_per_type": {"how_to": 2, "paraphrase": 2, "plural_article": 1}}
    assert len(result["data_version"]) == 64


def test_score_threshold_option_is_recorded(responses_file, tmp_path):
    out = tmp_path / "r.json"
    assert main(["score", str(responses_file), "--json", str(out), "--rs-threshold", "0.5", "--no-bs"]) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["rs_threshold"] == 0.5
    assert result["settings"]["bertscore"] is None and "bs" not in result["metrics"]


def test_shipped_example_responses_score(tmp_path, capsys):
    """The README's `consistbench score` example: real SmolLM2 answers on consistency_mini."""
    import json
    from pathlib import Path

    from consistbench.benchmark import cli

    example = Path(__file__).resolve().parents[1] / "tasks/consistency/examples/responses_smollm2_mini.jsonl"
    out = tmp_path / "r.json"
    assert cli.main(["score", str(example), "--json", str(out)]) == 0
    assert "paraphrase" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["counts"]["groups"] == 37 and res["counts"]["rows"] == 116
    m = res["metrics"]
    assert 0.0 < m["em"] <= m["rs"] <= 1.0 and 0.0 < m["rougeL"] < 1.0 and 0.0 < m["bs"] <= 1.0
