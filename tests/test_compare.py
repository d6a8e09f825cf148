"""`consistbench compare`: paired bootstrap of two models over shared groups, one data version."""

from __future__ import annotations

import json

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.compare import load_side
from consistbench.benchmark.schema import data_checksum, parse_row
from tests.conftest import make_row, write_jsonl

TYPES = ("how_to", "plural_article", "paraphrase")


def data_rows(n_groups: int = 40) -> list[dict]:
    rows = []
    for g in range(n_groups):
        gid = f"grp{g:03d}"
        rows.append(make_row(gid, "original", f"How do I do thing {g}?", reference=f"Do thing {g} with tool {g % 7}."))
        for t in TYPES[: 1 + g % 3]:
            rows.append(make_row(gid, t, f"{t} form of question {g}", reference=f"Do thing {g} with tool {g % 7}."))
    return rows


def with_responses(rows: list[dict], answer) -> list[dict]:
    return [dict(r, response=answer(i, r)) for i, r in enumerate(rows)]


def consistent(i, r):
    return f"Use tool {r['group_id'][-1]} for it."


def inconsistent(i, r):
    return f"reply {' '.join(str(i * k + 1000) for k in range(1, 6))}"  # shares one word with any other


def run_compare(a, b, tmp_path, *extra) -> tuple[int, dict | None]:
    out = tmp_path / "cmp.json"
    if out.exists():
        out.unlink()
    rc = main(["compare", str(a), str(b), "--no-bs", "--json", str(out), *extra])
    return rc, (json.loads(out.read_text()) if out.exists() else None)


def test_identical_inputs_give_zero_width_not_significant(tmp_path, capsys):
    rows = with_responses(data_rows(), consistent)
    a = write_jsonl(tmp_path / "a.jsonl", rows)
    b = write_jsonl(tmp_path / "b.jsonl", rows)
    rc, result = run_compare(a, b, tmp_path)
    assert rc == 0
    assert result["shared_groups"] == 40 and result["only_a_rows"] == 0
    assert result["identical_responses"] == result["shared_rows"] == len(rows)
    for name, m in result["metrics"].items():
        assert m["difference"] == m["low"] == m["high"] == 0.0, name
        assert m["significant"] is False
    printed = capsys.readouterr().out
    assert "em_paraphrase" in printed and " yes " not in printed


def test_consistent_model_vs_inconsistent_model_is_significant(tmp_path, capsys):
    rows = data_rows()
    a = write_jsonl(tmp_path / "a.jsonl", with_responses(rows, consistent))
    b = write_jsonl(tmp_path / "b.jsonl", with_responses(rows, inconsistent))
    rc, result = run_compare(a, b, tmp_path)
    assert rc == 0
    for name in ("em", "rs", "em_how_to", "em_plural_article", "em_paraphrase"):
        m = result["metrics"][name]
        assert m["a"] == 1.0 and m["b"] == 0.0 and m["difference"] == 1.0, name
        assert m["low"] > 0 and m["significant"] and m["p_value"] < 0.01, name
    printed = capsys.readouterr().out
    assert "yes" in printed
    assert result["identical_responses"] == 0 and f"identical responses: 0 of {len(rows)}" in printed
    assert result["settings"]["n_resamples"] == 1000 and result["settings"]["unit"] == "group_id"


def test_different_data_versions_are_refused(tmp_path, capsys):
    rows = data_rows()
    a = write_jsonl(tmp_path / "a.jsonl", with_responses(rows, consistent))
    changed = [dict(r) for r in rows]
    changed[5]["question"] = "A question that was edited later?"
    b = write_jsonl(tmp_path / "b.jsonl", with_responses(changed, consistent))
    rc, result = run_compare(a, b, tmp_path)
    assert rc == 2 and result is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different data versions" in err


def test_only_shared_groups_are_compared(tmp_path):
    rows = data_rows()
    a = write_jsonl(tmp_path / "a.jsonl", with_responses(rows, consistent))
    half = [r for r in rows if int(r["group_id"][3:]) < 20]
    b = write_jsonl(tmp_path / "b.jsonl", with_responses(half, consistent))
    rc, result = run_compare(a, b, tmp_path)
    # half of a responses file is another data version (its checksum differs): refused ...
    assert rc == 2
    # ... but a subset of the same lm-eval task data is compared on the shared groups
    side_a, side_b = load_side(a), load_side(b)
    side_b.data_version = side_a.data_version
    from consistbench.benchmark.compare import compare

    res = compare(side_a, side_b)
    assert res["shared_groups"] == 20 and res["only_a_rows"] == len(rows) - len(half) and res["only_b_rows"] == 0


