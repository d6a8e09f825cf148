"""`consistbench ref reproduce --preset cpu-fair`: equal epochs, the dose-matched SFT row, seeds, the null
merges, the weights' distance and temperature on dev, the triplet-term search, the checkpoint curve, the
table with budgets, seed means and TOST; resumed runs, a refused changed preset, a model rebuilt from its
kept adapter.

One tiny run of the whole preset (tiny random Llama, a few train questions, lm-eval replaced by a fake
that writes results and samples the way run_eval does) is shared by the slow tests of this module.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.reproduce.presets import (
    DEFAULT_SEEDED_ARMS,
    PRESETS,
    SPECIALISED,
    Preset,
    arm_seeds,
    seeded,
    training_runs,
)
from consistbench.reference_method.reproduce.run_folder import Run, read_records
from consistbench.reference_method.reproduce.stages import STAGES, run_stages

from tests.conftest import make_row

DEV = "consistency_dev"
TEST_TASK = PRESETS["cpu-fair"].task
N_GROUPS = 30
TEMPERATURES = [0.05, 5.0]
DISTANCES = ["paper", "centered"]
TA_SCALES = [0.5, 1.0]
CURVE = [0.25, 0.5, 0.75, 1.0]
# dev scores (em, rs) by candidate folder; anything not listed scores (0.2, 0.2)
DEV_SCORES = {"centered-t5": (0.6, 0.6), "paper-t0.05": (0.3, 0.3), "scale1": (0.5, 0.5), "scale0.5": (0.3, 0.3)}
# test-task evaluation: share of consistent groups per arm (seed 1 one group fewer)
CONSISTENT = {"base": 0.0, "sft": 0.3, "sft_dose": 0.3, "sft_triplet_expanded": 0.3, "sft_triplet_all": 0.4,
              "sft_triplet_how_to": 0.2, "sft_triplet_plural_article": 0.1, "sft_triplet_paraphrase": 0.5,
              "merged": 0.6, "uniform": 0.6, "task_arithmetic": 0.5}


def tiny_fair_preset(model: Path) -> Preset:
    p = copy.deepcopy(PRESETS["cpu-fair"])
    p.name = "test-fair"
    p.model = str(model)
    p.synth = {"types": list(SPECIALISED), "n": 1, "seed": 0, "limit": 10, "paraphraser": "wordnet"}
    p.train = dict(p.train, save_steps=100, max_length=1024, per_device_train_batch_size=4, warmup_steps=0)
    p.weights = {"max_queries": 6, "batch_size": 4}
    p.epochs = 1.0
    p.seeds = [0, 1]
    p.temperatures = list(TEMPERATURES)
    p.weights_distances = list(DISTANCES)
    p.ta_scales = list(TA_SCALES)
    p.triplet_search = {"pooled_positions": ["question"], "pooling_layers": [-1, "middle"], "negatives": ["bottom"],
                        "margin_quantiles": [0.5], "alphas": [1.0], "min_active_share": 0.05, "min_grad_ratio": 0.0,
                        "survivors": 2, "screen_triplets": 4, "brief_steps": 1}
    p.eval_checkpoints = list(CURVE)
    return p


def fake_rows() -> list[dict]:
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
    arm, seed = name.split("@s") if "@s" in name else (name, "0")
    consistent = round(CONSISTENT[arm] * N_GROUPS) - int(seed)
    out = []
    for i, row in enumerate(fake_rows()):
        g = int(row["group_id"][3:])
        resp = f"Do thing {g} with the tool." if g < consistent else f"{name} says {i * 7 + 1000} about {row['variant_type']}"
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


def _dev_key(folder: Path) -> str:
    parts = folder.parts
    if "temperature" in parts:
        return folder.parent.name  # search/temperature/<dist>-t<t>/eval
    return folder.name  # search/ta_eval/scale<s>, search/checkpoint_eval/step<n>, search/triplet_eval/<id>


@pytest.fixture(scope="module")
def fair_run(fixed_llama, tmp_path_factory):
    """The tiny cpu-fair run: crashed once while scoring task arithmetic on dev, continued, run a third time."""
    from consistbench.benchmark import evaluate
    from consistbench.reference_method import train as train_mod

    run_dir = tmp_path_factory.mktemp("fair") / "run"
    log = {"evals": [], "trained": [], "configs": {}, "crash_on": {"scale0.5"}, "dev_models": {}}
    real_train = train_mod.train

    def recording_train(model_dir, data, vtype, out, config, *a, **k):
        log["trained"].append(str(Path(out).relative_to(run_dir)))
        log["configs"][str(Path(out).relative_to(run_dir))] = (config.seed, config.num_train_epochs, config.max_steps,
                                                               config.alpha, config.pooling_layer, Path(data).name)
        return real_train(model_dir, data, vtype, out, config, *a, **k)

    def fake_run_eval(opts):
        folder = Path(opts.output_path)
        model = Path(opts.model_args.split(",")[0].split("=", 1)[1])
        assert (model / "config.json").is_file()
        (task,) = opts.tasks
        log["evals"].append((str(folder.relative_to(run_dir)), task))
        if task == DEV:
            key = _dev_key(folder)
            if key in log["crash_on"]:
                log["crash_on"].discard(key)
                raise RuntimeError(f"simulated crash while evaluating {key}")
            if key.startswith("step"):  # the checkpoint curve: the middle of the grid is best
                em = rs = 0.7 if key == f"step{log['half_step']}" else 0.2
            elif folder.parent.name == "triplet_eval":  # the triplet search: the middle layer is best
                em = rs = 0.8 if "-1-" not in key else 0.2
            else:
                em, rs = DEV_SCORES.get(key, (0.2, 0.2))
            log["dev_models"][key] = sha(model / "model.safetensors")
            write_fake_eval(folder, task, {"em": em, "rs": rs, "rougeL": 0.1, "bleu": 0.1, "bs": 0.5})
        else:
            arm, seed = folder.name.split("@s") if "@s" in folder.name else (folder.name, "0")
            share = CONSISTENT[arm] - int(seed) / N_GROUPS
            write_fake_eval(folder, task, {"em": share, "rs": share, "rougeL": 0.2, "bleu": 0.1, "bs": 0.7},
                            fake_samples(folder.name))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate, "run_eval", fake_run_eval)
        mp.setattr(train_mod, "train", recording_train)
        run = Run(tiny_fair_preset(fixed_llama), run_dir, log=lambda _: None)
        run_stages(run, ("base", "synth", "select", "search", "triplet_search", "train"))
        card = json.loads((run.model_dir("sft_triplet_all") / "consistbench_train.json").read_text())
        log["half_step"] = next(s for s in range(card["global_step"] + 1)
                                if (run.model_dir("sft_triplet_all").with_name("sft_triplet_all.checkpoints")
                                    / f"checkpoint-{s}").is_dir() and s >= card["global_step"] / 2)
        log["after_train"] = list(log["trained"])
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_stages(run, ("checkpoints", "weights", "merge", "temperature", "null_merges"))
        log["crash_records"] = [r["scale"] for r in read_records(run.search_dir / "ta.jsonl")]
        n_evals = len(log["evals"])
        run_stages(run)
        log["rerun_dev_evals"] = [e[0] for e in log["evals"][n_evals:] if e[1] == DEV]
        log["doc"] = json.loads((run.results_dir / "results.json").read_text())
        log["md"] = (run.results_dir / "results.md").read_text()
        n_trained, n_evals = len(log["trained"]), len(log["evals"])
        run_stages(Run(tiny_fair_preset(fixed_llama), run_dir, log=lambda _: None))
        log["third"] = (len(log["trained"]) - n_trained, len(log["evals"]) - n_evals)
    return run, log


# ---------------------------------------------------------------------------------------------
# the preset (fast)

def test_cpu_fair_preset_settings():
    p = PRESETS["cpu-fair"]
    assert p.model is None and p.task == "consistency" and p.search_task == DEV
    assert p.train["use_lora"] and "lora_layers" not in p.train and p.train["max_length"] <= 384
    assert p.epochs == 2 and "max_steps" not in p.train and not p.search_grid  # equal epochs, no step caps
    assert p.seeds == [0, 1, 2] and set(p.seeded_arms) == set(DEFAULT_SEEDED_ARMS)
    assert p.equivalence_margin == 0.03 and p.sft_dose and p.sft_ablation and p.sft_examples == "rows"
    assert set(p.null_merges) == {"uniform", "task_arithmetic"} and len(p.ta_scales) >= 3
    assert set(p.weights_distances) == {"paper", "centered"} and len(p.temperatures) >= 2
    ts = p.triplet_search
    assert "middle" in ts["pooling_layers"] and {"bottom", "hard"} <= set(ts["negatives"])
    assert p.train.get("share_prefix") is True
    # every arm once per seed where seeded; merged and the null merges follow their specialists
    names = [n for n, _, _ in training_runs(p)]
    assert names.count("sft_dose") == 1 and "sft_dose@s1" not in names
    assert {"sft@s2", "sft_triplet_all@s1", "sft_triplet_how_to@s2"} <= set(names)
    assert arm_seeds("merged", p) == [0, 1, 2] and arm_seeds("sft_triplet_expanded", p) == [0]
    assert seeded("sft", 0, p) == "sft" and seeded("sft", 2, p) == "sft@s2"


def test_cpu_fair_configs_have_equal_epochs_and_the_seed(tmp_path, fixed_llama):
    from consistbench.reference_method.reproduce.jobs import run_config

    run = Run(tiny_fair_preset(fixed_llama), tmp_path / "run", log=lambda _: None)
    for name, _, alpha in training_runs(run.preset):
        cfg = run_config(run, name, alpha, None, {"pooling_layer": "middle", "margin": 0.3, "alpha": 0.5})
        assert (cfg.num_train_epochs, cfg.max_steps) == (1.0, -1), name
        assert cfg.seed == (1 if name.endswith("@s1") else 0), name
        if alpha > 0:
            assert (cfg.alpha, cfg.pooling_layer, cfg.margin) == (0.5, 1, 0.3), name  # middle of 2 layers
        else:
            assert (cfg.alpha, cfg.pooling_layer, cfg.margin) == (0.0, -1, 0.2), name


@pytest.mark.parametrize("change, message", [
    (dict(seeds=[0, 0]), "seeds must be distinct"),
    (dict(null_merges=["uniform", "ties"]), "'ties'"),
    (dict(ta_scales=[]), "ta_scales go together"),
    (dict(eval_checkpoints=[0.3, 0.5]), "multiples of the smallest"),
    (dict(eval_checkpoints=[0.0, 1.0]), "in \\(0, 1\\]"),
    (dict(triplet_search={"pooling_layer": [1]}), "'pooling_layer'"),
    (dict(epochs=None), "sft_dose"),
    (dict(seeded_arms=["sft", "merged"]), "'merged'"),
    (dict(search_task=TEST_TASK), "dev task only"),
])
def test_contradictory_fair_settings_are_refused(tmp_path, change, message):
    p = copy.deepcopy(PRESETS["cpu-fair"])
    for k, v in change.items():
        setattr(p, k, v)
    with pytest.raises(ConsistbenchError, match=message):
        Run(p, tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_stages_in_order():
    assert list(STAGES) == ["base", "synth", "select", "search", "triplet_search", "train", "checkpoints", "weights",
                            "merge", "temperature", "null_merges", "eval", "table"]


def test_stratified_subset_of_whole_groups():
    from consistbench.benchmark.taskdata import task_records
    from consistbench.reference_method.reproduce.evaluation import stratified_groups

    records = task_records(subset="all", split="test")
    a, b = stratified_groups(records, 600), stratified_groups(records, 600)
    assert a == b and len(a) == 600  # fixed: the same groups every time
    types = {}
    for r in records:
        types.setdefault(r["group_id"], set()).add(r["variant_type"])
    for kind in {frozenset(t) for t in types.values()}:  # each stratum in proportion (within one group)
        total = sum(1 for t in types.values() if frozenset(t) == kind)
        chosen = sum(1 for g in a if frozenset(types[g]) == kind)
        assert abs(chosen - 600 * total / len(types)) < 1.0 + 1e-9, kind


# ---------------------------------------------------------------------------------------------
# the tiny run (slow)

@pytest.mark.slow
def test_every_arm_trains_its_epochs_with_its_seed(fair_run):
    run, log = fair_run
    trained = log["after_train"]
    expected = [f"models/{n}" for n, _, _ in training_runs(run.preset)]
    assert [t for t in trained if t.startswith("models/")] == expected
    for name in expected:
        seed, epochs, max_steps, alpha, layer, data = log["configs"][name]
        assert (epochs, max_steps) == (1.0, -1) and seed == (1 if name.endswith("@s1") else 0), name
        assert data == ("train_dose.jsonl" if name.endswith("sft_dose") else "train.jsonl"), name
        if alpha > 0:
            assert layer == 1, name  # the triplet search chose the middle layer
    for name in expected:  # each LoRA model keeps its adapter and card beside it; no checkpoints left but the curve's
        out = run.dir / name
        assert (out.with_name(out.name + ".adapter") / "adapter_model.safetensors").is_file(), name
        assert (out.with_name(out.name + ".card.json")).is_file(), name
        assert not out.with_name(out.name + ".checkpoints").exists(), name


@pytest.mark.slow
def test_dose_matched_sft_sees_the_specialists_sequences(fair_run):
    run, _ = fair_run
    spec = sum(json.loads((run.model_dir(f"sft_triplet_{t}") / "consistbench_train.json").read_text())
               ["data"]["training_sequences_per_epoch"] for t in SPECIALISED)
    dose = [json.loads(line) for line in run.dose_file.read_text().splitlines()]
    group = max(len([r for r in dose if r["group_id"] == g]) for g in {r["group_id"] for r in dose})
    assert spec <= len(dose) < spec + group  # whole groups until the specialists' count is reached
    assert len({r["id"] for r in dose}) == len(dose)  # copies renamed: valid data
    budgets = json.loads((run.dir / "budgets.json").read_text())
    assert budgets["sft_dose"]["sequences"] == len(dose)
    assert abs(budgets["sft_dose"]["sequences"] - sum(budgets[f"sft_triplet_{t}"]["sequences"] for t in SPECIALISED)) < group


@pytest.mark.slow
def test_triplet_search_screens_then_trains_the_survivors(fair_run):
    run, log = fair_run
    screen = read_records(run.search_dir / "triplet_screen.jsonl")
    assert [(r["pooling_layer"], r["quantile"]) for r in screen] == [(-1, 0.5), ("middle", 0.5)]
    for r in screen:
        assert 0.0 <= r["active"] <= 1.0 and r["margin"] >= 0 and "grad_ratio" in r
        assert r["kept"] == (r["active"] >= 0.05)
    chosen = json.loads((run.search_dir / "triplet_chosen.json").read_text())
    if any(r["kept"] for r in screen):
        assert chosen["setting"]["pooling_layer"] == "middle" and chosen["task"] == DEV
        assert len(read_records(run.search_dir / "triplet_search.jsonl")) == sum(r["kept"] for r in screen)
    assert not (run.search_dir / "triplet_models").exists()


@pytest.mark.slow
def test_checkpoint_curve_on_dev(fair_run):
    run, log = fair_run
    records = read_records(run.search_dir / "checkpoints.jsonl")
    assert [r["fraction"] for r in records] == CURVE and all(r["task"] == DEV for r in records)
    chosen = json.loads((run.search_dir / "checkpoints_chosen.json").read_text())
    assert chosen["step"] == log["half_step"] and chosen["inside_grid"]
    assert (run.search_dir / "checkpoints.png").read_bytes()[:4] == b"\x89PNG"
    assert not run.model_dir("sft_triplet_all").with_name("sft_triplet_all.checkpoints").exists()


@pytest.mark.slow
def test_distance_and_temperature_chosen_on_dev_and_applied_to_every_seed(fair_run):
    run, log = fair_run
    records = read_records(run.search_dir / "temperature.jsonl")
    assert [(r["distance"], r["temperature"]) for r in records] == [(d, t) for d in DISTANCES for t in TEMPERATURES]
    chosen = json.loads((run.search_dir / "temperature_chosen.json").read_text())
    assert (chosen["distance"], chosen["temperature"]) == ("centered", 5.0)
    assert sha(run.model_dir("merged") / "model.safetensors") == log["dev_models"]["centered-t5"]
    seed1 = json.loads(run.seed_file(run.dir / "weights" / "chosen.json", 1).read_text())
    assert seed1["options"]["distance"] == "centered" and seed1["options"]["temperature"] == 5.0
    assert "sft_triplet_how_to@s1" in seed1["models"][0]["path"]
    assert (run.model_dir("merged@s1") / "model.safetensors").is_file()
    doc = json.loads(Path(records[0]["weights_file"]).read_text())
    assert {"paper", "centered"} <= set(doc["all_distances"])  # both kinds' per-layer distances kept
    assert (run.search_dir / "distances.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_null_merges_per_seed_and_the_scale_on_dev(fair_run):
    run, log = fair_run
    assert log["crash_records"] == []  # the crash came while scoring the first scale
    assert log["rerun_dev_evals"].count("search/ta_eval/scale0.5") == 1  # scored once, after the crash
    chosen = json.loads((run.search_dir / "ta_chosen.json").read_text())
    assert chosen["scale"] == 1.0 and chosen["at_edge"] and chosen["grid"] == TA_SCALES
    assert sha(run.model_dir("task_arithmetic") / "model.safetensors") == log["dev_models"]["scale1"]
    for name in ("uniform", "uniform@s1", "task_arithmetic@s1"):
        assert (run.model_dir(name) / "model.safetensors").is_file(), name
    card = (run.model_dir("task_arithmetic@s1") / "README.md").read_text()
    assert "sft_triplet_how_to@s1" in card or "how_to" in card


@pytest.mark.slow
def test_table_seed_means_budgets_and_equivalence(fair_run):
    from consistbench.benchmark.compare import compare, load_side

    run, log = fair_run
    doc, md = log["doc"], log["md"]
    rows = {r["model"]: r for r in doc["rows"]}
    assert list(rows) == run.arms()
    assert rows["sft"]["n_seeds"] == 2 and rows["sft"]["metrics"]["em"] == pytest.approx(0.3 - 0.5 / N_GROUPS)
    assert "n_seeds" not in rows["sft_dose"] and rows["sft_dose"]["metrics"]["em"] == pytest.approx(0.3)
    for name in ("sft", "sft_dose", "sft_triplet_all", "sft_triplet_how_to"):
        b = doc["budgets"][name]
        assert b["epochs"] == 1.0 and b["updates"] > 0 and b["tokens"] > b["sequences"] > 0, name
    paired = {c["b"]: c for c in doc["paired"]}
    assert list(paired) == ["base", "sft", "sft_dose", "sft_triplet_paraphrase", "uniform", "task_arithmetic"]
    assert paired["sft"]["runs"] == {"a": 2, "b": 2} and paired["sft_dose"]["runs"] == {"a": 2, "b": 1}
    expected = compare([load_side(run.eval_dir(n), TEST_TASK) for n in ("merged", "merged@s1")],
                       [load_side(run.eval_dir(n), TEST_TASK) for n in ("uniform", "uniform@s1")],
                       margins={"em": 0.03, "rs": 0.03})
    for k in ("em", "rs"):
        got = paired["uniform"]["metrics"][k]
        assert got["tost_p"] == expected["metrics"][k]["tost_p"] and got["margin"] == 0.03
        assert got["equivalent"] == expected["metrics"][k]["equivalent"]
    assert "tost_p" not in paired["uniform"]["metrics"]["bs"]
    assert "means over 2 seeds" in md and "| SFT * |" in md
    assert "Training budgets" in md and "| SFT (dose-matched: the specialists' sequences) | 1 |" in md
    assert "Task arithmetic's best dev scale (1) is at the edge of its grid (0.5, 1)" in md
    assert "weights distance centered, weights temperature 5" in md and "TOST p" in md


@pytest.mark.slow
def test_a_finished_run_redoes_nothing(fair_run):
    _, log = fair_run
    assert log["third"] == (0, 0)


@pytest.mark.slow
def test_a_run_refuses_a_changed_preset(fair_run, fixed_llama):
    run, _ = fair_run
    other = tiny_fair_preset(fixed_llama)
    other.seeds = [0, 2]
    with pytest.raises(ConsistbenchError, match="other settings \\(seeds\\)"):
        Run(other, run.dir, log=lambda _: None).record()


@pytest.mark.slow
def test_a_lora_model_is_rebuilt_from_its_adapter(fair_run, fixed_llama, monkeypatch):
    from safetensors.torch import load_file

    from consistbench.reference_method import train as train_mod
    from consistbench.reference_method.reproduce.stages import stage_train

    run, _ = fair_run
    name = "sft_triplet_how_to@s1"
    before = load_file(str(run.model_dir(name) / "model.safetensors"))
    moved = run.model_dir(name).with_name("moved")
    run.model_dir(name).rename(moved)

    def refuse(*a, **k):
        raise AssertionError("trained again instead of rebuilt")

    monkeypatch.setattr(train_mod, "train", refuse)
    stage_train(Run(tiny_fair_preset(fixed_llama), run.dir, log=lambda _: None))
    after = load_file(str(run.model_dir(name) / "model.safetensors"))
    assert before.keys() == after.keys()
    for k in before:
        assert (before[k] - after[k]).abs().max().item() <= 1e-6, k
    card = json.loads((run.model_dir(name) / "consistbench_train.json").read_text())
    assert card["rebuilt_from"].endswith(name + ".adapter")
