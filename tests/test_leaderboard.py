"""Leaderboard: a real submission from ``run_eval``, every rejection the issue lists, the site.

The submission is produced once per session: ``consistbench.benchmark.evaluate.run_eval`` on a tiny random
Llama (SmolLM2's tokenizer and chat template; a wide initialisation so that it says varied
nonsense instead of nothing) over ``consistency_mini``, then ``consistbench leaderboard prepare``.
Each rejection test copies it and breaks one thing. The browser test drives headless Chromium
(Debian ``chromium`` + ``chromium-driver``; ``make test`` installs them when missing).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import struct
from pathlib import Path

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.leaderboard import validate as V
from consistbench.leaderboard.schema import metadata_json_schema_text

REPO = Path(__file__).resolve().parents[1]
TASK = "consistency_mini"


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers

@pytest.fixture(scope="session")
def chatty_llama_dir(tmp_path_factory, tiny_llama_dir) -> Path:
    """tiny_llama_dir's architecture re-initialised with std 0.3: non-empty, varied responses."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("chatty-llama")
    config = LlamaConfig.from_pretrained(tiny_llama_dir)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def eval_dir(tmp_path_factory, chatty_llama_dir) -> Path:
    """A real `consistbench eval` output folder (results JSON + samples JSONL) on consistency_mini."""
    from consistbench.benchmark.evaluate import EvalOptions, run_eval

    out = tmp_path_factory.mktemp("lb-eval")
    result = run_eval(EvalOptions(model_args=f"pretrained={chatty_llama_dir},dtype=float32", tasks=(TASK,),
                                  output_path=str(out), batch_size=64))
    return result["files"][0].parent


@pytest.fixture(scope="session")
def real_submission(tmp_path_factory, eval_dir) -> Path:
    out = tmp_path_factory.mktemp("lb-subs") / "tiny-chatty"
    rc = main(["leaderboard", "prepare", str(eval_dir), "-o", str(out), "--name", "tiny chatty llama",
               "--submitter", "consistbench tests", "--link", "https://example.org/tiny", "--date", "2026-11-22"])
    assert rc == 0
    return out


@pytest.fixture
def sub(tmp_path, real_submission) -> Path:
    """A private copy of the real submission to break."""
    dst = tmp_path / "sub"
    shutil.copytree(real_submission, dst)
    return dst


def meta(sub: Path) -> dict:
    return json.loads((sub / "metadata.json").read_text())


def set_meta(sub: Path, data: dict) -> None:
    (sub / "metadata.json").write_text(json.dumps(data, indent=2))


def results_path(sub: Path) -> Path:
    return sub / meta(sub)["files"]["results"]


def read_results(sub: Path) -> dict:
    return json.loads(results_path(sub).read_text())


def write_results(sub: Path, data: dict) -> None:
    results_path(sub).write_text(json.dumps(data))


