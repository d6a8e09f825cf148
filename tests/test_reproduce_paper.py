"""`consistbench ref reproduce --preset paper`: the paper's study, its memory plan and the dry run, the
launcher's commands, the several-machine job board. No GPU and no weights: the dry run reads the
``config.json`` fixtures of Llama-3.1-8B-Instruct and Gemma-3-12B-it (tests/data/configs/)."""

from __future__ import annotations

import json
import sys
import threading
import tomllib
from pathlib import Path

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.reproduce.launch import CONFIG_DIR, SHIPPED, JobBoard, Launcher, display
from consistbench.reference_method.reproduce.memory import lora_params, read_shape, training_memory
from consistbench.reference_method.reproduce.presets import PRESETS, training_runs
from consistbench.reference_method.reproduce.run_folder import Run

ROOT = Path(__file__).resolve().parents[1]
LLAMA = ROOT / "tests/data/configs/llama-3.1-8b-instruct"
GEMMA = ROOT / "tests/data/configs/gemma-3-12b-it"
ONE = {"distributed_type": "NO", "sharding": "none", "num_processes": 1, "per_machine": 1, "num_machines": 1,
       "machine_rank": 0, "mixed_precision": "no", "zero_stage": None, "offload": False}


def test_paper_preset_follows_the_paper():
    p = PRESETS["paper"]
    assert p.model is None and p.task == "consistency" and p.search_task == "consistency_dev"
    assert p.epochs == 2 and p.sft_examples == "rows" and p.sft_ablation and p.paired  # plain SFT, ablation row
    assert [n for n, _, _ in training_runs(p)] == ["sft_triplet_how_to", "sft_triplet_plural_article",
                                                   "sft_triplet_paraphrase", "sft_triplet_all", "sft",
                                                   "sft_triplet_expanded"]
    assert len(p.search_grid) >= 4 and not any("max_steps" in s for s in p.search_grid) and p.temperatures
    t = p.train
    assert t["use_lora"] and t["lora_r"] == 16 and "lora_layers" not in t  # every layer
    assert (t["model_dtype"], t["bf16"], t["gradient_checkpointing"], t["answer_logits_only"]) == ("bfloat16", True, True, True)
    assert (p.weights_device, p.weights_dtype, p.eval_model, p.eval_dtype) == ("auto", "bfloat16", "auto", "bfloat16")
    assert p.weights["max_queries"] is None  # every dev query
    full = PRESETS["paper-full"]
    assert not full.train["use_lora"] and not any(k.startswith("lora_") for k in full.train)
    assert full.epochs == 2 and full.search_grid[0]["learning_rate"] == p.search_grid[0]["learning_rate"] / 10


def test_paper_training_fields_need_no_gpu(tmp_path):
    from consistbench.reference_method.reproduce.jobs import run_fields

    run = Run(PRESETS["paper"], tmp_path / "run", model=str(LLAMA), log=lambda _: None)
    sft = run_fields(run, "sft", 0.0, PRESETS["paper"].search_grid[4])
    assert (sft["examples"], sft["num_train_epochs"], sft["max_steps"], sft["alpha"]) == ("rows", 2.0, -1, 0.0)
    assert sft["pooling_layer"] == -1  # alpha 0: the search's pooling layer is not set
    triplet = run_fields(run, "sft_triplet_how_to", 1.0, PRESETS["paper"].search_grid[4])
    assert triplet["pooling_layer"] == 16 and triplet["alpha"] == 1.0  # "middle" of Llama-3.1-8B's 32 layers
    assert triplet["model_dtype"] == "bfloat16" and triplet["gradient_checkpointing"]
    gemma = Run(PRESETS["paper"], tmp_path / "g", model=str(GEMMA), log=lambda _: None)
    assert run_fields(gemma, "sft_triplet_all", 1.0, {"pooling_layer": "middle"})["pooling_layer"] == 24


def test_model_shapes_from_config_alone():
    llama, gemma = read_shape(LLAMA), read_shape(GEMMA)
    assert llama.architecture == "LlamaForCausalLM" and round(llama.params / 1e9, 2) == 8.03  # Llama-3.1-8B
    assert (llama.layers, llama.hidden, llama.kv_heads, llama.vocab, llama.tied) == (32, 4096, 8, 128256, False)
    assert gemma.architecture == "Gemma3ForConditionalGeneration" and round(gemma.params / 1e9, 1) == 12.2
    assert (gemma.layers, gemma.hidden, gemma.head_dim, gemma.vocab, gemma.tied) == (48, 3840, 256, 262208, True)
    assert round(lora_params(llama, 16) / 1e6, 1) == 41.9  # r16 on q, k, v, o, gate, up, down of 32 layers


