"""The reproduction under ``accelerate launch``: the shipped configs are accelerate's own, and the
launched jobs give what one process gives.

On CPU, ``accelerate launch`` with the shipped ``ddp`` config and ``--num-processes 2`` starts two
processes through torch.distributed's launcher; the jobs join them over gloo (the weights worker and
``consistbench eval`` join them over gloo on the CPU). DeepSpeed is not a dependency and not in the test
environment: its config is checked as far as accelerate checks it without DeepSpeed (the launch
arguments, the environment it would hand the processes, DeepSpeed's plugin settings); FSDP's plugin is
built from the environment its config gives.
"""

from __future__ import annotations

import copy
import glob
import json
import os
from pathlib import Path

import pytest

from consistbench.reference_method.reproduce.launch import CONFIG_DIR, SHIPPED, Launcher
from consistbench.reference_method.reproduce.presets import PRESETS, SPECIALISED
from consistbench.reference_method.reproduce.run_folder import Run
from consistbench.reference_method.weights_file import options_from


def _accelerate_env(name: str, **flags) -> tuple:
    """What ``accelerate launch --config_file NAME.yaml`` decides before starting processes: its parsed
    arguments and the environment the processes would get."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    argv = ["--config_file", str(CONFIG_DIR / f"{name}.yaml")]
    for k, v in flags.items():
        argv += [f"--{k}", str(v)]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args([*argv, "train.py"]))
    if args.use_deepspeed:  # as accelerate's launch_command does before its DeepSpeed launcher
        args.deepspeed_fields_from_accelerate_config = ",".join([*defaults.deepspeed_config, "mixed_precision"])
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return args, defaults, env


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_are_valid_accelerate_configs(name):
    args, defaults, env = _accelerate_env(name)
    launcher = Launcher.from_options("accelerate", name)
    layout = launcher.settings()
    assert layout["num_processes"] == args.num_processes and layout["num_machines"] == args.num_machines
    assert {"ddp": "ddp", "ddp-multinode": "ddp", "deepspeed-zero3": "deepspeed", "fsdp": "fsdp"}[name] == layout["sharding"]
    if name.startswith("ddp"):
        assert args.multi_gpu and env["ACCELERATE_MIXED_PRECISION"] == "no"  # precision from the preset (bf16)
    if name == "ddp-multinode":
        assert args.num_machines == 2 and args.num_processes == 16 and args.main_process_port == 29500


def test_deepspeed_config_as_deepspeed_would_get_it(monkeypatch):
    from accelerate.utils import DeepSpeedPlugin

    args, _, env = _accelerate_env("deepspeed-zero3", num_processes=4)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
    assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"  # the final model gathered on save
    assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in env  # left to Trainer's "auto"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == 3
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_optimizer"]["device"] == "none" and zero["offload_param"]["device"] == "none"


def test_fsdp_config_builds_accelerates_plugin(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin

    _, _, env = _accelerate_env("fsdp")
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # syncing module states needs a GPU (the plugin asks for the current device); the rest is checked here
    monkeypatch.setenv("FSDP_SYNC_MODULE_STATES", "false")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    plugin = FullyShardedDataParallelPlugin()
    assert "FULL_SHARD" in str(plugin.sharding_strategy)
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
    assert not plugin.activation_checkpointing  # from the training settings (gradient_checkpointing) instead


def test_deepspeed_config_fills_trainers_values(monkeypatch):
    """Where DeepSpeed is installed (not in this project's environment: skipped there), transformers'
    processing of the ZeRO-3 config for Trainer accepts it and fills its batch and accumulation."""
    pytest.importorskip("deepspeed")
    from accelerate.utils import DeepSpeedPlugin
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from consistbench.reference_method.consistency_config import ConsistencyConfig

    _, _, env = _accelerate_env("deepspeed-zero3", num_processes=1)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    hf = HfTrainerDeepSpeedConfig(DeepSpeedPlugin().deepspeed_config)
    hf.trainer_config_process(ConsistencyConfig(output_dir="unused", use_cpu=True, per_device_train_batch_size=4,
                                                gradient_accumulation_steps=4))
    assert (hf.config["train_micro_batch_size_per_gpu"], hf.config["gradient_accumulation_steps"]) == (4, 4)
    assert hf.config["zero_optimization"]["stage"] == 3


# ---------------------------------------------------------------------------------------------
# multi-process jobs on CPU (slow)

@pytest.fixture(scope="module")
def pico(tmp_path_factory, smollm2_dir):
    from tests.pico_models import family

    return family(tmp_path_factory.mktemp("pico"), smollm2_dir)


def _pico_run(pico, root: Path, launcher: Launcher) -> Run:
    """A run folder whose base and specialised models are the pico family (as if trained)."""
    p = copy.deepcopy(PRESETS["cpu"])
    p.name, p.model = "test-launch", str(pico["base"])
    p.weights = {"max_queries": 12, "batch_size": 4}
    p.temperatures = []
    run = Run(p, root, log=lambda _: None, launcher=launcher)
    for t, ft in zip(SPECIALISED, ("ft1", "ft2", "ft3")):
        run.model_dir(f"sft_triplet_{t}").parent.mkdir(parents=True, exist_ok=True)
        os.symlink(pico[ft], run.model_dir(f"sft_triplet_{t}"))
    return run


@pytest.mark.slow
def test_weights_and_merge_with_two_processes_equal_one(pico, tmp_path, monkeypatch, capfd):
    from safetensors.torch import load_file

    from consistbench.reference_method.consistency_weights import DEFAULT_DEV, compute_weights
    from consistbench.reference_method.reproduce.merge_stages import stage_merge, stage_weights

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    two = _pico_run(pico, tmp_path / "two", Launcher.from_options("accelerate", "ddp", num_processes=2))
    one = _pico_run(pico, tmp_path / "one", Launcher())
    for run in (two, one):
        stage_weights(run)
        stage_merge(run)
    said = capfd.readouterr().out
    # the four models (base and three specialised) dealt out to the two processes, two each
    assert said.count("[weights] process 1:") == 2 and said.count("[weights] process 0:") == 2
    docs = [json.loads(r.weights_file.read_text()) for r in (two, one)]
    direct = compute_weights(pico["base"], [pico[f] for f in ("ft1", "ft2", "ft3")], DEFAULT_DEV,
                             options_from(max_queries=12, batch_size=4), labels=list(SPECIALISED))
    for doc in (*docs, direct):  # two processes, one process and the library's own one-process path
        assert doc["dev"]["sha256"] == direct["dev"]["sha256"] and doc["dev"]["n_queries"] == direct["dev"]["n_queries"]
        for part in ("weights", "distances"):
            for a, b in zip([doc[part]["embed"], *doc[part]["layers"], doc[part]["final"]],
                            [direct[part]["embed"], *direct[part]["layers"], direct[part]["final"]]):
                assert a == pytest.approx(b, abs=1e-9), part
    merged = [load_file(str(r.model_dir("merged") / "model.safetensors")) for r in (two, one)]
    assert merged[0].keys() == merged[1].keys()
    for k in merged[0]:
        assert (merged[0][k] - merged[1][k]).abs().max().item() <= 1e-7, k
    assert not two.seed_file(two.similarities_file, 0).with_name("similarities.npz.parts").exists()


@pytest.fixture(scope="module")
def varied(tiny_llama_dir, tmp_path_factory) -> Path:
    """The tiny Llama with larger random weights, so its answers differ between prompts."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    out = tmp_path_factory.mktemp("varied")
    config = AutoConfig.from_pretrained(tiny_llama_dir)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(out)
    return out


def _samples(folder: Path) -> list[tuple]:
    (path,) = glob.glob(str(folder / "**" / "samples_consistency_mini_*.jsonl"), recursive=True)
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return sorted((r["doc"]["id"], r["doc"]["question"], r["filtered_resps"][0]) for r in rows)


@pytest.mark.slow
def test_evaluation_with_two_processes_equals_one(varied, tmp_path, monkeypatch):
    from consistbench.reference_method.reproduce.evaluation import evaluate_model

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = copy.deepcopy(PRESETS["cpu-mini"])
    p.name, p.model, p.eval_device = "test-launch", str(varied), None
    folders = {}
    for label, launcher in (("two", Launcher.from_options("accelerate", "ddp", num_processes=2)), ("one", Launcher())):
        run = Run(p, tmp_path / label, log=lambda _: None, launcher=launcher)
        folders[label] = run.eval_dir("base")
        evaluate_model(run, "eval base", varied, folders[label], "consistency_mini")
    one, two = _samples(folders["one"]), _samples(folders["two"])
    assert len(one) > 30 and one == two  # the same rows with the same responses
    assert len({r[2] for r in one}) > 1  # the answers differ between prompts: the comparison is not vacuous
    res = [json.loads(Path(glob.glob(str(f / "**" / "results_*.json"), recursive=True)[0]).read_text())
           for f in (folders["one"], folders["two"])]
    for k in ("em,none", "rs,none", "rougeL,none"):
        assert res[0]["results"]["consistency_mini"][k] == pytest.approx(res[1]["results"]["consistency_mini"][k], abs=1e-12)


@pytest.mark.slow
def test_training_with_two_processes_equals_one(tiny_llama_dir, tmp_path, monkeypatch):
    """The train stage's job under the shipped `ddp` config with 2 processes (gloo on CPU), 1 triplet per
    process, trains the model the in-process call trains with 2 triplets a step (the same global batch):
    the settings file carries every setting (the seed of a seeded arm too), the same loss history and the
    same LoRA-merged weights (SGD, so a rounding difference stays that size)."""
    import shutil

    from safetensors.torch import load_file

    from consistbench.reference_method.doctor import fix
    from consistbench.reference_method.reproduce.jobs import run_config, train_model
    from consistbench.reference_method.reproduce.stages import run_stages
    from consistbench.reference_method.triplets import MiningConfig

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    base = tmp_path / "base"
    fix(tiny_llama_dir, base)
    p = copy.deepcopy(PRESETS["cpu"])
    p.name, p.model, p.search_grid, p.temperatures = "test-launch", str(base), [], []
    p.synth = {"types": list(SPECIALISED), "n": 1, "seed": 0, "limit": 6, "paraphraser": "wordnet"}
    train = dict(p.train, max_length=1024, max_steps=3, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant",
                 warmup_steps=0, logging_steps=1, save_steps=100, margin=1.0, lora_r=4, lora_alpha=8)
    name = "sft_triplet_all@s1"  # a seeded arm: the seed must travel in the settings file too
    cards, weights = {}, {}
    for label, launcher, batch in (("one", Launcher(), 2), ("two", Launcher.from_options(
            "accelerate", "ddp", num_processes=2, main_process_port=29547), 1)):
        p.train = dict(train, per_device_train_batch_size=batch)
        run = Run(p, tmp_path / label, log=lambda _: None, launcher=launcher)
        if label == "two":  # the same data as the first run
            shutil.copytree(tmp_path / "one" / "synth", run.dir / "synth")
        run_stages(run, ("base", "synth", "select"))
        out = run.model_dir(name)
        train_model(run, f"train {name}", out, "all", run_config(run, name, 1.0), MiningConfig(negatives="random"))
        cards[label] = json.loads((out / "consistbench_train.json").read_text())
        weights[label] = load_file(str(out / "model.safetensors"))
    assert (tmp_path / "two" / "launch" / "train" / f"models-{name}.yaml").is_file()
    t1, t2 = cards["one"]["training"], cards["two"]["training"]
    assert t1["seed"] == t2["seed"] == 1 and (t1["per_device_train_batch_size"], t2["per_device_train_batch_size"]) == (2, 1)
    assert {k: v for k, v in t1.items() if k != "per_device_train_batch_size"} == \
        {k: v for k, v in t2.items() if k != "per_device_train_batch_size"}
    h1, h2 = cards["one"]["loss_history"], cards["two"]["loss_history"]
    assert [h["step"] for h in h2] == [h["step"] for h in h1] and len(h1) >= 3
    for a, b in zip(h1, h2):
        for key in ("ce", "triplet", "loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
    start = load_file(str(base / "model.safetensors"))
    key = "model.layers.0.self_attn.q_proj.weight"
    assert (weights["one"][key] - start[key]).abs().max().item() > 1e-4  # trained
    for k in weights["one"]:
        assert (weights["two"][k] - weights["one"][k]).abs().max().item() <= 1e-6, k
