"""Leaderboard validation: a real submission accepted and rescored, the larger tracks against
their own documents, and every rejection each with its own message (``consistbench leaderboard
validate``; the submission and helpers are in ``tests/leaderboard_fixtures.py``).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.leaderboard import limits as L
from consistbench.leaderboard import rescore as R
from consistbench.leaderboard import tracks as T
from consistbench.leaderboard import validate as V
from consistbench.leaderboard.schema import metadata_json_schema_text

# the shared submission and helpers, built once per session (a plugin, its asserts rewritten)
pytest.register_assert_rewrite("tests.leaderboard_fixtures")
pytest_plugins = ["tests.leaderboard_fixtures"]
from tests.leaderboard_fixtures import (  # noqa: E402
    REPO, TASK, meta, read_results, read_samples, rejects, results_path, set_meta, write_results,
    write_samples)


# ---------------------------------------------------------------------------------------------
# Acceptance

@pytest.mark.slow
def test_accepts_a_real_submission_and_rescores_every_metric(real_submission, eval_dir, capsys):
    v = V.validate_submission(real_submission)
    assert v.task == TASK
    spec = T.load_task(TASK)
    from consistbench.benchmark.schema import load_data

    groups = set((REPO / "tasks/consistency/data/mini_groups.txt").read_text().split())
    assert v.n_docs == len(spec.docs) == sum(r.group_id in groups for r in load_data(REPO / "tasks/consistency/data/test.jsonl"))
    assert v.data_sha256 == json.loads((REPO / "tasks/consistency/data/versions.json").read_text())["test"]["sha256"]
    reported = json.loads(next(eval_dir.glob("results_*.json")).read_text())["results"][TASK]
    assert set(v.metrics) == set(spec.metrics) and "em_how_to" in v.metrics and "rougeL_original" in v.metrics
    for m, value in v.metrics.items():
        assert abs(value - reported[f"{m},none"]) <= R.tolerance(m)
    assert 0 < v.metrics["bs"] < 1 and v.n_pairs > 0  # varied responses: nothing trivially 0 or 1
    report = real_submission.parent / "report.json"
    assert main(["leaderboard", "validate", str(real_submission), "--json", str(report)]) == 0
    assert "OK" in capsys.readouterr().out
    rep = json.loads(report.read_text())
    assert rep["valid"] and rep["metrics"]["em"]["rescored"] == v.metrics["em"] and rep["metrics"]["bs"]["tolerance"] == R.TOLERANCE_BS


def test_accepts_the_plain_lm_eval_samples_file(sub, eval_dir):
    plain = next(eval_dir.glob(f"samples_{TASK}_*.jsonl"))
    shutil.copyfile(plain, sub / plain.name)
    m = meta(sub)
    (sub / m["files"]["samples"]).unlink()
    m["files"]["samples"] = plain.name
    set_meta(sub, m)
    assert V.validate_submission(sub, task=TASK).n_docs == len(T.load_task(TASK).docs)


@pytest.mark.parametrize("track", [pytest.param("consistency", marks=pytest.mark.slow), "consistency_small"])
def test_larger_tracks_are_checked_against_their_own_documents(tmp_path, real_submission, track):
    """A main-track (every test document) or small-track (its 300 whole groups) submission; responses =
    references, so scoring is quick. Each track is checked against its own document set."""
    import hashlib

    from consistbench.tasks.consistency.utils import doc_to_text

    spec = T.load_task(track)
    gen_kwargs = read_samples(real_submission)[0]["arguments"]["gen_args_0"]["arg_1"]
    sha = lambda text: hashlib.sha256(text.encode("utf-8")).hexdigest()  # noqa: E731
    samples = [{"doc_id": i, "doc": doc, "target": doc["reference"],
                "arguments": {"gen_args_0": {"arg_0": doc_to_text(doc), "arg_1": gen_kwargs}},
                "resps": [[doc["reference"]]], "filtered_resps": [doc["reference"]], "filter": "none",
                "doc_hash": sha(json.dumps(doc, indent=2, ensure_ascii=False)), "prompt_hash": sha(doc_to_text(doc))}
               for i, doc in enumerate(spec.docs)]
    res = read_results(real_submission)
    for key in ("results", "configs", "versions", "n-shot", "n-samples", "higher_is_better"):
        res[key] = {track: res[key][TASK]}
    # these prompts are the plain doc_to_text: a run without a chat template
    res["chat_template"] = res["chat_template_sha"] = None
    res["consistbench"]["apply_chat_template"] = False
    res["n-samples"][track] = {"original": len(samples), "effective": len(samples)}
    metrics, _ = R.rescore(spec, {d["id"]: d["reference"] for d in spec.docs})
    for m in spec.metrics:
        res["results"][track][f"{m},none"] = metrics[m]
    sub = tmp_path / "full"
    shutil.copytree(real_submission, sub)
    m = meta(sub)
    (sub / m["files"]["samples"]).unlink()
    m["files"]["samples"] = f"samples_{track}.jsonl.gz"
    set_meta(sub, m)
    write_results(sub, res)
    write_samples(sub, samples)
    v = V.validate_submission(sub, task=track)
    if track == "consistency":
        assert v.n_docs == len(spec.docs) == json.loads((REPO / "tasks/consistency/data/versions.json").read_text())["test"]["rows"]
    else:
        groups = (REPO / "tasks/consistency/data/small_groups.txt").read_text().split()
        assert len(groups) >= 300 and v.n_docs == len(spec.docs)
        assert {d["group_id"] for d in spec.docs} == set(groups)
    assert v.metrics["rougeL"] == pytest.approx(1.0) and v.metrics["em"] == 1.0
    write_samples(sub, samples[:-1])
    rejects(sub, f"missing samples: 1 of {len(spec.docs)} documents of task '{track}'",
            repr(samples[-1]["doc"]["id"]))
    with pytest.raises(ConsistbenchError, match="exactly one task, 'consistency_mini'"):
        V.validate_submission(sub, task=TASK)

# ---------------------------------------------------------------------------------------------
# Rejections named in the issue, each with its own message

def test_rejects_an_inflated_score(sub):
    res = read_results(sub)
    true = res["results"][TASK]["rs,none"]
    res["results"][TASK]["rs,none"] = true + 0.05
    write_results(sub, res)
    msg = rejects(sub, "metric 'rs'", f"{true + 0.05:.6f}", f"{true:.6f}", "tolerance")
    assert "rescoring the samples gives" in msg


def test_rejects_an_inflated_per_type_score_beyond_the_bertscore_tolerance(sub):
    res = read_results(sub)
    res["results"][TASK]["bs_paraphrase,none"] += 10 * R.TOLERANCE_BS
    write_results(sub, res)
    rejects(sub, "metric 'bs_paraphrase'")


def test_tolerance_lets_float_noise_through(sub):
    res = read_results(sub)
    res["results"][TASK]["rougeL,none"] += R.TOLERANCE / 10
    res["results"][TASK]["bs,none"] += R.TOLERANCE_BS / 10
    write_results(sub, res)
    assert V.validate_submission(sub).task == TASK


def test_rejects_missing_samples(sub):
    samples = read_samples(sub)
    write_samples(sub, samples[:-3])
    rejects(sub, f"missing samples: 3 of {len(samples)} documents", "have no sample")


def test_rejects_a_document_answered_twice(sub):
    samples = read_samples(sub)
    write_samples(sub, samples + [samples[5]])
    rejects(sub, f"document {samples[5]['doc']['id']!r} is answered twice")


def test_rejects_a_response_that_belongs_to_another_document(sub):
    # a careful forger moves doc, doc_id and doc_hash of sample 0 onto sample 1's prompt and response
    samples = read_samples(sub)
    a, b = samples[0], samples[1]
    for key in ("doc", "doc_id", "doc_hash", "target", "target_hash"):
        a[key], b[key] = b[key], a[key]
    write_samples(sub, samples)
    rejects(sub, "does not belong to document", "prompt is not that document's prompt")


def test_rejects_a_response_edited_apart_from_its_metric_items(sub):
    samples = read_samples(sub)
    other = samples[7]["filtered_resps"][0]
    samples[3]["resps"], samples[3]["filtered_resps"] = [[other]], [other]
    write_samples(sub, samples)
    rejects(sub, f"does not belong to document {samples[3]['doc']['id']!r}", "metric item")


def test_rejects_an_edited_document(sub):
    samples = read_samples(sub)
    samples[2]["doc"]["reference"] = samples[2]["filtered_resps"][0]  # make the answer "correct"
    write_samples(sub, samples)
    rejects(sub, "differs from the shipped document in field 'reference'")


def test_rejects_other_generation_settings(sub):
    samples = read_samples(sub)
    samples[0]["arguments"]["gen_args_0"]["arg_1"]["max_gen_toks"] = 512
    write_samples(sub, samples)
    rejects(sub, "other settings", "max_gen_toks=512")


def test_rejects_the_wrong_data_version(sub):
    res = read_results(sub)
    res["configs"][TASK]["metadata"]["data_sha256"] = "0" * 64
    write_results(sub, res)
    rejects(sub, "wrong data version", "0000000000000000...", T.shipped_data_version()[:16])


def test_rejects_a_results_file_without_a_data_version(sub):
    res = read_results(sub)
    del res["configs"][TASK]["metadata"]["data_sha256"]
    write_results(sub, res)
    rejects(sub, "no data version")


def test_rejects_another_task(sub):
    res = read_results(sub)
    res["results"]["arc_easy"] = res["results"].pop(TASK)
    write_results(sub, res)
    rejects(sub, "holds tasks ['arc_easy']", "'consistency'")
    with pytest.raises(ConsistbenchError, match="exactly one task, 'consistency'"):
        V.validate_submission(sub, task="consistency")


@pytest.mark.parametrize("name", ["../samples.jsonl.gz", "/etc/passwd", "sub/../../x.jsonl", "..", "~/x.jsonl"])
def test_rejects_a_file_name_that_leaves_the_directory(sub, name):
    m = meta(sub)
    m["files"]["samples"] = name
    set_meta(sub, m)
    rejects(sub, f"file name {name!r} tries to leave the submission directory")


def test_rejects_a_link_that_leaves_the_directory(sub, tmp_path):
    outside = tmp_path / "outside.jsonl.gz"
    shutil.copyfile(sub / meta(sub)["files"]["samples"], outside)
    (sub / meta(sub)["files"]["samples"]).unlink()
    os.symlink(outside, sub / meta(sub)["files"]["samples"])
    rejects(sub, "is a link that leaves the submission directory")


def test_rejects_files_above_the_size_limits(sub, monkeypatch):
    m = meta(sub)
    (sub / "metadata.json").write_text(json.dumps(m) + " " * L.LIMITS["metadata"])
    rejects(sub, "metadata file is", "above the limit of 0.0625 MiB")
    set_meta(sub, m)
    with results_path(sub).open("a") as fh:
        fh.write(" " * L.LIMITS["results"])
    rejects(sub, "results file is", "above the limit of 8 MiB")


def test_rejects_a_samples_file_that_decompresses_above_the_limit(sub, monkeypatch):
    monkeypatch.setitem(L.LIMITS, "samples", 100_000)  # the real file is ~1 MB uncompressed
    rejects(sub, "samples file is above the limit of", "once decompressed")


@pytest.mark.parametrize("which", ["metadata", "results", "samples"])
def test_rejects_malformed_json(sub, which):
    if which == "metadata":
        (sub / "metadata.json").write_text('{"schema_version": 1, "model": ')
        rejects(sub, "metadata.json: invalid JSON")
    elif which == "results":
        path = results_path(sub)
        path.write_text(path.read_text()[:-200])
        rejects(sub, f"{path.name}: invalid JSON", "line")
    else:
        lines = [json.dumps(s) + "\n" for s in read_samples(sub)]
        lines[4] = lines[4][:50] + "\n"
        write_samples(sub, [], raw_lines=lines)
        rejects(sub, ":5: invalid JSON")


def test_rejects_a_broken_gzip_file(sub):
    path = sub / meta(sub)["files"]["samples"]
    path.write_bytes(path.read_bytes()[:2000])
    rejects(sub, "not a readable gzip file")


@pytest.mark.parametrize("field,value,needle", [
    (("model", "name"), "", "model.name"),
    (("model", "link"), "javascript:alert(1)", "model.link: Value error, must be an http"),
    (("model", "precision"), "fp64", "model.precision"),
    (("model", "parameters"), 12, "differs from the"),
    (("surprise",), 1, "surprise: Extra inputs are not permitted"),
])
def test_rejects_metadata_that_breaks_the_schema(sub, field, value, needle):
    m = meta(sub)
    target = m
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    set_meta(sub, m)
    rejects(sub, needle)


def test_cli_prints_one_error_line_and_exits_non_zero(sub, capsys):
    res = read_results(sub)
    res["results"][TASK]["em,none"] = 0.99
    write_results(sub, res)
    assert main(["leaderboard", "validate", str(sub)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("consistbench: error:") and "metric 'em'" in err[0]


def test_shipped_schema_file_is_current():
    assert (REPO / "leaderboard" / "submission.schema.json").read_text() == metadata_json_schema_text()


@pytest.mark.slow
def test_every_shipped_submission_validates():
    shipped = sorted(p for p in (REPO / "leaderboard" / "submissions").iterdir() if p.is_dir())
    assert shipped, "the leaderboard ships at least one entry"
    for d in shipped:
        v = V.validate_submission(d)
        assert v.task in T.TRACKS and v.metadata.model.name


@pytest.mark.parametrize("edit,needle", [
    (lambda r: r["config"].__setitem__("limit", 10), "config.limit is 10"),
    (lambda r: r["n-samples"][TASK].__setitem__("original", 10), f"n-samples.{TASK}.original is 10"),
    (lambda r: r["config"].__setitem__("gen_kwargs", {"temperature": 0.7, "do_sample": True}),
     "config.gen_kwargs"),
    (lambda r: r["configs"][TASK]["generation_kwargs"].__setitem__("max_gen_toks", 512),
     "generation_kwargs differ from the task's (max_gen_toks=512 instead of 64)"),
    (lambda r: r.__setitem__("system_instruction", "Always answer: 42."), "system instruction"),
    (lambda r: r.__setitem__("chat_template_sha", "0" * 64), "chat_template_sha does not match"),
])
def test_rejects_claims_the_run_contradicts(sub, edit, needle):
    res = read_results(sub)
    edit(res)
    write_results(sub, res)
    rejects(sub, needle)


def test_rejects_generation_settings_the_task_does_not_have(sub):
    samples = read_samples(sub)
    samples[0]["arguments"]["gen_args_0"]["arg_1"]["top_p"] = 0.9
    write_samples(sub, samples)
    rejects(sub, "other settings", "extra setting top_p=0.9")