def read_samples(sub: Path) -> list[dict]:
    with gzip.open(sub / meta(sub)["files"]["samples"], "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_samples(sub: Path, samples: list[dict], raw_lines: list[str] | None = None) -> None:
    text = "".join(raw_lines) if raw_lines is not None else "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
    with gzip.open(sub / meta(sub)["files"]["samples"], "wt", encoding="utf-8") as fh:
        fh.write(text)


def set_responses(sub: Path, respond) -> dict[str, float]:
    """Give every document a new response (consistently everywhere in the sample) and report the
    true scores for it: a valid submission with other numbers. Returns the new metrics."""
    samples = read_samples(sub)
    spec = V.load_task(TASK)
    responses = {}
    for s in samples:
        text = respond(s["doc"])
        responses[s["doc"]["id"]] = text
        s["resps"] = [[text]]
        s["filtered_resps"] = [text]
        for m in spec.metrics:
            if isinstance(s.get(m), list):
                s[m][3] = text
    write_samples(sub, samples)
    metrics, _ = V.rescore(spec, responses)
    res = read_results(sub)
    for m in spec.metrics:
        res["results"][TASK][f"{m},none"] = metrics[m]
    write_results(sub, res)
    return metrics


def rejects(sub: Path, *needles: str, task: str | None = None) -> str:
    with pytest.raises(ConsistbenchError) as info:
        V.validate_submission(sub, task=task)
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------
# Acceptance

@pytest.mark.slow
def test_accepts_a_real_submission_and_rescores_every_metric(real_submission, eval_dir, capsys):
    v = V.validate_submission(real_submission)
    assert v.task == TASK
    spec = V.load_task(TASK)
    from consistbench.benchmark.schema import load_data

    groups = set((REPO / "tasks/consistency/data/mini_groups.txt").read_text().split())
    assert v.n_docs == len(spec.docs) == sum(r.group_id in groups for r in load_data(REPO / "tasks/consistency/data/test.jsonl"))
    assert v.data_sha256 == json.loads((REPO / "tasks/consistency/data/versions.json").read_text())["test"]["sha256"]
    reported = json.loads(next(eval_dir.glob("results_*.json")).read_text())["results"][TASK]
    assert set(v.metrics) == set(spec.metrics) and "em_how_to" in v.metrics and "rougeL_original" in v.metrics
    for m, value in v.metrics.items():
        assert abs(value - reported[f"{m},none"]) <= V.tolerance(m)
    assert 0 < v.metrics["bs"] < 1 and v.n_pairs > 0  # varied responses: nothing trivially 0 or 1
    report = real_submission.parent / "report.json"
    assert main(["leaderboard", "validate", str(real_submission), "--json", str(report)]) == 0
    assert "OK" in capsys.readouterr().out
    rep = json.loads(report.read_text())
    assert rep["valid"] and rep["metrics"]["em"]["rescored"] == v.metrics["em"] and rep["metrics"]["bs"]["tolerance"] == V.TOLERANCE_BS


def test_accepts_the_plain_lm_eval_samples_file(sub, eval_dir):
    plain = next(eval_dir.glob(f"samples_{TASK}_*.jsonl"))
    shutil.copyfile(plain, sub / plain.name)
    m = meta(sub)
    (sub / m["files"]["samples"]).unlink()
    m["files"]["samples"] = plain.name
    set_meta(sub, m)
    assert V.validate_submission(sub, task=TASK).n_docs == len(V.load_task(TASK).docs)


@pytest.mark.parametrize("track", [pytest.param("consistency", marks=pytest.mark.slow), "consistency_small"])
def test_larger_tracks_are_checked_against_their_own_documents(tmp_path, real_submission, track):
    """A main-track (every test document) or small-track (its 300 whole groups) submission; responses =
    references, so scoring is quick. Each track is checked against its own document set."""
    import hashlib

    from consistbench.tasks.consistency.utils import doc_to_text

    spec = V.load_task(track)
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
    metrics, _ = V.rescore(spec, {d["id"]: d["reference"] for d in spec.docs})
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


def test_prepare_writes_reproducible_bytes(tmp_path, eval_dir, real_submission):
    again = tmp_path / "again"
    assert main(["leaderboard", "prepare", str(eval_dir), "-o", str(again), "--name", "tiny chatty llama",
                 "--submitter", "consistbench tests", "--link", "https://example.org/tiny", "--date", "2026-11-22"]) == 0
    for f in real_submission.iterdir():
        assert (again / f.name).read_bytes() == f.read_bytes(), f.name
    assert meta(again)["model"]["parameters"] == read_results(again)["config"]["model_num_parameters"]


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
    res["results"][TASK]["bs_paraphrase,none"] += 10 * V.TOLERANCE_BS
    write_results(sub, res)
    rejects(sub, "metric 'bs_paraphrase'")


def test_tolerance_lets_float_noise_through(sub):
    res = read_results(sub)
    res["results"][TASK]["rougeL,none"] += V.TOLERANCE / 10
    res["results"][TASK]["bs,none"] += V.TOLERANCE_BS / 10
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
    rejects(sub, "wrong data version", "0000000000000000...", V.shipped_data_version()[:16])


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
    (sub / "metadata.json").write_text(json.dumps(m) + " " * V.LIMITS["metadata"])
    rejects(sub, "metadata file is", "above the limit of 0.0625 MiB")
    set_meta(sub, m)
    with results_path(sub).open("a") as fh:
        fh.write(" " * V.LIMITS["results"])
    rejects(sub, "results file is", "above the limit of 8 MiB")


def test_rejects_a_samples_file_that_decompresses_above_the_limit(sub, monkeypatch):
    monkeypatch.setitem(V.LIMITS, "samples", 100_000)  # the real file is ~1 MB uncompressed
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
        assert v.task in V.TRACKS and v.metadata.model.name


# ---------------------------------------------------------------------------------------------
# Hostile input: every case must give one line (no traceback) and never unbounded cost

def raw_results(sub: Path) -> str:
    return results_path(sub).read_text()


def cli_rejects(sub: Path, capsys, *needles: str) -> str:
    """`consistbench leaderboard validate` exits 2 with exactly one `consistbench: error:` line."""
    assert main(["leaderboard", "validate", str(sub)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("consistbench: error:"), err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def test_rejects_duplicate_keys_in_the_results_json(sub, capsys):
    # the inflated value first: Python's json keeps the last (true) one, another parser the first
    text = raw_results(sub)
    results_path(sub).write_text(text.replace('"em,none":', '"em,none": 0.99, "em,none":', 1))
    cli_rejects(sub, capsys, "duplicate key 'em,none'")


def test_rejects_duplicate_keys_in_metadata(sub, capsys):
    text = (sub / "metadata.json").read_text()
    (sub / "metadata.json").write_text(text.replace('"parameters":', '"parameters": 7000000000, "parameters":', 1))
    cli_rejects(sub, capsys, "metadata.json", "duplicate key 'parameters'")


@pytest.mark.parametrize("depth", [40, 5000])
def test_rejects_deep_nesting_without_a_traceback(sub, capsys, depth):
    text = raw_results(sub)
    results_path(sub).write_text(text.replace("{", '{"deep": ' + "[" * depth + "]" * depth + ", ", 1))
    cli_rejects(sub, capsys, "nested", f"{V.DEPTH}")


def test_rejects_a_5000_digit_integer_without_a_traceback(sub, capsys):
    text = raw_results(sub)
    results_path(sub).write_text(text.replace("{", '{"big": ' + "7" * 5000 + ", ", 1))
    cli_rejects(sub, capsys, "an integer of 5000 digits")


def test_rejects_infinity(sub, capsys):
    text = raw_results(sub)
    results_path(sub).write_text(text.replace('"em,none": ', '"em,none": Infinity, "x": ', 1))
    cli_rejects(sub, capsys, "Infinity is not accepted")


def test_rejects_a_lone_surrogate_in_a_response_without_a_traceback(sub, capsys):
    samples = read_samples(sub)
    s = samples[3]
    text = "fine words \ud800 then more"  # a lone surrogate: Python keeps it, UTF-8 cannot encode it
    s["resps"], s["filtered_resps"] = [[text]], [text]
    for m in V.load_task(TASK).metrics:
        s[m][3] = text
    # json.dumps escapes it as \ud800 (ensure_ascii), exactly what a hostile file holds
    write_samples(sub, [], raw_lines=[json.dumps(x) + "\n" for x in samples])
    cli_rejects(sub, capsys, ":4:", "lone surrogate \\ud800")


def test_rejects_a_symlink_loop_without_a_traceback(sub, capsys):
    name = meta(sub)["files"]["samples"]
    (sub / name).unlink()
    os.symlink(sub / "loop-b", sub / name)
    os.symlink(sub / name, sub / "loop-b")
    cli_rejects(sub, capsys, "symbolic link loop")


def test_rejects_a_symlink_inside_the_directory(sub, capsys):
    name = meta(sub)["files"]["results"]
    (sub / name).rename(sub / "elsewhere.json")
    os.symlink("elsewhere.json", sub / name)
    cli_rejects(sub, capsys, "is a symbolic link")


def test_rejects_a_symlinked_submission_directory(tmp_path, sub, capsys):
    link = tmp_path / "linked"
    os.symlink(sub, link)
    cli_rejects(link, capsys, "submission directory is a symbolic link")


def test_rejects_a_very_long_response_before_any_metric_runs(sub, capsys, monkeypatch):
    samples = read_samples(sub)
    text = "word " * 2000  # 10,000 characters: ROUGE-L is quadratic in it
    s = samples[0]
    s["resps"], s["filtered_resps"] = [[text]], [text]
    for m in V.load_task(TASK).metrics:
        s[m][3] = text
    write_samples(sub, samples)

    def no_metrics(*a, **k):
        raise AssertionError("a metric ran on a response above the limit")

    monkeypatch.setattr(V, "rescore", no_metrics)
    cli_rejects(sub, capsys, "10,000 characters, above the limit of 4,096")


def test_rejects_responses_whose_rouge_cost_is_above_the_budget(sub, monkeypatch):
    from consistbench.benchmark import metrics as M

    monkeypatch.setattr(M, "MAX_ROUGE_CELLS", 1000)
    V._RESCORED.clear()
    rejects(sub, "ROUGE-L table cells, above the limit of 1,000")


def test_a_gzip_bomb_is_refused_within_one_line_of_memory(sub, monkeypatch):
    import tracemalloc

    monkeypatch.setitem(V.LIMITS, "samples_line", 256 * 1024)
    line = b'{"doc": "' + b"a" * (16 * 1024 * 1024) + b'"}\n'  # 16 MiB on one line, ~16 KB compressed
    path = sub / meta(sub)["files"]["samples"]
    path.write_bytes(gzip.compress(line, compresslevel=9))
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        rejects(sub, ":1: line longer than the limit of 256 KiB once decompressed")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak  # a few buffers of the line limit, never the 16 MiB line


def _reprompt(sub: Path, text_of, template: str | None = None) -> None:
    """Rewrite every logged prompt consistently (prompt_hash too): the user message becomes
    text_of(task prompt), rendered in the results' chat template (or ``template``)."""
    import hashlib

    from consistbench.tasks.consistency.utils import doc_to_text

    res = read_results(sub)
    if template is not None:
        res["chat_template"] = template
        res["chat_template_sha"] = hashlib.sha256(template.encode()).hexdigest()
        write_results(sub, res)
    fmt = V.prompt_format(results_path(sub), res)
    samples = read_samples(sub)
    for s in samples:
        prompt = fmt.render(text_of(doc_to_text(s["doc"])))
        s["arguments"]["gen_args_0"]["arg_0"] = prompt
        s["prompt_hash"] = hashlib.sha256(prompt.encode()).hexdigest()
    write_samples(sub, samples)


FEW_SHOT = ("Answer the question using only the context. Reply in one or two sentences.\n\nContext:\nlist.copy() "
            "returns a shallow copy.\n\nQuestion: How do I copy a list?\nAnswer: Call list.copy().\n\n")


def test_rejects_prompts_with_few_shot_examples_the_task_does_not_have(sub):
    _reprompt(sub, lambda text: FEW_SHOT + text)
    rejects(sub, "is not exactly the task's prompt in the recorded chat template", "few-shot")


def test_the_prompt_check_is_exact_for_the_recorded_chat_template(sub):
    _reprompt(sub, lambda text: text)  # re-rendered by the checker's own renderer: still valid
    assert V.validate_submission(sub).task == TASK
    _reprompt(sub, lambda text: text + " ")
    rejects(sub, "is not exactly")


def _set_template(sub: Path, template: str) -> None:
    import hashlib

    res = read_results(sub)
    res["chat_template"], res["chat_template_sha"] = template, hashlib.sha256(template.encode()).hexdigest()
    write_results(sub, res)


def test_a_chat_template_that_loops_is_stopped(sub, monkeypatch):
    # Jinja's sandbox bounds each range() to 100,000 items, not nested loops: 10^10 iterations
    monkeypatch.setattr(V, "RENDER_SECONDS", 0.3)
    _set_template(sub, "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}x")
    rejects(sub, "chat template takes more than 0.3 s of CPU time")


def test_a_chat_template_that_floods_memory_is_cut_short(sub):
    import tracemalloc

    # 100,000 copies of the ~1 KB user message: ~100 MB if rendered in full
    _set_template(sub, "{% for a in range(100000) %}{{ messages[0]['content'] }}{% endfor %}")
    tracemalloc.start()
    try:
        rejects(sub, "is not exactly the task's prompt in the recorded chat template")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, peak


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


def test_prompt_format_follows_what_lm_eval_records(tmp_path):
    """No template: the plain prompt; "" (chat APIs): the messages as JSON; a template: rendered
    with the recorded special tokens and the run's enable_thinking, as lm-eval's HF model does."""
    path = tmp_path / "results.json"
    plain = V.prompt_format(path, {"chat_template": None})
    assert plain.matches("Q?", "Q?") and not plain.matches("Example. Q?", "Q?")
    api = V.prompt_format(path, {"chat_template": ""})
    assert api.matches(json.dumps([{"role": "user", "content": "Q?"}]), "Q?")
    assert not api.matches(json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}]), "Q?")
    template = ("{{ bos_token }}{% if enable_thinking is defined and not enable_thinking %}/no_think {% endif %}"
                "{{ messages[0]['content'] }}{% if add_generation_prompt %} =>{% endif %}")
    res = {"chat_template": template, "tokenizer_bos_token": ["<s>", 1],
           "config": {"model_args": "pretrained=x,enable_thinking=False"}}
    assert V.prompt_format(path, res).render("Q?") == "<s>/no_think Q? =>"
    res["config"]["model_args"] = "pretrained=x"
    assert V.prompt_format(path, res).render("Q?") == "<s>Q? =>"


