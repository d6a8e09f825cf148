"""`consistbench ref reproduce --preset cpu`: LoRA on every layer, the paper's SFT on rows, the search on
dev (resumable, its rule, never the test task), the weights temperature, paired comparisons in the table.

One tiny run of the whole preset (tiny random Llama, a few train questions, lm-eval replaced by a fake
that writes results and samples the way run_eval does) is shared by the tests of this module.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.reproduce.dev_search import choose_setting
from consistbench.reference_method.reproduce.jobs import run_config, train_config
from consistbench.reference_method.reproduce.presets import (
    PRESETS,
    ROW_LABELS,
    SEARCH_KEYS,
    SPECIALISED,
    Preset,
    training_runs,
)
from consistbench.reference_method.reproduce.run_folder import Run, read_records
from consistbench.reference_method.reproduce.stages import run_stages, stage_search, stage_select

from tests.conftest import make_row

DEV = "consistency_dev"
TEST_TASK = PRESETS["cpu"].task
# the tiny search: s1 and s2 tie on the dev mean of EM and RS; s2 has fewer steps, so it must win
GRID = [
    {"learning_rate": 1e-3, "max_steps": 2, "alpha": 1.0, "margin": 0.2, "pooling_layer": -1},
    {"learning_rate": 5e-4, "max_steps": 2, "alpha": 0.5, "margin": 0.2, "pooling_layer": 1},
    {"learning_rate": 2e-3, "max_steps": 1, "alpha": 1.0, "margin": 0.5, "pooling_layer": -1},
]
SEARCH_SCORES = {"s0": (0.2, 0.4), "s1": (0.6, 0.4), "s2": (0.4, 0.6)}  # (em, rs)
TEMPERATURES = [0.05, 0.5, 5.0]
TEMPERATURE_SCORES = {"t0.05": (0.3, 0.3), "t0.5": (0.5, 0.6), "t5": (0.4, 0.4)}
# test-task evaluation: share of consistent groups per model (merged best, base none)
CONSISTENT = {"base": 0.0, "sft": 0.3, "sft_triplet_expanded": 0.3, "sft_triplet_all": 0.4,
              "sft_triplet_how_to": 0.2, "sft_triplet_plural_article": 0.1, "sft_triplet_paraphrase": 0.5,
              "merged": 1.0}
N_GROUPS = 30


def tiny_cpu_preset(model: Path) -> Preset:
    p = copy.deepcopy(PRESETS["cpu"])
    p.name = "test-cpu"
    p.model = str(model)
    p.synth = {"types": list(SPECIALISED), "n": 1, "seed": 0, "limit": 14, "paraphraser": "wordnet"}
    p.train = dict(p.train, max_steps=1, save_steps=100, max_length=1024, per_device_train_batch_size=2,
                   warmup_steps=0)
    p.weights = {"max_queries": 6, "batch_size": 4}
    p.search_grid = copy.deepcopy(GRID)
    p.temperatures = list(TEMPERATURES)
    return p


def fake_task_rows() -> list[dict]:
    rows = []
    for g in range(N_GROUPS):
        gid = f"grp{g:03d}"
        rows.append(make_row(gid, "original", f"How do I do thing {g}?", reference=f"Do thing {g}."))
        rows.append(make_row(gid, "paraphrase", f"What is the way to do thing {g}?", reference=f"Do thing {g}."))
    return rows


def write_fake_eval(folder: Path, task: str, metrics: dict[str, float], samples: list[dict] | None = None) -> None:
    """What run_eval leaves under output_path: <model>/results_<date>.json (+ samples_<task>_<date>.jsonl)."""
    date = "2026-01-01T00-00-00.000000"
    out = folder / "model"
    out.mkdir(parents=True, exist_ok=True)
    res = {"results": {task: {f"{k},none": v for k, v in metrics.items()} | {"alias": task}},
           "configs": {task: {"metadata": {"data_sha256": "f" * 64}}}, "model_name": folder.name}
    (out / f"results_{date}.json").write_text(json.dumps(res), encoding="utf-8")
    if samples is not None:
        (out / f"samples_{task}_{date}.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples),
                                                          encoding="utf-8")


def fake_samples(name: str) -> list[dict]:
    """Rows of the fake test task; a group answers consistently when its index is below the model's share."""
    out = []
    for i, row in enumerate(fake_task_rows()):
        g = int(row["group_id"][3:])
        same = g < round(CONSISTENT[name] * N_GROUPS)
        resp = f"Do thing {g} with the tool." if same else f"{name} says {i * 7 + 1000} about {row['variant_type']}"
        out.append({"doc_id": i, "doc": row, "filtered_resps": [resp]})
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fixed_llama(tiny_llama_dir, tmp_path_factory) -> Path:
    from consistbench.reference_method.doctor import fix

    out = tmp_path_factory.mktemp("fixed") / "model"
    fix(tiny_llama_dir, out)
    return out


