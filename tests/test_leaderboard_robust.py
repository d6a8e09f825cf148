"""Leaderboard: a submission with the robust families beside its track, their rescoring and
rejections, and their own column group on the site (only when a submission has them).

The submission comes from one ``run_eval`` of ``consistency_mini`` and ``consistency_robust_mini``
on a tiny random Llama, then ``consistbench leaderboard prepare``.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.leaderboard import render
from consistbench.leaderboard import rescore as R
from consistbench.leaderboard import tracks as T
from consistbench.leaderboard import validate as V

TRACK = "consistency_mini"
ROBUST = T.ROBUST_TASKS[TRACK]


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory, wide_llama_dir) -> Path:
    from consistbench.benchmark.evaluate import EvalOptions, run_eval

    out = tmp_path_factory.mktemp("lbr-eval")
    res = run_eval(EvalOptions(model_args=f"pretrained={wide_llama_dir},dtype=float32", output_path=str(out),
                               tasks=(TRACK, "consistency_robust_mini"), batch_size=64))  # the benchmark's own settings
    return res["files"][0].parent


@pytest.fixture(scope="module")
def submission(tmp_path_factory, eval_dir) -> Path:
    out = tmp_path_factory.mktemp("lbr-subs") / "tiny-robust"
    assert main(["leaderboard", "prepare", str(eval_dir), "-o", str(out), "--name", "tiny robust llama",
                 "--submitter", "consistbench tests", "--date", "2026-12-05"]) == 0
    return out


@pytest.fixture
def sub(tmp_path, submission) -> Path:
    dst = tmp_path / "sub"
    shutil.copytree(submission, dst)
    return dst


def _meta(sub: Path) -> dict:
    return json.loads((sub / "metadata.json").read_text())


def _results_path(sub: Path) -> Path:
    return sub / _meta(sub)["files"]["results"]


def _edit_results(sub: Path, edit) -> None:
    res = json.loads(_results_path(sub).read_text())
    edit(res)
    _results_path(sub).write_text(json.dumps(res))


def _samples_path(sub: Path, task: str) -> Path:
    return sub / _meta(sub)["files"]["robust_samples"][task]


def _read(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _write(path: Path, samples: list[dict]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))


def _rejects(sub: Path, *needles: str) -> None:
    with pytest.raises(ConsistbenchError) as info:
        V.validate_submission(sub)
    msg = str(info.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg


def test_prepare_and_validate_a_submission_with_the_robust_families(submission, eval_dir):
    meta = _meta(submission)
    assert set(meta["files"]["robust_samples"]) == set(ROBUST.values())
    v = V.validate_submission(submission)
    assert v.task == TRACK
    reported = json.loads(next(eval_dir.glob("results_*.json")).read_text())["results"]
    for family, task in ROBUST.items():
        for m in ("em", "rs", "bs"):
            key = T.metric_key(m, family)
            assert abs(v.metrics[key] - reported[task][f"{m},none"]) <= R.tolerance(key)
            assert v.reported[key] == reported[task][f"{m},none"]
    assert v.metrics["em"] == pytest.approx(reported[TRACK]["em,none"], abs=1e-9)  # the track's own, unchanged
    assert set(v.robust_responses) == set(ROBUST.values())


def test_an_inflated_robust_score_is_rejected_and_named(sub):
    task = ROBUST["typo"]
    _edit_results(sub, lambda r: r["results"][task].__setitem__("em,none", r["results"][task]["em,none"] + 0.25))
    _rejects(sub, f"robust task {task}:", "metric 'em' is reported as")


def test_a_template_prompt_without_its_preamble_is_rejected(sub):
    path = _samples_path(sub, ROBUST["template"])
    samples = _read(path)
    hit = next(s for s in samples if s["doc"].get("system"))
    prompt = hit["arguments"]["gen_args_0"]["arg_0"]
    hit["arguments"]["gen_args_0"]["arg_0"] = prompt.replace(hit["doc"]["system"].strip(), "You are SmolLM")
    _write(path, samples)
    _rejects(sub, "is not exactly the task's prompt", hit["doc"]["id"])


def test_robust_files_and_results_must_agree(sub):
    meta = _meta(sub)
    dropped = meta["files"]["robust_samples"].pop(ROBUST["surface"])
    (sub / "metadata.json").write_text(json.dumps(meta))
    _rejects(sub, "files.robust_samples names no samples file for 'consistency_surface_mini'")
    meta["files"]["robust_samples"][ROBUST["surface"]] = dropped
    (sub / "metadata.json").write_text(json.dumps(meta))
    _edit_results(sub, lambda r: r["results"].pop(ROBUST["surface"]))
    _rejects(sub, "names 'consistency_surface_mini', which the results JSON does not hold")


def test_robust_tasks_must_match_the_track_and_the_shipped_templates(sub):
    def to_full(r):
        for key in ("results", "configs", "versions", "n-shot", "n-samples"):
            r[key]["consistency_typo"] = r[key].pop(ROBUST["typo"])
    _edit_results(sub, to_full)
    _rejects(sub, "robust task 'consistency_typo' does not go with track 'consistency_mini'")


def test_a_run_with_a_users_template_set_is_refused(sub):
    task = ROBUST["template"]
    _edit_results(sub, lambda r: r["configs"][task]["metadata"].__setitem__("templates_file", "/home/me/t.yaml"))
    _rejects(sub, f"robust task {task}:", "user's template set")


def test_unknown_robust_task_in_metadata_breaks_the_schema(sub):
    meta = _meta(sub)
    meta["files"]["robust_samples"]["consistency_spelling"] = "x.jsonl.gz"
    (sub / "metadata.json").write_text(json.dumps(meta))
    _rejects(sub, "files.robust_samples", "is not a robust-family task")


@pytest.fixture(scope="module")
def site(tmp_path_factory, submission) -> Path:
    """Two entries on the quick track: one with the robust families, one without."""
    from consistbench.leaderboard.site import build_site

    root = tmp_path_factory.mktemp("lbr-submissions")
    shutil.copytree(submission, root / "a-robust")
    plain = root / "b-plain"
    shutil.copytree(submission, plain)
    meta = _meta(plain)
    for name in meta["files"].pop("robust_samples").values():
        (plain / name).unlink()
    (plain / "metadata.json").write_text(json.dumps(meta))
    _edit_results(plain, lambda r: [r[k].pop(t, None) for k in ("results", "configs", "versions", "n-shot",
                                                                "n-samples", "higher_is_better")
                                    for t in ROBUST.values()])
    out = tmp_path_factory.mktemp("lbr-site") / "site"
    build_site(root, out, task=TRACK)
    return out


def test_site_shows_the_families_as_their_own_column_groups(site, submission):
    index = (site / "index.html").read_text()
    for family in T.ROBUST_TASKS[TRACK]:
        assert f">{family} (robust)</th>" in index
        for m in ("em", "rs", "bs"):
            assert f'data-col="{m}_{family}"' in index
    doc = json.loads((site / "leaderboard.json").read_text())
    rows = {r["slug"]: r for r in doc["tracks"][TRACK]["rows"]}
    assert "em_typo" in rows["a-robust"]["metrics"] and "em_typo" not in rows["b-plain"]["metrics"]
    assert "bs_template" in rows["a-robust"]["ci"]  # the same group-bootstrap intervals
    lo, hi = rows["a-robust"]["ci"]["em_surface"]
    assert lo <= rows["a-robust"]["metrics"]["em_surface"] <= hi
    header = (site / "leaderboard.csv").read_text().splitlines()[0].split(",")
    assert {"em_typo", "rs_surface", "bs_template"} <= set(header)
    page = (site / "models/a-robust.html").read_text()
    assert page.count("<svg") == 3 and "Robust families" in page
    assert (site / "models/b-plain.html").read_text().count("<svg") == 2
    for name in _meta(submission)["files"]["robust_samples"].values():  # the files ship with the site
        assert (site / "submissions/a-robust" / name).read_bytes() == (submission / name).read_bytes()


def test_no_robust_columns_without_robust_submissions():
    from consistbench.leaderboard.schema import RankingRow

    row = RankingRow.model_construct(metrics={"em": 0.5, "em_how_to": 0.4})
    assert render.robust_columns([row]) == []
    assert [c.metric for c in render.robust_columns([RankingRow.model_construct(metrics={"rs_surface": 0.1})])] == \
        ["em_surface", "rs_surface", "bs_surface"]


def test_prepare_tells_the_main_tracks_samples_from_its_robust_families(tmp_path):
    # `consistency` is a prefix of `consistency_typo`: one run of the main track with its robust
    # families writes both into one folder, and prepare must pick each task's own file
    from consistbench.leaderboard.prepare import samples_file

    stamp = "2026-12-06T05-26-25.326667"
    for task in ("consistency", "consistency_typo", "consistency_surface", "consistency_template"):
        (tmp_path / f"samples_{task}_{stamp}.jsonl").write_text("{}\n")
    assert samples_file(tmp_path, "consistency").name == f"samples_consistency_{stamp}.jsonl"
    assert samples_file(tmp_path, "consistency_typo").name == f"samples_consistency_typo_{stamp}.jsonl"
    (tmp_path / "samples_consistency_2026-12-07T00-00-00.000000.jsonl").write_text("{}\n")
    with pytest.raises(ConsistbenchError, match="keep one run per folder"):
        samples_file(tmp_path, "consistency")