def test_memory_plan_parts():
    shape = read_shape(LLAMA)
    base = dict(PRESETS["paper"].train)
    m = training_memory(shape, base, ONE)
    assert m["tokens_per_step"] == 4 * 3 * 1024 and m["total"] < 79
    assert m["parts"]["weights"] == pytest.approx(shape.params * 2 / 2**30)  # bf16
    fp32 = training_memory(shape, {**base, "model_dtype": "float32", "bf16": False}, ONE)
    assert fp32["parts"]["weights"] == pytest.approx(2 * m["parts"]["weights"])
    no_ckpt = training_memory(shape, {**base, "gradient_checkpointing": False}, ONE)
    assert no_ckpt["parts"]["activations"] > 10 * m["parts"]["activations"] and no_ckpt["total"] > 79
    all_logits = training_memory(shape, {**base, "answer_logits_only": False}, ONE)
    assert all_logits["parts"]["logits"] == pytest.approx(10 * m["parts"]["logits"])
    rows = training_memory(shape, base, ONE, sequences_per_item=1)
    assert rows["parts"]["activations"] == pytest.approx(m["parts"]["activations"] / 3)
    full = {**base, "use_lora": False}
    ddp = training_memory(shape, full, dict(ONE, sharding="ddp", num_processes=8))
    zero3 = training_memory(shape, full, dict(ONE, sharding="deepspeed", num_processes=8))
    # DDP: bf16 AdamW states in every process (4 bytes a parameter); ZeRO-3: fp32 states (8) split over 8
    assert ddp["parts"]["optimizer (AdamW, 2 states)"] == pytest.approx(4 * zero3["parts"]["optimizer (AdamW, 2 states)"])
    assert zero3["total"] < ddp["total"]