@pytest.fixture(scope="module")
def cpu_run(fixed_llama, tmp_path_factory):
    """The tiny cpu run, stage by stage, with what each stage trained and evaluated."""
    from consistbench.benchmark import evaluate
    from consistbench.reference_method import train as train_mod
    from consistbench.reference_method.collator import CompletionCollator

    run_dir = tmp_path_factory.mktemp("cpu") / "run"
    log = {"evals": [], "trained": [], "rows_seen": {}, "eval_sha": {}, "crash_on": {"s1"}}
    current = {"name": None}
    real_train, real_call = train_mod.train, CompletionCollator.__call__

    def recording_train(model_dir, data, vtype, out, config, *a, **k):
        log["trained"].append(Path(out).name)
        current["name"] = Path(out).name
        return real_train(model_dir, data, vtype, out, config, *a, **k)

    def recording_call(self, features):
        if "anchor" not in features[0]:
            log["rows_seen"].setdefault(current["name"], []).extend(tuple(f["input_ids"]) for f in features)
        return real_call(self, features)

    def fake_run_eval(opts):
        folder = Path(opts.output_path)
        model = Path(opts.model_args.split(",")[0].split("=", 1)[1])
        assert (model / "config.json").is_file()
        log["evals"].append((str(folder.relative_to(run_dir)), tuple(opts.tasks), opts.device, opts.backend))
        (task,) = opts.tasks
        if task == DEV:
            key = folder.name if folder.name.startswith("s") else folder.parent.name  # search/eval/sN, temperature/tX/eval
            if key in log["crash_on"]:
                log["crash_on"].discard(key)
                raise RuntimeError(f"simulated crash while evaluating {key}")
            em, rs = SEARCH_SCORES.get(key) or TEMPERATURE_SCORES[key]
            log["eval_sha"][key] = sha(model / "model.safetensors")
            write_fake_eval(folder, task, {"em": em, "rs": rs, "rougeL": 0.1, "bleu": 0.1, "bs": 0.5})
        else:
            share = CONSISTENT[folder.name]
            write_fake_eval(folder, task, {"em": share, "rs": share, "rougeL": 0.2, "bleu": 0.1, "bs": 0.7},
                            fake_samples(folder.name))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate, "run_eval", fake_run_eval)
        mp.setattr(train_mod, "train", recording_train)
        mp.setattr(CompletionCollator, "__call__", recording_call)
        run = Run(tiny_cpu_preset(fixed_llama), run_dir, log=lambda _: None)
        run_stages(run, ("base", "synth", "select"))
        with pytest.raises(RuntimeError, match="simulated crash"):
            stage_search(run)
        log["after_crash"] = {"records": [r["id"] for r in read_records(run.search_dir / "search.jsonl")],
                              "trained": list(log["trained"]), "evals": len(log["evals"])}
        log["trained"].clear()
        n_evals = len(log["evals"])
        stage_search(run)
        log["rerun"] = {"trained": list(log["trained"]), "evals": [e[0] for e in log["evals"][n_evals:]]}
        log["trained"].clear()
        n_evals = len(log["evals"])
        stage_search(run)  # finished: nothing again
        log["third"] = {"trained": list(log["trained"]), "evals": len(log["evals"]) - n_evals}
        run_stages(run, ("train", "weights", "merge"))
        log["train_stage"] = list(log["trained"])
        log["merge_sha"] = sha(run.model_dir("merged") / "model.safetensors")
        log["before_eval_stage"] = list(log["evals"])
        run_stages(run, ("temperature", "eval", "table"))
        log["doc"] = json.loads((run.results_dir / "results.json").read_text())
    return run, log