def test_rejects_generation_settings_the_task_does_not_have(sub):
    samples = read_samples(sub)
    samples[0]["arguments"]["gen_args_0"]["arg_1"]["top_p"] = 0.9
    write_samples(sub, samples)
    rejects(sub, "other settings", "extra setting top_p=0.9")


# ---------------------------------------------------------------------------------------------
# Plausibility and reproduction

# A small plan for tests (a few groups): half the responses forged, detected with 90% probability
TEST_PLAN = {"forged_share": 0.5, "power": 0.9}


def reproduce_sub(sub: Path, chatty_llama_dir: Path):
    from consistbench.leaderboard.reproduce import reproduce

    return reproduce(sub, model_args=f"pretrained={chatty_llama_dir}", batch_size=64, **TEST_PLAN)


@pytest.fixture(scope="session")
def reproduced_submission(tmp_path_factory, real_submission, chatty_llama_dir) -> Path:
    out = tmp_path_factory.mktemp("lb-reproduced") / "tiny-chatty"
    shutil.copytree(real_submission, out)
    reproduce_sub(out, chatty_llama_dir)
    return out


def test_plan_detects_the_stated_forged_share():
    from scipy.stats import hypergeom

    from consistbench.leaderboard.reproduce import plan_sample

    for task in (TASK, "consistency"):
        spec = V.load_task(task)
        p = plan_sample(spec)
        assert p.n_docs == len(spec.docs) and p.max_mismatched_groups == 0
        # the detection probability at the stated share, and the next smaller sample misses it
        assert p.detection_probability >= 0.95
        assert 1 - hypergeom.cdf(0, p.n_groups, p.forged_groups, p.sample_groups - 1) < 0.95
        # the forger's best hiding place holds the forged share in as few groups as possible
        sizes = sorted((sum(d["group_id"] == g for d in spec.docs) for g in {d["group_id"] for d in spec.docs}),
                       reverse=True) if task == TASK else None
        if sizes:
            assert sum(sizes[:p.forged_groups]) >= 0.1 * p.n_docs > sum(sizes[:p.forged_groups - 1])
    # sampling whole groups without replacement needs no more groups than the binomial bound
    full = plan_sample(V.load_task("consistency"))
    assert full.sample_groups <= math.ceil(math.log(1 - full.power) / math.log(1 - full.forged_groups / full.n_groups))
    tolerant = plan_sample(V.load_task("consistency"), tolerated_share=0.02)
    assert tolerant.max_mismatched_groups >= 1 and tolerant.sample_groups > plan_sample(V.load_task("consistency")).sample_groups