def _dry(capsys, *argv) -> tuple[int, str, str]:
    code = main(["ref", "reproduce", "--dry-run", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("model", [LLAMA, GEMMA])
def test_dry_run_on_one_gpu(model, tmp_path, capsys):
    code, out, err = _dry(capsys, "--preset", "paper", "--model", str(model), "-o", str(tmp_path / "run"))
    assert code == 0, err
    assert not (tmp_path / "run").exists()  # nothing written
    for stage in ("base", "synth", "select", "search", "train", "weights", "merge", "temperature", "eval", "table"):
        assert f"\n  {stage} " in out, stage
    assert "| **total** |" in out and "activations without checkpointing" in out and "Fits:" in out
    assert "Expected GPU-hours: unknown" in out
    assert out.count("$ consistbench ref train ") == 5 + 6  # the search's five settings, the six models
    assert "--device cuda" in out and "dtype=bfloat16" in out  # evaluation on the GPU in bf16
    assert "accelerate launch" not in out


def test_dry_run_under_the_launcher_prints_the_accelerate_commands(tmp_path, capsys):
    code, out, err = _dry(capsys, "--preset", "paper", "--model", str(LLAMA), "-o", str(tmp_path / "run"),
                          "--accelerate-config", "ddp", "--num-processes", "4")
    assert code == 0, err
    config = CONFIG_DIR / "ddp.yaml"
    train = [line for line in out.splitlines() if "ref train" in line]
    launched = f"$ accelerate launch --config_file {config} --num_processes 4 -m consistbench.benchmark.cli"
    assert train and all(f"{launched} ref train" in line for line in train)  # the exact module, not PATH's script
    assert f"{launched} eval --model-args" in out  # lm-eval's hf model, data parallel (vllm is not installed here)
    assert f"accelerate launch --config_file {config} --num_processes 4 -m consistbench.reference_method.reproduce.similarities" in out
    assert "4 processes on 1 machine(s)" in out


def test_dry_run_refuses_a_plan_that_cannot_fit(tmp_path, capsys):
    code, out, err = _dry(capsys, "--preset", "paper-full", "--model", str(GEMMA), "-o", str(tmp_path / "a"),
                          "--accelerate-config", "ddp")
    assert code == 2 and err.count("\n") == 1
    assert "the plan does not fit" in err and "deepspeed-zero3 or fsdp" in err
    code, out, err = _dry(capsys, "--preset", "paper-full", "--model", str(GEMMA), "-o", str(tmp_path / "b"),
                          "--accelerate-config", "deepspeed-zero3")
    assert code == 0 and "DeepSpeed ZeRO-3" in out, err
    code, out, err = _dry(capsys, "--preset", "paper", "--model", str(LLAMA), "-o", str(tmp_path / "c"),
                          "--gpu-memory", "16")
    assert code == 2 and "more than the 16 GiB" in err


def test_launcher_options_are_checked(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distributed_type: MULTI_GPU\nnot_an_option: 1\n")
    cases = [(["--accelerate-config", "nope"], "neither a shipped config"),
             (["--accelerate-config", str(bad)], "accelerate refuses this config"),
             (["--num-processes", "2"], "need --launcher accelerate"),
             (["--accelerate-config", "ddp", "--num-processes", "3", "--num-machines", "2"], "do not split"),
             (["--accelerate-config", "ddp-multinode", "--machine-rank", "5"], "expected 0..1")]
    for argv, message in cases:
        code, _, err = _dry(capsys, "--preset", "paper", "--model", str(LLAMA), "-o", str(tmp_path / "x"), *argv)
        assert code == 2 and message in err, (argv, err)


def test_launcher_command_and_options():
    none = Launcher()
    assert none.command(["consistbench", "eval"]) == ["consistbench", "eval"] and none.settings() == ONE
    assert none.command(["mod", "--x"], module=True) == [sys.executable, "-m", "mod", "--x"]
    multi = Launcher.from_options(None, "ddp-multinode", machine_rank=1, main_process_ip="10.0.0.1")
    cmd = multi.command(["consistbench", "ref", "train"])
    assert display(cmd) == (f"accelerate launch --config_file {CONFIG_DIR / 'ddp-multinode.yaml'} --machine_rank 1 "
                            "--main_process_ip 10.0.0.1 -m consistbench.benchmark.cli ref train")
    assert multi.follower and not Launcher.from_options(None, "ddp-multinode").follower
    assert multi.options() == ["--launcher", "accelerate", "--accelerate-config", "ddp-multinode", "--machine-rank", "1",
                               "--main-process-ip", "10.0.0.1"]
    assert Launcher.from_options("accelerate", None).config_file == str(CONFIG_DIR / "ddp.yaml")  # the default


def test_followers_launch_the_leaders_jobs_in_order(tmp_path):
    board = JobBoard(tmp_path)
    board.start()
    board.done(board.post([sys.executable, "-c", "pass"]))  # a job of this session, finished before the follower came
    ran = []

    def follow():
        ran.append(board.follow(Launcher(), log=lambda _: None, poll_s=0.05, timeout_s=20))

    t = threading.Thread(target=follow)
    t.start()
    for i in range(2):
        board.post([sys.executable, "-c", f"open({str(tmp_path / f'job{i}')!r}, 'w').close()"])
    board.end()
    t.join(30)
    assert ran == [2] and (tmp_path / "job0").is_file() and (tmp_path / "job1").is_file()
    # a follower that comes after the session ended waits for the next session, and times out without one
    with pytest.raises(ConsistbenchError, match="nothing from the main machine"):
        board.follow(Launcher(), log=lambda _: None, poll_s=0.05, timeout_s=0.2)


def test_the_shipped_configs_are_package_data():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "consistbench.reference_method.launch" in cfg["packages"]
    assert cfg["package-data"]["consistbench.reference_method.launch"] == ["*.yaml"]
    assert sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) == sorted(SHIPPED)


def test_launched_training_settings_file_is_the_in_process_config(tmp_path, tiny_llama_dir):
    """`ref train --config FILE` (the launched command) parses to the same settings as the in-process run."""
    from consistbench.benchmark.cli import parse_dataclasses
    from consistbench.reference_method.reproduce.jobs import run_config, run_mining, train_argv, write_train_yaml
    from consistbench.reference_method.training_cli import train_dataclasses

    p = PRESETS["cpu-fair"]
    run = Run(p, tmp_path / "run", model=str(tiny_llama_dir), log=lambda _: None)
    triplet = {"pooled_positions": "question_only", "pooling_layer": "middle", "margin": 0.31, "negatives": "hard",
               "alpha": 0.5}
    config = run_config(run, "sft_triplet_all@s2", 1.0, None, triplet)
    mining = run_mining(run, "sft_triplet_all@s2", config.alpha, triplet)
    out = run.model_dir("sft_triplet_all@s2")
    argv = train_argv(run, out, "all", run.train_file, write_train_yaml(run, out, config, mining), resume=True)
    assert argv[1:3] == ["ref", "train"] and argv[-2:] == ["--resume", "latest"] and "--keep-checkpoints" in argv
    script, parsed, mined = parse_dataclasses("ref train", train_dataclasses(), argv[3:-2])
    assert script.variant_type == "all" and script.output == str(out) and script.keep_checkpoints
    assert parsed.loss_settings() == config.loss_settings() and parsed.seed == 2 and parsed.alpha == 0.5
    assert (parsed.share_prefix, parsed.answer_logits_only, parsed.use_cpu) == (True, True, True)
    assert mined.to_config() == mining and mining.negatives == "hard"


def test_cli_show_preset_paper(capsys):
    assert main(["ref", "reproduce", "--preset", "paper", "--show-preset"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["epochs"] == 2 and shown["train"]["model_dtype"] == "bfloat16" and shown["eval_model"] == "auto"