# ---------------------------------------------------------------------------------------------
# the preset

def test_cpu_preset_settings_and_cpu_mini_unchanged():
    cpu, mini = PRESETS["cpu"], PRESETS["cpu-mini"]
    assert cpu.task == "consistency_small" and cpu.search_task == DEV
    assert cpu.questions_per_type is None and cpu.all_data_questions is None  # every train question
    assert "lora_layers" not in cpu.train and cpu.train["use_lora"]
    assert cpu.eval_device is None  # lm-eval's choice through the default backend
    assert 6 <= len(cpu.search_grid) <= 8 and all(set(s) <= set(SEARCH_KEYS) for s in cpu.search_grid)
    for key in ("learning_rate", "max_steps", "alpha", "margin", "pooling_layer"):
        assert len({s[key] for s in cpu.search_grid}) > 1, key  # the grid varies every searched setting
    assert len(cpu.temperatures) >= 2 and cpu.paired
    assert [r[0] for r in training_runs(cpu)][-2:] == ["sft", "sft_triplet_expanded"]
    assert ROW_LABELS["sft_triplet_expanded"] == "SFT (triplet-expanded rows, ablation)"
    # cpu-mini keeps its rows and settings
    assert [r[0] for r in training_runs(mini)] == ["sft_triplet_how_to", "sft_triplet_plural_article",
                                                   "sft_triplet_paraphrase", "sft_triplet_all", "sft"]
    assert mini.train["lora_layers"] == 4 and mini.sft_examples == "triplets" and not mini.search_grid
    assert Run(mini, "/nonexistent/never-created", log=lambda _: None).eval_device() == "cpu"


def test_cpu_preset_trains_lora_on_every_layer(tiny_llama_dir, tmp_path):
    from consistbench.reference_method.train import load_model

    run = Run(PRESETS["cpu"], tmp_path / "run", log=lambda _: None)
    for name, _, alpha in training_runs(run.preset):
        cfg = run_config(run, name, alpha, PRESETS["cpu"].search_grid[0])
        assert cfg.use_lora and cfg.lora_layers is None, name
    cfg = run_config(run, "sft_triplet_all", 1.0, PRESETS["cpu"].search_grid[0])
    model = load_model(tiny_llama_dir, cfg)
    adapted = {n.split(".layers.")[1].split(".")[0] for n, _ in model.named_parameters()
               if "lora_A" in n and ".layers." in n}
    assert adapted == {str(i) for i in range(model.config.num_hidden_layers)}
    mini = train_config(Run(PRESETS["cpu-mini"], tmp_path / "mini", log=lambda _: None), 1.0)
    assert mini.lora_layers == 4  # the contrast: cpu-mini adapts the last layers only