def test_reproduce_an_honest_submission(reproduced_submission, chatty_llama_dir, capsys):
    from consistbench.leaderboard.reproduce import choose_groups, sample_seed

    rec = json.loads((reproduced_submission / "reproduction.json").read_text())
    assert rec["verdict"] == "reproduced", rec["reasons"]
    assert rec["exact_matches"] == rec["compared_docs"] > 0 and rec["mismatched_groups"] == 0
    assert rec["identical_prompts"] == rec["compared_docs"] and rec["chat_template_matches"] is True
    assert rec["metrics"]["rougeL"]["difference"] == 0 and rec["exact_match_ci"][1] == 1.0
    v = V.validate_submission(reproduced_submission)
    assert v.verification == "reproduced" and v.reproduction.seed == sample_seed(v.content_sha256)
    assert rec["groups"] == choose_groups(V.load_task(TASK), rec["seed"], rec["plan"]["sample_groups"])
    assert "reproduction.json" in v.files


def test_a_reproduction_record_is_bound_to_the_files_and_its_own_figures(tmp_path, reproduced_submission):
    sub = tmp_path / "sub"
    shutil.copytree(reproduced_submission, sub)
    record = sub / "reproduction.json"
    rec = json.loads(record.read_text())
    results_path(sub).write_text(raw_results(sub) + "\n")  # any edit of the files makes it stale
    rejects(sub, "reproduction record is for other files")
    shutil.copyfile(results_path(reproduced_submission), results_path(sub))
    for key, value, needle in (("groups", rec["groups"][1:] + ["gzzzz"], "not the seeded sample"),
                               ("mismatched_groups", 3, "does not follow from its own figures")):
        record.write_text(json.dumps({**rec, key: value}))
        rejects(sub, needle)


