"""The lm-eval tasks and ``consistbench eval`` on a tiny random Llama (offline, CPU).

Plain ``lm_eval --include_path`` must work, ``consistbench eval`` must be deterministic and
generate a prompt shared by several tasks once, bad input must exit 2 without a results file,
and two data-parallel processes must give the metrics of one.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from consistbench.benchmark import cli
from consistbench.benchmark.evaluate import EvalOptions, run_eval, task_metrics, tasks_path
from consistbench.benchmark.schema import load_data

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MINI_ROWS = len([r for r in load_data(ROOT / "tasks/consistency/data/test.jsonl")
                 if r.group_id in set((ROOT / "tasks/consistency/data/mini_groups.txt").read_text().split())])


# A random tiny model never stops early: 8 new tokens instead of the tasks' 64 keep these runs short.
GEN_TOKS = 8


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _lm_eval_cmd(model_dir: Path, out: Path) -> list[str]:
    return ["-m", "lm_eval", "--model", "hf",
            "--model_args", f"pretrained={model_dir},dtype=float32", "--batch_size", "1", "--device", "cpu",
            "--include_path", str(tasks_path()), "--tasks", "consistency_mini",
            "--log_samples", "--output_path", str(out), "--seed", "1234", "--gen_kwargs", f"max_gen_toks={GEN_TOKS}"]


def _read_results(out: Path) -> dict:
    files = glob.glob(str(out / "**" / "results_*.json"), recursive=True)
    assert len(files) == 1, files
    return json.loads(Path(files[0]).read_text())


def _metrics(results: dict) -> dict[str, float]:
    return task_metrics(results, "consistency_mini")


@pytest.fixture(scope="module")
def varied_llama_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    """The tiny Llama with larger random weights, so its answers differ between prompts.

    With the default initialisation (std 0.02) a tiny random model answers every prompt with the
    same punctuation, which would make every consistency metric 1.0 and the comparisons below
    vacuous.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    out = tmp_path_factory.mktemp("varied-llama")
    config = AutoConfig.from_pretrained(tiny_llama_dir)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def plain_run(varied_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    proc = subprocess.run([sys.executable, *_lm_eval_cmd(varied_llama_dir, out)], cwd=tmp_path_factory.mktemp("cwd"),
                          env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_plain_lm_eval_reports_every_metric_from_any_directory(plain_run):
    results = _read_results(plain_run)
    m = _metrics(results)
    for name in ("rougeL", "bleu", "em", "rs", "bs", "em_how_to", "rs_plural_article", "bs_paraphrase"):
        assert name in m and 0.0 <= m[name] <= 1.0, (name, m)
    assert m["em"] < 1.0 and m["bs"] < 1.0  # the model's answers depend on the question
    assert results["n-samples"]["consistency_mini"]["effective"] == MINI_ROWS
    cfg = results["configs"]["consistency_mini"]
    assert cfg["metadata"]["data_sha256"] == json.loads(
        (ROOT / "tasks/consistency/data/versions.json").read_text())["test"]["sha256"]
    samples = glob.glob(str(plain_run / "**" / "samples_consistency_mini_*.jsonl"), recursive=True)
    assert len(samples) == 1
    assert sum(1 for _ in open(samples[0])) == MINI_ROWS


@pytest.mark.slow
def test_data_parallel_two_processes_equal_one(plain_run, varied_llama_dir, tmp_path):
    """``consistbench eval`` under ``accelerate launch`` with 2 CPU processes: each rank generates
    part of the rows, lm-eval gathers them, and the metrics (paired by group) equal one process's.

    ``accelerate launch --cpu`` starts a single process, so the torchrun launcher
    (``--multi_gpu``) starts the two; ``consistbench eval`` joins them over gloo.
    """
    if shutil.which("accelerate", path=str(BIN)) is None:
        pytest.fail("accelerate is a dependency and must be installed")
    out = tmp_path / "dp"
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(BIN / "consistbench"), "eval",
           "--model-args", f"pretrained={varied_llama_dir},dtype=float32", "--batch-size", "1",
           "--chat-template", "no", "--gen-kwargs", f"max_gen_toks={GEN_TOKS}", "-o", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    half = (MINI_ROWS + 1) // 2  # lm-eval deals the rows out in turn, so rank 0 holds the odd one
    assert f"{half}/{half}" in proc.stderr  # rank 0's progress bar: it generated half of the rows
    dp = _read_results(out)
    assert dp["n-samples"]["consistency_mini"]["effective"] == MINI_ROWS
    # summed over ranks; lm-eval pads the shorter rank with a copy of its last request so that the
    # ranks stay in step, and the dedup generates that copy once
    assert dp["consistbench"]["dedup"] == {"requested": 2 * half, "generated": MINI_ROWS}
    single = _metrics(_read_results(plain_run))
    both = _metrics(dp)
    assert both.keys() == single.keys()
    for name in single:
        assert both[name] == pytest.approx(single[name], abs=1e-9), name


@pytest.fixture(scope="module")
def api_runs(varied_llama_dir, tmp_path_factory):
    """Two identical ``run_eval`` calls (determinism) with a copy of the mini task (dedup)."""
    extra = tmp_path_factory.mktemp("extra_tasks")
    (extra / "consistency_mini_copy.yaml").write_text(
        f"include: {tasks_path() / 'consistency' / 'consistency_mini.yaml'}\ntask: consistency_mini_copy\n")
    runs = []
    for i in range(2):
        out = tmp_path_factory.mktemp(f"api{i}")
        opts = EvalOptions(model_args=f"pretrained={varied_llama_dir},dtype=float32", output_path=str(out),
                           tasks=("consistency_mini", "consistency_mini_copy"), include_paths=(str(extra),),
                           batch_size=4, gen_kwargs=f"max_gen_toks={GEN_TOKS}")
        runs.append((out, run_eval(opts)))
    return runs


@pytest.mark.slow
def test_eval_writes_results_samples_and_report(api_runs):
    out, res = api_runs[0]
    names = sorted(Path(f).name for f in res["files"])
    assert any(n.startswith("results_") and n.endswith(".json") for n in names)
    assert any(n.startswith("samples_consistency_mini_2") for n in names)
    assert "report_consistency_mini.png" in names
    png = next(Path(f) for f in res["files"] if Path(f).name == "report_consistency_mini.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".consistbench-eval.*")), "staging directory left behind"
    saved = _read_results(out)
    assert saved["consistbench"]["apply_chat_template"] is True  # SmolLM2's tokenizer has a template
    assert f"pretrained={saved['model_name']}," in saved["config"]["model_args"]  # named as lm-eval's CLI would


@pytest.mark.slow
def test_eval_is_deterministic(api_runs):
    (out_a, a), (out_b, b) = api_runs
    assert _metrics(a["results"]) == _metrics(b["results"])
    sa = sorted(glob.glob(str(out_a / "**" / "samples_consistency_mini_2*.jsonl"), recursive=True))
    sb = sorted(glob.glob(str(out_b / "**" / "samples_consistency_mini_2*.jsonl"), recursive=True))
    ra = [json.loads(line)["resps"] for line in open(sa[0])]
    rb = [json.loads(line)["resps"] for line in open(sb[0])]
    assert ra == rb and len(ra) == MINI_ROWS


@pytest.mark.slow
def test_prompt_shared_by_two_tasks_is_generated_once(api_runs):
    _, res = api_runs[0]
    assert res["dedup"] == {"requested": 2 * MINI_ROWS, "generated": MINI_ROWS}
    assert _metrics(res["results"]) == task_metrics(res["results"], "consistency_mini_copy")


@pytest.mark.slow
def test_eval_cli_prints_table_and_dedup(tiny_llama_dir, tmp_path, capsys):
    rc = cli.main(["eval", "--model-args", f"pretrained={tiny_llama_dir},dtype=float32",
                   "-o", str(tmp_path), "--batch-size", "8", "--chat-template", "no",
                   "--gen-kwargs", f"max_gen_toks={GEN_TOKS}"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "consistency_mini" in text and "overall" in text and "plural_article" in text
    assert f"generations: {MINI_ROWS} for {MINI_ROWS} requests" in text
    assert _read_results(tmp_path)["consistbench"]["apply_chat_template"] is False


def _no_results(out: Path) -> bool:
    return not glob.glob(str(out / "**" / "results_*.json"), recursive=True)


@pytest.mark.parametrize("case", ["unknown_task", "missing_model", "broken_model", "remote_code"])
def test_bad_input_exits_2_without_results(case, tmp_path, tiny_llama_dir, capsys):
    out = tmp_path / "out"
    args = ["eval", "-o", str(out)]
    if case == "unknown_task":
        args += ["--tasks", "consistency_nope", "--model-args", f"pretrained={tiny_llama_dir}"]
        expect = "unknown task 'consistency_nope'"
    elif case == "missing_model":
        args += ["--model-args", f"pretrained={tmp_path / 'nowhere'}"]
        expect = "does not exist"
    elif case == "broken_model":
        bad = tmp_path / "bad"
        bad.mkdir()
        (bad / "config.json").write_text(json.dumps({"model_type": "not-a-model"}))
        args += ["--model-args", f"pretrained={bad}"]
        expect = "model failed to load"
    else:
        args += ["--model-args", f"pretrained={tiny_llama_dir},trust_remote_code=True"]
        expect = "--trust-remote-code"
    rc = cli.main(args)
    err = capsys.readouterr().err
    assert rc == 2
    assert expect in err and err.strip().startswith("consistbench: error:")
    assert _no_results(out)


def test_changed_data_is_refused(tiny_llama_dir, tmp_path, capsys):
    """Test data whose checksum differs from the task's data_sha256 stops the run before generating."""
    data = tmp_path / "data"
    shutil.copytree(ROOT / "tasks/consistency/data", data, ignore=shutil.ignore_patterns("authored", "retrieval"))
    lines = (data / "test.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["question"] = first["question"] + " (edited)"
    lines[0] = json.dumps(first, ensure_ascii=False)
    (data / "test.jsonl").write_text("\n".join(lines) + "\n")
    extra = tmp_path / "tasks"
    extra.mkdir()
    (extra / "stale.yaml").write_text(
        f"include: {tasks_path() / 'consistency' / 'consistency_mini.yaml'}\ntask: consistency_stale\n"
        f"dataset_kwargs:\n  subset: mini\n  data_dir: {data}\n")
    out = tmp_path / "out"
    rc = cli.main(["eval", "--model-args", f"pretrained={tiny_llama_dir}", "-o", str(out),
                   "--include-path", str(extra), "--tasks", "consistency_stale"])
    err = capsys.readouterr().err
    assert rc == 2 and "the data changed" in err
    assert _no_results(out)


def test_tasks_path_command(capsys):
    assert cli.main(["tasks-path"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert (path / "consistency" / "consistency.yaml").is_file()


@pytest.mark.slow
def test_scoring_settings_travel_in_task_metadata_and_are_recorded(varied_llama_dir, tmp_path):
    """``--rs-threshold`` reaches the lm-eval aggregations as task metadata (never the environment),
    lm-eval records it in the task config, and consistbench records the full settings."""
    from consistbench.benchmark import metrics as M
    from consistbench.benchmark.intervals import items_from_samples

    out = tmp_path / "out"
    rc = cli.main(["eval", "--model-args", f"pretrained={varied_llama_dir},dtype=float32", "-o", str(out),
                   "--batch-size", "8", "--chat-template", "no", "--gen-kwargs", f"max_gen_toks={GEN_TOKS}",
                   "--rs-threshold", "0.3", "--n-resamples", "50", "--bootstrap-seed", "7"])
    assert rc == 0
    results = _read_results(out)
    meta = results["configs"]["consistency_mini"]["metadata"]
    assert meta["rs_threshold"] == 0.3 and meta["bootstrap_resamples"] == 50 and meta["bootstrap_seed"] == 7
    settings = results["consistbench"]["settings"]
    assert settings["rs_threshold"] == 0.3 and settings["bootstrap"]["n_resamples"] == 50
    samples = [json.loads(line) for line in open(glob.glob(str(out / "**" / "samples_consistency_mini_*.jsonl"),
                                                              recursive=True)[0])]
    scored = [M.Scored(*it) for it in items_from_samples(samples)]
    pairs = M.pair_by_group(scored)
    rs_03, rs_08 = M.rs_values(pairs, 0.3).mean(), M.rs_values(pairs, 0.8).mean()
    assert rs_03 != rs_08  # the override matters for this model's answers
    assert results["results"]["consistency_mini"]["rs,none"] == pytest.approx(rs_03)


def test_offline_hub_id_is_accepted_only_when_in_the_hugging_face_cache(tmp_path, monkeypatch):
    """Offline, a hub id resolves when its files are in the Hugging Face cache; otherwise one clear error."""
    import huggingface_hub.constants as hf_constants

    from consistbench.benchmark.errors import ConsistbenchError
    from consistbench.benchmark.evaluate import check_model_args

    cache = tmp_path / "hub"
    snap = cache / "models--acme--tiny-model" / "snapshots" / "0123456789abcdef"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (cache / "models--acme--tiny-model" / "refs").mkdir()
    (cache / "models--acme--tiny-model" / "refs" / "main").write_text("0123456789abcdef")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert check_model_args("hf", "pretrained=acme/tiny-model,dtype=float32", False)
    with pytest.raises(ConsistbenchError, match="neither a local folder nor in the Hugging Face cache"):
        check_model_args("hf", "pretrained=acme/other-model", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: the hub decides at load time
    assert check_model_args("hf", "pretrained=acme/other-model", False)


def _responses(out: Path) -> dict[int, list]:
    files = glob.glob(str(out / "**" / "samples_consistency_mini_*.jsonl"), recursive=True)
    assert len(files) == 1, files
    return {s["doc_id"]: s["resps"] for s in map(json.loads, open(files[0]))}


def test_lm_eval_cli_with_consistbench_hf_equals_lm_eval_hf(plain_run, varied_llama_dir, tmp_path):
    """``python -m consistbench.benchmark.fastlm`` is lm-eval's CLI with ``consistbench-hf`` registered;
    its answers equal lm-eval's own HF model's (batch 1) on every row of the mini task."""
    out = tmp_path / "fast"
    cmd = _lm_eval_cmd(varied_llama_dir, out)
    cmd[1:4] = ["consistbench.benchmark.fastlm", "--model", "consistbench-hf"]
    proc = subprocess.run([sys.executable, *cmd], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _read_results(out)["config"]["model"] == "consistbench-hf"
    want, got = _responses(plain_run), _responses(out)
    assert len(got) == MINI_ROWS and got == want


def test_killed_run_resumes_generating_only_the_missing_rows(varied_llama_dir, tmp_path):
    """SIGKILL in the middle of generation, then the same command again: the rerun takes the answers
    the first run had finished from the generation cache, generates only the others, and ends with
    the samples of an uninterrupted run."""
    import signal
    import time

    args = [str(BIN / "consistbench"), "eval", "--model-args", f"pretrained={varied_llama_dir},dtype=float32,decode_slots=1",
            "--chat-template", "no", "--gen-kwargs", f"max_gen_toks={GEN_TOKS}"]
    whole = tmp_path / "whole"
    proc = subprocess.run([*args, "-o", str(whole), "--no-generation-cache"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    out = tmp_path / "killed"
    victim = subprocess.Popen([*args, "-o", str(out)], cwd=tmp_path, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    cache_file = None
    while time.monotonic() < deadline and victim.poll() is None:
        found = glob.glob(str(out / ".consistbench-cache" / "generations-*.jsonl"))
        if found and Path(found[0]).read_bytes().count(b"\n") >= 5:
            cache_file = Path(found[0])
            break
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert cache_file is not None, "the run ended before it could be killed mid-generation"
    assert _no_results(out)
    finished = cache_file.read_bytes().count(b"\n")  # complete lines; a torn last one does not count
    assert 0 < finished < MINI_ROWS

    proc = subprocess.run([*args, "-o", str(out)], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cache = _read_results(out)["consistbench"]["generation_cache"]
    assert cache["from_cache"] == finished and cache["generated_now"] == MINI_ROWS - finished
    assert f"{MINI_ROWS - finished}/{MINI_ROWS - finished}" in proc.stderr  # the progress bar: only the missing rows
    assert _responses(out) == _responses(whole)
