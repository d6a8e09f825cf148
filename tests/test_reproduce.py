"""`consistbench ref reproduce`: stages, resumability, the results table, bad input (tiny models)."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.reproduce.presets import PRESETS, SPECIALISED, Preset, training_runs
from consistbench.reference_method.reproduce.run_folder import Run
from consistbench.reference_method.reproduce.stages import run_stages, stage_base, stage_table
from consistbench.reference_method.reproduce.table import TABLE_METRICS

TASK = "consistency_mini"


def fake_results(folder: Path, metrics: dict[str, float], task: str = TASK) -> Path:
    """A results file in lm-eval's layout (what run_eval writes under output_path/<model>/)."""
    out = folder / "model" / "results_2026-01-01T00-00-00.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    res = {f"{k},none": v for k, v in metrics.items()} | {"alias": task}
    out.write_text(json.dumps({"results": {task: res}}), encoding="utf-8")
    return out


def tiny_preset(model: Path) -> Preset:
    p = copy.deepcopy(PRESETS["cpu-mini"])
    p.name = "test"
    p.model = str(model)
    p.synth = {"types": list(SPECIALISED), "n": 1, "seed": 0, "limit": 14, "paraphraser": "wordnet"}
    p.train = dict(p.train, lora_layers=1, max_steps=1, save_steps=100, max_length=1024,
                   per_device_train_batch_size=2)
    p.weights = {"max_queries": 6, "batch_size": 4}
    p.questions_per_type = 2
    p.all_data_questions = 3
    return p


@pytest.fixture(scope="module")
def fixed_llama(tiny_llama_dir, tmp_path_factory) -> Path:
    from consistbench.reference_method.doctor import fix

    out = tmp_path_factory.mktemp("fixed") / "model"
    fix(tiny_llama_dir, out)
    return out


def test_training_runs_cover_the_papers_rows():
    runs = training_runs(PRESETS["cpu-mini"])
    assert [r[0] for r in runs] == ["sft_triplet_how_to", "sft_triplet_plural_article", "sft_triplet_paraphrase",
                                    "sft_triplet_all", "sft"]
    assert runs[-1][2] == 0.0 and all(a > 0 for _, _, a in runs[:-1])  # plain SFT is alpha = 0
    assert {t for _, t, _ in runs} == {"all", *SPECIALISED}