def _forge_reference(d):
    return d["reference"]


def _identical_in_group(sub):
    """Every response of a group replaced by the group original's logged response (EM 1.0)."""
    samples = read_samples(sub)
    first = {s["doc"]["group_id"]: s["filtered_resps"][0] for s in samples if s["doc"]["variant_type"] == "original"}
    return lambda d: first[d["group_id"]]


def _swapped(sub):
    """Each group's responses rotated by one row: every response belongs to another question."""
    samples = read_samples(sub)
    groups: dict[str, list] = {}
    for s in samples:
        groups.setdefault(s["doc"]["group_id"], []).append(s)
    moved = {}
    for members in groups.values():
        for a, b in zip(members, members[1:] + members[:1]):
            moved[a["doc"]["id"]] = b["filtered_resps"][0]
    return lambda d: moved[d["id"]]


@pytest.mark.parametrize("forgery,implausible", [
    ("reference", "equal their reference"), ("identical", "answer every question identically"), ("swapped", None)])
def test_reproduce_detects_forged_responses(sub, chatty_llama_dir, capsys, forgery, implausible):
    respond = {"reference": lambda: _forge_reference, "identical": lambda: _identical_in_group(sub),
               "swapped": lambda: _swapped(sub)}[forgery]()
    set_responses(sub, respond)
    v = V.validate_submission(sub)  # the arithmetic is right: rescoring alone accepts it
    if implausible:
        assert v.verification == "needs reproduction" and any(implausible in r for r in v.implausible), v.implausible
    else:
        assert v.verification == "rescored"
    rc = main(["leaderboard", "reproduce", str(sub), "--model-args", f"pretrained={chatty_llama_dir}",
               "--batch-size", "64", "--forged-share", str(TEST_PLAN["forged_share"]), "--power", str(TEST_PLAN["power"])])
    out = capsys.readouterr().out
    assert rc == 1 and "verdict: not reproduced" in out
    rec = json.loads((sub / "reproduction.json").read_text())
    assert rec["verdict"] == "not reproduced" and rec["mismatched_groups"] > 0 and rec["mismatches"]
    assert rec["exact_matches"] < rec["compared_docs"]
    rejects(sub, "did not reproduce the logged responses")