def test_cpu_preset_sft_rows_config():
    run = Run(PRESETS["cpu"], "/nonexistent/never-created", log=lambda _: None)
    sft = run_config(run, "sft", 0.0, {"learning_rate": 1e-4, "max_steps": 80, "alpha": 0.5, "margin": 0.5})
    assert sft.examples == "rows" and sft.alpha == 0.0
    assert sft.max_steps == -1 and sft.num_train_epochs == 1.0 and sft.learning_rate == 1e-4  # one epoch, chosen lr
    expanded = run_config(run, "sft_triplet_expanded", 0.0, {"max_steps": 80, "alpha": 0.5})
    assert expanded.examples == "triplets" and expanded.alpha == 0.0 and expanded.max_steps == 80
    triplet = run_config(run, "sft_triplet_how_to", 1.0, {"alpha": 0.5, "margin": 0.5, "pooling_layer": 15})
    assert (triplet.alpha, triplet.margin, triplet.pooling_layer) == (0.5, 0.5, 15)
    # alpha 0: the triplet term's settings are the preset's whatever the search chose
    for name in ("sft", "sft_triplet_expanded"):
        cfg = run_config(run, name, 0.0, {"learning_rate": 1e-4, "max_steps": 80, "margin": 0.5, "pooling_layer": 15})
        assert (cfg.margin, cfg.pooling_layer) == (0.2, -1), name