def lm_eval_dir(tmp_path, name: str, rows: list[dict], version: str, task: str = "consistency",
                date: str = "2026-01-02T03-04-05.678901") -> str:
    """A results directory the way lm-eval writes it with --log_samples."""
    d = tmp_path / name / "model__x"
    d.mkdir(parents=True, exist_ok=True)
    results = {"results": {task: {"em,none": 0.0, "em_stderr,none": "N/A"}},
               "configs": {task: {"metadata": {"data_sha256": version}}}, "model_name": name}
    (d / f"results_{date}.json").write_text(json.dumps(results))
    samples = []
    for i, r in enumerate(rows):
        doc = {k: v for k, v in r.items() if k != "response"}
        samples.append({"doc_id": i, "doc": doc, "target": r["reference"], "resps": [[r["response"]]],
                        "filtered_resps": [r["response"]], "filter": "none"})
    write_jsonl(d / f"samples_{task}_{date}.jsonl", samples)
    return str(tmp_path / name)


def test_lm_eval_results_dirs_and_samples_files(tmp_path, capsys):
    rows = data_rows(30)
    version = data_checksum([parse_row(r, "x") for r in rows])
    a = lm_eval_dir(tmp_path, "model_a", with_responses(rows, consistent), version)
    b = lm_eval_dir(tmp_path, "model_b", with_responses(rows, inconsistent), version)
    rc, result = run_compare(a, b, tmp_path)
    assert rc == 0
    assert result["a"]["label"] == "model_a" and result["a"]["task"] == "consistency"
    assert result["metrics"]["em"]["significant"] and result["data_version"] == version
    # a samples file alone, and a scorer responses file, on the same data: same comparison
    samples_b = next((tmp_path / "model_b" / "model__x").glob("samples_*.jsonl"))
    responses_b = write_jsonl(tmp_path / "b.jsonl", with_responses(rows, inconsistent))
    for other in (samples_b, responses_b):
        rc2, res2 = run_compare(a, other, tmp_path)
        assert rc2 == 0 and res2["metrics"]["em"] == result["metrics"]["em"]
    # a results directory recorded on another data version is refused
    c = lm_eval_dir(tmp_path, "model_c", with_responses(rows, consistent), "0" * 64)
    rc3, _ = run_compare(a, c, tmp_path)
    assert rc3 == 2 and "different data versions" in capsys.readouterr().err


def test_gzipped_samples_as_shipped_in_leaderboard_submissions(tmp_path):
    """A leaderboard submission ships lm-eval's samples gzipped: compare reads them as they are."""
    import gzip
    import shutil

    rows = data_rows(20)
    version = data_checksum([parse_row(r, "x") for r in rows])
    a = lm_eval_dir(tmp_path, "model_a", with_responses(rows, consistent), version)
    b = lm_eval_dir(tmp_path, "model_b", with_responses(rows, inconsistent), version)
    _, plain = run_compare(a, b, tmp_path)
    for samples in (tmp_path / "model_b" / "model__x").glob("samples_*.jsonl"):
        with samples.open("rb") as src, gzip.open(samples.with_name(samples.name + ".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
        samples.unlink()
    rc, zipped = run_compare(a, b, tmp_path)
    assert rc == 0 and zipped["metrics"]["em"] == plain["metrics"]["em"]
    assert zipped["b"]["task"] == "consistency" and zipped["data_version"] == version
    gz = next((tmp_path / "model_b" / "model__x").glob("samples_*.jsonl.gz"))
    rc2, direct = run_compare(a, gz, tmp_path)  # the .gz samples file alone: task and version from its name
    assert rc2 == 0 and direct["metrics"]["em"] == plain["metrics"]["em"] and direct["b"]["task"] == "consistency"


def test_results_without_samples_are_refused(tmp_path, capsys):
    rows = data_rows(5)
    a = lm_eval_dir(tmp_path, "model_a", with_responses(rows, consistent), "v")
    for f in (tmp_path / "model_a" / "model__x").glob("samples_*"):
        f.unlink()
    rc, _ = run_compare(a, a, tmp_path)
    assert rc == 2 and "--log_samples" in capsys.readouterr().err


def test_a_row_that_differs_between_sides_is_refused(tmp_path):
    from consistbench.benchmark.compare import compare
    from consistbench.benchmark.errors import ConsistbenchError

    rows = data_rows(10)
    a = load_side(write_jsonl(tmp_path / "a.jsonl", with_responses(rows, consistent)))
    changed = [dict(r) for r in rows]
    changed[0]["reference"] = "another gold answer"
    for r in changed:
        if r["group_id"] == changed[0]["group_id"]:
            r["reference"] = "another gold answer"
    b = load_side(write_jsonl(tmp_path / "b.jsonl", with_responses(changed, consistent)))
    b.data_version = a.data_version  # even when the recorded versions agree
    with pytest.raises(ConsistbenchError, match="differs between"):
        compare(a, b)


def test_task_option_picks_the_run_holding_that_task(tmp_path):
    rows = data_rows(12)
    version = data_checksum([parse_row(r, "x") for r in rows])
    a = lm_eval_dir(tmp_path, "a", with_responses(rows, consistent), version, task="consistency")
    lm_eval_dir(tmp_path, "a", with_responses(rows[:9], inconsistent), version, task="consistency_mini",
                date="2026-02-02T03-04-05.678901")  # a newer run of another task in the same folder
    assert load_side(a).task == "consistency_mini"
    side = load_side(a, task="consistency")
    assert side.task == "consistency" and len(side.rows) == len(rows)