def test_reproduce_detects_a_chat_template_that_is_not_the_models(sub, chatty_llama_dir):
    # few-shot text baked into the recorded template: every prompt matches the recorded template,
    # but the model's own tokenizer renders other prompts
    template = read_results(sub)["chat_template"]
    forged = "{{ '<|im_start|>user\n" + FEW_SHOT.replace("\n", "\\n") + "<|im_end|>\n' }}" + template
    _reprompt(sub, lambda text: text, template=forged)
    assert V.validate_submission(sub).verification == "rescored"
    rec = reproduce_sub(sub, chatty_llama_dir)
    assert rec.verdict == "not reproduced" and rec.chat_template_matches is False
    assert rec.identical_prompts == 0


# ---------------------------------------------------------------------------------------------
# The site

XSS_NAME = '<script>window.__pwned = 1</script> "quoted" & <b>bold</b>'


FORMULA_NAME = '=HYPERLINK("https://evil.example/x","click me")'
FORMULA_SUBMITTER = "@SUM(1+1)"


@pytest.fixture(scope="session")
def submissions(tmp_path_factory, reproduced_submission) -> Path:
    """Three valid mini-track entries with different numbers: one reproduced, two above the
    plausibility bounds; one has a hostile name, one spreadsheet formulas as names."""
    root = tmp_path_factory.mktemp("lb-submissions")
    shutil.copytree(reproduced_submission, root / "a-random")
    for slug, respond in (("b-reference", lambda d: d["reference"]), ("c-empty", lambda d: "")):
        shutil.copytree(reproduced_submission, root / slug)
        (root / slug / "reproduction.json").unlink()  # for other responses: it would be stale
        set_responses(root / slug, respond)
    m = meta(root / "c-empty")
    m["model"]["name"] = XSS_NAME
    m["notes"] = "</p><script>window.__pwned = 2</script>"
    set_meta(root / "c-empty", m)
    m = meta(root / "b-reference")
    m["model"]["name"], m["submitter"]["name"] = FORMULA_NAME, FORMULA_SUBMITTER
    set_meta(root / "b-reference", m)
    return root


@pytest.fixture(scope="session")
def site(tmp_path_factory, submissions) -> Path:
    from consistbench.leaderboard.site import build_site

    out = tmp_path_factory.mktemp("lb-site") / "site"
    build_site(submissions, out)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_site_has_pages_json_csv_and_no_external_resources(site, submissions):
    files = _files(site)
    for name in ("index.html", "submit.html", "leaderboard.json", "leaderboard.csv", "submission.schema.json",
                 "models/a-random.html", "models/b-reference.html", "models/c-empty.html"):
        assert name in files, name
    for name, data in files.items():
        if name.endswith(".html"):
            text = data.decode()
            assert "http://" not in text.replace('href="https://example.org/tiny"', "").replace(
                'xmlns="http://www.w3.org/2000/svg"', "") and "<script src" not in text and "<link" not in text, name
    doc = json.loads(files["leaderboard.json"])
    rows = doc["tracks"][TASK]["rows"]
    expected = sorted(rows, key=lambda r: (-r["metrics"]["rougeL"], -r["metrics"]["rs"], r["slug"]))
    assert [r["slug"] for r in rows] == [r["slug"] for r in expected] and rows[0]["slug"] == "b-reference"
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[0]["metrics"]["rougeL"] == pytest.approx(1.0)
    assert doc["tracks"]["consistency"]["rows"] == []
    assert doc["tracks"][TASK]["data_sha256"] == V.shipped_data_version()
    header, *lines = files["leaderboard.csv"].decode().splitlines()
    assert header.split(",")[:4] == ["task", "rank", "slug", "model"] and len(lines) == 3
    assert "em_how_to" in header and "rougeL_original" in header
    assert files["models/a-random.html"].count(b"<svg") == 2
    for f in (submissions / "b-reference").iterdir():  # each entry's own files ship with the site
        assert files[f"submissions/b-reference/{f.name}"] == f.read_bytes()
        assert f'href="../submissions/b-reference/{f.name}"'.encode() in files["models/b-reference.html"]
    assert V.shipped_data_version().encode() in files["index.html"]


def test_user_text_is_escaped(site):
    index = (site / "index.html").read_text()
    page = (site / "models/c-empty.html").read_text()
    for text in (index, page):
        assert "<script>window.__pwned" not in text
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in text
        assert "<b>bold</b>" not in text
    assert "&lt;/p&gt;&lt;script&gt;window.__pwned = 2" in page
    csv_text = (site / "leaderboard.csv").read_text()
    assert XSS_NAME.replace('"', '""') in csv_text  # data files keep the text as it is