def test_bad_search_settings_are_refused(tmp_path):
    p = copy.deepcopy(PRESETS["cpu"])
    p.search_grid = [{"learning_rate": 1e-4, "lora_r": 8}]
    with pytest.raises(ConsistbenchError, match="'lora_r'"):
        Run(p, tmp_path / "a", log=lambda _: None)
    p = copy.deepcopy(PRESETS["cpu"])
    p.search_task = p.task
    with pytest.raises(ConsistbenchError, match="dev task only"):
        Run(p, tmp_path / "b", log=lambda _: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_choose_setting_rule():
    rec = [{"id": "a", "setting": {"max_steps": 80}, "score": 0.5},
           {"id": "b", "setting": {"max_steps": 40}, "score": 0.5},
           {"id": "c", "setting": {"max_steps": 20}, "score": 0.4}]
    assert choose_setting(rec, {"max_steps": 40})["id"] == "b"  # tie on score: fewer steps
    assert choose_setting(rec[:1] + [dict(rec[1], setting={})], {"max_steps": 80})["id"] == "a"  # grid order
    assert choose_setting(rec[2:] + rec[:1], {})["id"] == "a"  # the higher score, whatever the steps
    with pytest.raises(ConsistbenchError):
        choose_setting([], {})


def test_run_json_of_an_older_run_is_the_same_run(tmp_path):
    """Settings added to Preset after a run started are the same run when they hold their defaults."""
    run = Run(PRESETS["cpu-mini"], tmp_path / "run", log=lambda _: None)
    run.record()
    path = tmp_path / "run" / "run.json"
    doc = json.loads(path.read_text())
    for key in ("sft_examples", "sft_train", "sft_ablation", "eval_device", "search_task", "search_grid",
                "temperatures", "paired"):
        del doc["preset"][key]
    path.write_text(json.dumps(doc))
    Run(PRESETS["cpu-mini"], tmp_path / "run", log=lambda _: None).record()  # accepted
    other = copy.deepcopy(PRESETS["cpu-mini"])
    other.sft_ablation = True
    with pytest.raises(ConsistbenchError, match="other settings.*sft_ablation"):
        Run(other, tmp_path / "run", log=lambda _: None).record()


def test_cli_show_preset_cpu(capsys):
    assert main(["ref", "reproduce", "--preset", "cpu", "--show-preset"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "cpu" and shown["task"] == "consistency_small"
    assert shown["search_grid"] == PRESETS["cpu"].search_grid and shown["sft_examples"] == "rows"


# ---------------------------------------------------------------------------------------------
# the tiny run

def test_select_without_a_per_type_count_keeps_whole_groups_that_fit(tmp_path, fixed_llama):
    from consistbench.benchmark.fileio import write_jsonl

    p = tiny_cpu_preset(fixed_llama)
    p.train["max_length"] = 160
    run = Run(p, tmp_path / "run", log=lambda _: None)
    rows = []
    for g, ctx in enumerate(["Short passage.", "Long passage. " * 60, "Another short one."]):
        for vt, q in (("original", f"How do I do thing {g}?"), ("how_to", f"How to do thing {g}")):
            rows.append(make_row(f"g{g}", vt, q, split="train", context=ctx, reference=f"Do thing {g}."))
    run.synth_file.parent.mkdir(parents=True)
    write_jsonl(run.synth_file, rows)
    stage_select(run)
    kept = [json.loads(line) for line in run.train_file.read_text().splitlines()]
    assert [r["id"] for r in kept] == [r["id"] for r in rows if r["group_id"] != "g1"]  # the long group, whole


@pytest.mark.slow
def test_select_keeps_every_question_that_fits(cpu_run):
    run, _ = cpu_run
    chosen = [json.loads(line) for line in run.train_file.read_text().splitlines()]
    synth = [json.loads(line) for line in run.synth_file.read_text().splitlines()]
    assert run.train_all_file == run.train_file  # the all-data models and SFT train on the same rows
    assert {r["id"] for r in chosen} == {r["id"] for r in synth}  # max_length 1024 fits every tiny group
    assert {r["variant_type"] for r in chosen} == {"original", *SPECIALISED}


@pytest.mark.slow
def test_search_writes_records_as_it_goes_and_resumes(cpu_run):
    run, log = cpu_run
    # the crash while scoring s1: s0 was recorded, s0 and s1 were trained
    assert log["after_crash"]["records"] == ["s0"] and log["after_crash"]["trained"] == ["s0", "s1"]
    # the rerun trains only s2 (s1's model was complete) and evaluates s1 and s2, never s0 again
    assert log["rerun"]["trained"] == ["s2"]
    assert log["rerun"]["evals"] == ["search/eval/s1", "search/eval/s2"]
    assert log["third"] == {"trained": [], "evals": 0}
    records = read_records(run.search_dir / "search.jsonl")
    assert [r["id"] for r in records] == ["s0", "s1", "s2"]
    for r, setting in zip(records, GRID):
        em, rs = SEARCH_SCORES[r["id"]]
        assert r["setting"] == setting and r["task"] == DEV
        assert (r["em"], r["rs"]) == (em, rs) and r["score"] == pytest.approx((em + rs) / 2)
    assert (run.search_dir / "search.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_search_picks_by_the_rule_and_train_uses_the_choice(cpu_run):
    run, _ = cpu_run
    chosen = json.loads((run.search_dir / "chosen.json").read_text())
    assert chosen["id"] == "s2" and chosen["setting"] == GRID[2]  # ties with s1 on the dev mean, fewer steps
    for name, _, alpha in training_runs(run.preset):
        t = json.loads((run.model_dir(name) / "consistbench_train.json").read_text())["training"]
        assert t["learning_rate"] == GRID[2]["learning_rate"], name
        assert t["lora_layers"] is None, name
        if alpha > 0:
            assert (t["alpha"], t["margin"], t["pooling_layer"], t["max_steps"]) == (1.0, 0.5, -1, 1), name
    # the chosen search model is the all-data SFT + triplet model (not trained twice); the others are gone
    assert sorted(cpu_run[1]["train_stage"]) == sorted(n for n, _, _ in training_runs(run.preset) if n != "sft_triplet_all")
    assert not (run.search_dir / "models").exists()


@pytest.mark.slow
def test_sft_sees_each_row_once_without_triplets(cpu_run):
    from consistbench.benchmark.schema import load_data
    from consistbench.reference_method import doctor
    from consistbench.reference_method.collator import encode_row

    run, log = cpu_run
    card = json.loads((run.model_dir("sft") / "consistbench_train.json").read_text())
    assert card["training"]["examples"] == "rows" and card["training"]["alpha"] == 0.0
    assert card["data"]["triplets"] == 0 and card["data"]["path"] == str(run.train_file.resolve())
    tok = doctor.load_tokenizer(run.base_model())
    rows = load_data(run.train_file)
    expected = Counter(tuple(encode_row(tok, r.context, r.question, r.reference)["input_ids"]) for r in rows)
    assert Counter(log["rows_seen"]["sft"]) == expected  # every row of the triplet models' data, once
    assert card["data"]["training_sequences_per_epoch"] == len(rows)
    ablation = json.loads((run.model_dir("sft_triplet_expanded") / "consistbench_train.json").read_text())
    assert ablation["training"]["examples"] == "triplets" and ablation["training"]["alpha"] == 0.0
    assert ablation["data"]["triplets"] > 0 and "sft_triplet_expanded" not in log["rows_seen"]


@pytest.mark.slow
def test_temperature_is_chosen_on_dev_and_installed(cpu_run):
    run, log = cpu_run
    records = read_records(run.search_dir / "temperature.jsonl")
    assert [r["temperature"] for r in records] == TEMPERATURES
    weights = [json.loads(Path(r["weights_file"]).read_text())["weights"]["layers"] for r in records]
    assert weights[0] != weights[2]  # the temperatures give different weights
    chosen = json.loads((run.search_dir / "temperature_chosen.json").read_text())
    assert chosen["temperature"] == 0.5 and chosen["task"] == DEV
    final = sha(run.model_dir("merged") / "model.safetensors")
    assert final == log["eval_sha"]["t0.5"] and final != log["merge_sha"]
    assert "t0.5" in (run.dir / "merge.yaml").read_text()


@pytest.mark.slow
def test_search_and_temperature_never_touch_the_test_task(cpu_run):
    run, log = cpu_run
    before = log["before_eval_stage"] + [e for e in log["evals"] if e[0].startswith("search/")]
    assert before and {e[1] for e in before} == {(DEV,)}  # every evaluation of the search: dev only
    assert {e[1] for e in log["evals"] if e[0].startswith("eval/")} == {(run.preset.task,)}
    assert all(e[2] is None for e in log["evals"])  # the preset leaves the device to lm-eval
    assert {e[3] for e in log["evals"]} == {"default"}  # through the default generation backend


@pytest.mark.slow
def test_table_has_paired_comparisons_from_the_compare_module(cpu_run):
    from consistbench.benchmark.compare import compare, load_side

    run, log = cpu_run
    doc = log["doc"]
    assert [r["model"] for r in doc["rows"]] == ["base", "sft", "sft_triplet_expanded", "sft_triplet_all",
                                                 "sft_triplet_how_to", "sft_triplet_plural_article",
                                                 "sft_triplet_paraphrase", "merged"]
    paired = doc["paired"]
    assert [c["b"] for c in paired] == ["base", "sft", "sft_triplet_paraphrase"]  # best specialised by EM+RS
    merged = load_side(run.eval_dir("merged"), run.preset.task)
    for c in paired:
        expected = compare(merged, load_side(run.eval_dir(c["b"]), run.preset.task))
        assert set(c["metrics"]) == {"em", "rs", "bs"} and c["shared_groups"] == N_GROUPS
        for k, m in c["metrics"].items():
            for f in ("a", "b", "difference", "low", "high", "p_value", "significant"):
                assert m[f] == expected["metrics"][k][f], (c["b"], k, f)
    vs_base = paired[0]["metrics"]
    # merged answers every group consistently, the base none: EM 1.0 vs 0.0, significant
    assert (vs_base["em"]["a"], vs_base["em"]["b"], vs_base["em"]["difference"]) == (1.0, 0.0, 1.0)
    assert vs_base["em"]["low"] > 0 and vs_base["em"]["p_value"] < 0.05
    md = (run.results_dir / "results.md").read_text()
    em_line = next(line for line in md.splitlines() if line.startswith("| base | ") and "| EM |" in line)
    assert f"{vs_base['em']['difference']:+.4f}" in em_line and f"{vs_base['em']['p_value']:.3f}" in em_line
    assert "| specialised: paraphrase |" in md
    assert doc["search_chosen"]["id"] == "s2" and doc["temperature_chosen"]["temperature"] == 0.5
    assert f"Chosen on `{DEV}`: alpha 1, learning_rate 0.002, margin 0.5, max_steps 1, pooling_layer -1 (s2); " \
           "weights temperature 0.5." in md