def test_table_from_results_of_every_model(tmp_path, fixed_llama):
    run = Run(tiny_preset(fixed_llama), tmp_path / "run", extra_models={"wrpo": str(fixed_llama)}, log=lambda _: None)
    rng = random.Random(0)
    truth = {}
    for name in run.models_to_eval():
        truth[name] = {k: round(rng.random(), 4) for k, _ in TABLE_METRICS}
        fake_results(run.eval_dir(name), truth[name])
    doc = stage_table(run)
    names = [r["model"] for r in doc["rows"]]
    assert names == ["base", "sft", "sft_triplet_all", "sft_triplet_how_to", "sft_triplet_plural_article",
                     "sft_triplet_paraphrase", "merged", "wrpo"]
    for r in doc["rows"]:
        assert r["metrics"] == truth[r["model"]]
    for name, deltas in doc["delta_vs_base"].items():
        for k, v in deltas.items():
            assert v == pytest.approx(truth[name][k] - truth["base"][k], abs=1e-4)
    saved = json.loads((run.results_dir / "results.json").read_text())
    assert saved["rows"] == doc["rows"]
    md = (run.results_dir / "results.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines[1:]] == [label for _, label in TABLE_METRICS]
    em_cells = [c.strip().strip("*") for c in lines[1 + 2].split("|")[2:-1]]  # the EM row
    assert [float(c) for c in em_cells] == [truth[n]["em"] for n in names]
    best = max(truth[n]["em"] for n in names)
    assert f"**{best:.4f}**" in lines[3]
    assert (run.results_dir / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_results_is_a_clear_error(tmp_path, fixed_llama):
    run = Run(tiny_preset(fixed_llama), tmp_path / "run", log=lambda _: None)
    fake_results(run.eval_dir("base"), {k: 0.5 for k, _ in TABLE_METRICS})
    with pytest.raises(ConsistbenchError, match="no results for sft"):
        stage_table(run)
    assert not run.results_dir.exists()


@pytest.mark.slow
def test_pipeline_end_to_end_and_resume_skips_finished_stages(tmp_path, fixed_llama, monkeypatch):
    from consistbench.benchmark import evaluate

    evaluated = []

    def fake_run_eval(opts):  # lm-eval itself is exercised by the real cpu-mini run and tests/test_eval.py
        path = Path(opts.model_args.split(",")[0].split("=", 1)[1])
        assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
        evaluated.append(path)
        fake_results(Path(opts.output_path), {k: 0.1 * len(evaluated) for k, _ in TABLE_METRICS}, opts.tasks[0])

    monkeypatch.setattr(evaluate, "run_eval", fake_run_eval)
    run = Run(tiny_preset(fixed_llama), tmp_path / "run", log=lambda _: None)
    run_stages(run)
    rows = {r["model"]: r for r in json.loads((run.results_dir / "results.json").read_text())["rows"]}
    assert set(rows) == set(run.models_to_eval())
    for name, _, alpha in training_runs(run.preset):
        card = json.loads((run.model_dir(name) / "consistbench_train.json").read_text())
        assert card["training"]["alpha"] == alpha and card["training"]["lora_layers"] == 1
        assert not run.model_dir(name).with_name(name + ".checkpoints").exists()
    chosen = [json.loads(line) for line in run.train_file.read_text().splitlines()]
    for t in SPECIALISED:  # select: exactly questions_per_type groups carry each type
        assert len({r["group_id"] for r in chosen if r["variant_type"] == t}) == 2
    assert {r["group_id"] for r in chosen if r["variant_type"] == "original"} == {r["group_id"] for r in chosen}
    all_rows = [json.loads(line) for line in run.train_all_file.read_text().splitlines()]
    variants = [r for r in all_rows if r["variant_type"] != "original"]
    assert sorted(r["variant_type"] for r in variants) == sorted(SPECIALISED)  # 3 questions, one type each
    assert len({r["group_id"] for r in all_rows}) == 3 and {r["group_id"] for r in all_rows} <= {r["group_id"] for r in chosen}
    card = json.loads((run.model_dir("sft") / "consistbench_train.json").read_text())
    assert card["data"]["path"] == str(run.train_all_file.resolve())
    weights = json.loads(run.weights_file.read_text())
    assert [m["label"] for m in weights["models"]] == list(SPECIALISED)
    assert (run.model_dir("merged") / "README.md").is_file()
    assert run.base_model() == fixed_llama  # no doctor error: the model is used as it is
    timings = json.loads((run.dir / "timings.json").read_text())
    assert {"synth", "weights", "merge", "train sft", "eval merged"} <= set(timings)

    # a second run redoes nothing (every stage's output exists), except the table
    def refuse(*a, **k):
        raise AssertionError("a finished stage ran again")

    import consistbench.reference_method.train as train_mod
    monkeypatch.setattr(train_mod, "train", refuse)
    monkeypatch.setattr(evaluate, "run_eval", refuse)
    stamp = (run.model_dir("merged") / "model.safetensors").stat().st_mtime_ns
    n = len(evaluated)
    run_stages(Run(tiny_preset(fixed_llama), tmp_path / "run", log=lambda _: None))
    assert len(evaluated) == n and (run.model_dir("merged") / "model.safetensors").stat().st_mtime_ns == stamp


def test_base_with_pad_equal_to_eos_gets_a_corrected_copy(tmp_path, tiny_llama_dir):
    run = Run(tiny_preset(tiny_llama_dir), tmp_path / "run", log=lambda _: None)
    stage_base(run)
    assert run.base_model() == run.dir / "base"
    tok = json.loads((run.dir / "base" / "tokenizer_config.json").read_text())
    assert tok["pad_token"] != tok["eos_token"]


def test_a_run_directory_refuses_other_settings(tmp_path, fixed_llama):
    Run(tiny_preset(fixed_llama), tmp_path / "run", log=lambda _: None).record()
    other = tiny_preset(fixed_llama)
    other.train["learning_rate"] = 1.0
    with pytest.raises(ConsistbenchError, match="other settings.*train"):
        Run(other, tmp_path / "run", log=lambda _: None).record()


def test_cli_bad_input(tmp_path, capsys):
    cases = [
        (["--preset", "paper", "-o", str(tmp_path / "p")], "--model"),
        (["--preset", "cpu-mini", "-o", str(tmp_path / "a"), "--stages", "synth,bake"], "unknown stage 'bake'"),
        (["--preset", "cpu-mini", "-o", str(tmp_path / "b"), "--extra-model", "wrpo"], "NAME=DIR"),
        (["--preset", "cpu-mini", "-o", str(tmp_path / "c"), "--extra-model", f"w={tmp_path / 'nope'}"],
         "not a model folder"),
        (["--preset", "cpu-mini", "-o", str(tmp_path / "d"), "--extra-model", f"merged={tmp_path}"],
         "name is taken"),
        (["--preset", "cpu-mini", "-o", str(tmp_path / "e"), "--only", "base,bogus"], "unknown model 'bogus'"),
    ]
    for argv, message in cases:
        assert main(["ref", "reproduce", *argv]) == 2
        err = capsys.readouterr().err
        assert "consistbench: error:" in err and message in err, (argv, err)
    assert not any((tmp_path / d).exists() for d in "pabcde")


def test_cli_show_preset(capsys):
    assert main(["ref", "reproduce", "--preset", "cpu-mini", "--show-preset"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["task"] == TASK and shown["train"]["lora_layers"] == PRESETS["cpu-mini"].train["lora_layers"]