def test_csv_cells_that_start_a_formula_are_neutralised(site):
    import csv as csvmod

    rows = list(csvmod.DictReader((site / "leaderboard.csv").read_text().splitlines()))
    ref = next(r for r in rows if r["slug"] == "b-reference")
    assert ref["model"] == "'" + FORMULA_NAME and ref["submitter"] == "'" + FORMULA_SUBMITTER
    from consistbench.leaderboard.site import csv_text

    for bad in ("=1+1", "+1", "-1", "@A1", "\tx", "\rx"):
        assert csv_text(bad) == "'" + bad
    assert csv_text("SmolLM2 = small") == "SmolLM2 = small"
    # the pages and leaderboard.json keep the name as it is (escaped as text in HTML)
    doc = json.loads((site / "leaderboard.json").read_text())
    assert any(r["model"]["name"] == FORMULA_NAME for r in doc["tracks"][TASK]["rows"])


def test_site_shows_each_entrys_verification_level(site):
    doc = json.loads((site / "leaderboard.json").read_text())
    rows = {r["slug"]: r for r in doc["tracks"][TASK]["rows"]}
    assert rows["a-random"]["verification"] == "reproduced"
    rep = rows["a-random"]["reproduction"]
    assert rep["exact_matches"] == rep["docs"] > 0 and rep["verdict"] == "reproduced"
    assert rows["b-reference"]["verification"] == "needs reproduction"
    assert any("equal their reference" in x for x in rows["b-reference"]["implausible"])
    assert rows["c-empty"]["verification"] == "needs reproduction"  # all answers identical: EM 1.0
    index = (site / "index.html").read_text()
    assert index.count('data-col="verification" data-value="needs reproduction"') == 2
    assert index.count('data-col="verification" data-value="reproduced"') == 1
    page = (site / "models/a-random.html").read_text()
    assert f"{rep['exact_matches']} of {rep['docs']} responses identical" in page and 'id="reproduction-metrics"' in page
    assert (site / "submissions/a-random/reproduction.json").is_file()
    assert "Needs reproduction" in (site / "models/b-reference.html").read_text()
    assert "verification" in (site / "leaderboard.csv").read_text().splitlines()[0]


def test_build_refuses_a_symlinked_submission_directory(tmp_path, real_submission):
    from consistbench.leaderboard.site import build_site

    elsewhere = tmp_path / "elsewhere" / "private"
    shutil.copytree(real_submission, elsewhere)
    (tmp_path / "subs").mkdir()
    os.symlink(elsewhere, tmp_path / "subs" / "innocent")
    with pytest.raises(ConsistbenchError, match="symbolic link among the submissions"):
        build_site(tmp_path / "subs", tmp_path / "site")
    assert not (tmp_path / "site").exists()


@pytest.mark.slow
def test_rebuild_is_byte_identical(tmp_path, submissions, site):
    from consistbench.leaderboard.site import build_site

    again = tmp_path / "again"
    build_site(submissions, again)
    assert _files(again) == _files(site)
    build_site(submissions, again)  # over an existing site: replaced, still identical
    assert _files(again) == _files(site)


def test_build_is_atomic_and_refuses_foreign_directories(tmp_path, submissions, site):
    from consistbench.leaderboard.site import build_site

    out = tmp_path / "site"
    shutil.copytree(site, out)
    bad = tmp_path / "subs"
    shutil.copytree(submissions, bad)
    res = read_results(bad / "a-random")
    res["results"][TASK]["em,none"] = 0.5
    write_results(bad / "a-random", res)
    with pytest.raises(ConsistbenchError, match="submission 'a-random' is invalid: .*metric 'em'"):
        build_site(bad, out)
    assert _files(out) == _files(site)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site", "subs"]  # no temporary directory left
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(ConsistbenchError, match="not a leaderboard site"):
        build_site(submissions, foreign)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_rejects_an_unsafe_submission_directory_name(tmp_path, real_submission):
    from consistbench.leaderboard.site import build_site

    shutil.copytree(real_submission, tmp_path / "subs" / "Bad Name")
    with pytest.raises(ConsistbenchError, match="directory names use lower-case"):
        build_site(tmp_path / "subs", tmp_path / "site")


def test_table_shows_confidence_intervals_when_a_row_has_them(site):
    from consistbench.leaderboard.schema import RankingRow
    from consistbench.leaderboard.site import render_ranking_table

    row = RankingRow.model_validate(json.loads((site / "leaderboard.json").read_text())["tracks"][TASK]["rows"][0])
    row.ci = {"em": [0.25, 0.75]}
    html = str(render_ranking_table([row]))
    assert "[0.250, 0.750]" in html and html.count('class="ci"') == 1


@pytest.mark.slow
def test_ranking_has_group_bootstrap_intervals_and_tie_marks(site, submissions, real_submission, tmp_path):
    from consistbench.leaderboard.site import build_site

    doc = json.loads((site / "leaderboard.json").read_text())
    assert doc["intervals"]["n_resamples"] == 1000 and doc["intervals"]["unit"] == "group_id"
    rows = doc["tracks"][TASK]["rows"]
    for row in rows:
        for metric in ("rougeL", "bleu", "em", "rs", "bs", "em_paraphrase"):
            low, high = row["ci"][metric]
            assert low - 1e-12 <= row["metrics"][metric] <= high + 1e-12, (row["slug"], metric)
    assert rows[0]["vs_above"] is None and rows[0]["tied_with_above"] is None
    # reference answers (rougeL 1.0) against a random tiny model: a real difference, no tie
    assert rows[0]["slug"] == "b-reference" and rows[1]["tied_with_above"] is False
    assert rows[1]["vs_above"]["rougeL"]["significant"] and rows[1]["vs_above"]["rougeL"]["low"] > 0
    # two entries with the same responses: the second is marked as tied with the first
    root = tmp_path / "subs"
    for slug in ("x-first", "y-same"):
        shutil.copytree(real_submission, root / slug)
    build_site(root, tmp_path / "site")
    tied = json.loads((tmp_path / "site" / "leaderboard.json").read_text())["tracks"][TASK]["rows"]
    assert [r["tied_with_above"] for r in tied] == [None, True]
    assert tied[1]["vs_above"]["rougeL"] == {"difference": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0,
                                             "significant": False}
    index = (tmp_path / "site" / "index.html").read_text()
    assert index.count('<span class="tie" title=') == 1 and "not significantly different" in index
    body = (site / "index.html").read_text().split("<tbody>")[1]
    assert body.count('<span class="tie"') == sum(bool(r["tied_with_above"]) for r in rows)


# ---------------------------------------------------------------------------------------------
# In a real browser

@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "the browser test needs Debian's chromium and chromium-driver (make test installs them)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--allow-file-access-from-files"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=opts)
    yield drv
    drv.quit()


def _order(browser, col: str) -> tuple[list[str], list[float]]:
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, f"#track-{TASK} table.ranking tbody tr")
    slugs = [r.get_attribute("data-slug") for r in rows]
    values = [float(r.find_element(By.CSS_SELECTOR, f'td[data-col="{col}"]').get_attribute("data-value")) for r in rows]
    return slugs, values


@pytest.mark.browser
def test_site_in_headless_chromium(browser, site, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get((site / "index.html").as_uri())
    assert browser.execute_script("return window.__pwned === undefined")
    names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, f"#track-{TASK} td.name a")]
    assert XSS_NAME in names  # the hostile name is shown as text
    rows = json.loads((site / "leaderboard.json").read_text())["tracks"][TASK]["rows"]
    rank = {r["slug"]: r["rank"] for r in rows}
    before, _ = _order(browser, "rougeL")
    assert before == sorted(rank, key=rank.get)

    # a metric column whose descending order differs from the ranking (the entries disagree on some)
    def desc(col):
        return sorted(rank, key=lambda s: (-next(r for r in rows if r["slug"] == s)["metrics"][col], rank[s]))

    cols = [th.get_attribute("data-col") for th in
            browser.find_elements(By.CSS_SELECTOR, f'#track-{TASK} th.sortable[data-type="number"]')]
    col = next(c for c in cols if c not in ("rank", "parameters") and desc(c) != before)
    header = browser.find_element(By.CSS_SELECTOR, f'#track-{TASK} th[data-col="{col}"]')
    header.click()
    slugs, values = _order(browser, col)
    assert slugs == desc(col) and slugs != before  # descending, ties by rank
    assert values == sorted(values, reverse=True) and header.get_attribute("aria-sort") == "descending"
    header.click()
    slugs, values = _order(browser, col)
    assert values == sorted(values) and header.get_attribute("aria-sort") == "ascending"
    browser.save_screenshot(str(tmp_path / "index.png"))

    browser.find_element(By.CSS_SELECTOR, f'#track-{TASK} tr[data-slug="c-empty"] td.name a').click()
    WebDriverWait(browser, 10).until(EC.title_contains("consistbench leaderboard"))
    assert browser.current_url.endswith("/models/c-empty.html")
    assert browser.find_element(By.TAG_NAME, "h1").text == XSS_NAME
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 2
    assert browser.execute_script("return window.__pwned === undefined")
    shot = tmp_path / "model.png"
    browser.save_screenshot(str(shot))
    png = shot.read_bytes()
    width, height = struct.unpack(">II", png[16:24])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and width >= 800 and height >= 600
    print(f"screenshots kept in {tmp_path}")
