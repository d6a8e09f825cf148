"""`consistbench ref reproduce --dry-run`: the printed plan checked against a hand computation from the
models' ``config.json`` (tests/data/configs/: Llama-3.1-8B-Instruct, Gemma-3-12B-it; no weights), the
``--fair`` / ``--seeds`` options, and the CPU plan of ``cpu-fair`` (stages, RAM, CPU-hours)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.reproduce.presets import FAIR, PRESETS, with_options
from consistbench.reference_method.reproduce.run_folder import Run

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "tests/data/configs"
GIB = 2 ** 30
# the published sizes: Llama-3.1-8B 8.03 B, Gemma-3-12B 12.2 B (its vision tower included)
PUBLISHED = {"llama-3.1-8b-instruct": 8.03e9, "gemma-3-12b-it": 12.2e9}


def _hand(name: str) -> dict:
    """Parameters and the paper preset's step (4 triplets x 3 sequences x 1024 tokens, LoRA r16 on the 7
    linears of every layer, bf16, checkpointing, answer-only logits) written out from config.json."""
    cfg = json.loads((CONFIGS / name / "config.json").read_text())
    t = cfg.get("text_config", cfg)
    h, i, n_layers, v = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"], t["vocab_size"]
    hd = t.get("head_dim") or h // t["num_attention_heads"]
    q, kv = t["num_attention_heads"] * hd, t["num_key_value_heads"] * hd
    linears = [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]
    gemma = "vision_config" in cfg
    norms = 4 * h + 2 * hd if gemma else 2 * h  # Gemma-3: four norms a layer and the q/k norms
    params = v * h * (1 if gemma else 2) + n_layers * (sum(a * b for a, b in linears) + norms) + h
    if gemma:  # SigLIP: 27 layers of attention (4 h^2) and MLP (2 h i), biases and norms, patches, positions
        vc = cfg["vision_config"]
        vh, vi = vc["hidden_size"], vc["intermediate_size"]
        params += vc["num_hidden_layers"] * (4 * vh * vh + 2 * vh * vi + 4 * vh) + 14 * 14 * 3 * vh \
            + (vc["image_size"] // vc["patch_size"]) ** 2 * vh + vh * h
    adapters = n_layers * sum(16 * (a + b) for a, b in linears)
    tokens = 4 * 3 * 1024
    per_layer = (7 * h + 3 * kv + 4 * i) * 2  # bf16 values a token keeps per layer
    return {"params": params, "adapters": adapters, "tokens": tokens,
            "weights": params * 2 / GIB, "lora": adapters * 4 / GIB, "optimizer": adapters * 8 / GIB,
            "with_ckpt": tokens * (h * 2 * n_layers + per_layer) * 1.1 / GIB,
            "without_ckpt": tokens * per_layer * n_layers * 1.1 / GIB,
            "logits": tokens * 0.1 * v * (2 + 8) / GIB}


def _table(out: str) -> dict[str, list[str]]:
    """The memory table of a dry run: row name -> its cells."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) > 1:
            rows[cells[0]] = cells[1:]
    return rows


def _dry(capsys, *argv) -> tuple[int, str, str]:
    code = main(["ref", "reproduce", "--dry-run", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_dry_run_numbers_are_the_hand_computation(name, tmp_path, capsys):
    hand = _hand(name)
    assert abs(hand["params"] / PUBLISHED[name] - 1) < 0.02  # the hand count is the published size
    code, out, err = _dry(capsys, "--preset", "paper", "--model", str(CONFIGS / name), "-o", str(tmp_path / "r"))
    assert code == 0, err
    said = float(re.search(r", ([\d.]+) B parameters", out).group(1))
    assert said == pytest.approx(hand["params"] / 1e9, abs=0.005)
    t = _table(out)
    triplet = 0  # the first column: the SFT + triplet arms (3 sequences an example)
    assert float(t["weights"][triplet]) == pytest.approx(hand["weights"], abs=0.005)
    assert float(t["trainable (LoRA adapters, fp32)"][triplet]) == pytest.approx(hand["lora"], abs=0.005)
    assert float(t["gradients"][triplet]) == pytest.approx(hand["lora"], abs=0.005)
    assert float(t["optimizer (AdamW, 2 states)"][triplet]) == pytest.approx(hand["optimizer"], abs=0.005)
    assert int(t["tokens per micro-batch"][triplet]) == hand["tokens"] == 3 * int(t["tokens per micro-batch"][1])
    assert float(t["activations"][triplet]) == pytest.approx(hand["with_ckpt"], abs=0.005)  # checkpointing on
    assert float(t["activations with checkpointing"][triplet]) == pytest.approx(hand["with_ckpt"], abs=0.05)
    assert float(t["activations without checkpointing"][triplet]) == pytest.approx(hand["without_ckpt"], abs=0.05)
    assert float(t["logits"][triplet]) == pytest.approx(hand["logits"], abs=0.005)
    total = hand["weights"] + 2 * hand["lora"] + hand["optimizer"] + hand["with_ckpt"] + hand["logits"] + 2.0
    assert float(t["total"][triplet]) == pytest.approx(total, abs=0.06) and total < 79
    assert t["trainable parameters"][triplet] == f"{hand['adapters'] / 1e6:.1f} M"
    assert f"Fits: the largest training step needs {total:.1f} of 79 GiB per GPU." in out
    # without checkpointing the same step would not fit one 80 GB GPU: the plan needs it
    assert hand["weights"] + hand["without_ckpt"] > 79


def test_an_inference_stage_that_cannot_fit_is_refused(tmp_path, capsys):
    """Training fits (LoRA, bf16) but an evaluation batch's KV cache does not: refused with one line."""
    from consistbench.reference_method.reproduce.plan import dry_run

    p = with_options(PRESETS["paper"])
    run = Run(p, tmp_path / "r", model=str(CONFIGS / "llama-3.1-8b-instruct"), log=lambda _: None)
    run.preset.eval_batch_size = 4096
    with pytest.raises(ConsistbenchError, match=r"weights stage or evaluation needs [\d.]+ GiB per GPU"):
        dry_run(run, out=lambda _: None)


def test_fair_options_on_the_paper_preset(tmp_path, capsys):
    assert main(["ref", "reproduce", "--preset", "paper", "--fair", "--show-preset"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "paper+fair" and shown["epochs"] == 2 and shown["sft_examples"] == "rows"
    assert {k: shown[k] for k in FAIR} == FAIR and shown["temperatures"]
    code, out, err = _dry(capsys, "--preset", "paper", "--fair", "--seeds", "0,1", "--model",
                          str(CONFIGS / "llama-3.1-8b-instruct"), "-o", str(tmp_path / "f"))
    assert code == 0, err
    assert "preset paper+fair+seeds0-1" in out
    # 6 arms at seed 0, the seeded ones (SFT, all-data, three specialists) again at seed 1, the dose-matched SFT
    assert "train           12 models" in out and "models/sft_dose " in out and "models/sft@s1 " in out
    assert "eval/uniform@s1 " in out and "eval/task_arithmetic " in out and "--tasks consistency_dev" in out
    assert "8 merges in this process" in out  # 2 distances x 4 temperatures on dev
    # a run folder started with the plain preset refuses the fair one
    plain = Run(PRESETS["paper"], tmp_path / "run", model=str(CONFIGS / "llama-3.1-8b-instruct"))
    plain.record()
    fair = Run(with_options(PRESETS["paper"], fair=True), tmp_path / "run", model=str(CONFIGS / "llama-3.1-8b-instruct"))
    with pytest.raises(ConsistbenchError, match="started with other settings"):
        fair.record()
    # a preset without equal epochs per arm cannot take the dose-matched row
    code, _, err = _dry(capsys, "--preset", "cpu", "--fair", "-o", str(tmp_path / "c"))
    assert code == 2 and err.count("\n") == 1 and "sft_dose" in err
    code, _, err = _dry(capsys, "--preset", "paper", "--seeds", "0,x", "-o", str(tmp_path / "d"))
    assert code == 2 and "--seeds" in err


def test_cpu_fair_dry_run_lists_its_stages_and_cost(tmp_path, capsys):
    code, out, err = _dry(capsys, "--preset", "cpu-fair", "-o", str(tmp_path / "r"))
    assert code == 0, err
    assert not (tmp_path / "r").exists()
    for stage in ("triplet_search", "train", "checkpoints", "weights", "temperature", "null_merges", "eval", "table"):
        assert f"\n  {stage} " in out, stage
    assert "on the CPU." in out and "(CPU RAM)" in out and "CUDA context" not in out
    hours = float(re.search(r"Expected CPU-hours: ([\d.]+) for the training", out).group(1))
    seqs = int(re.search(r"about ([\d,]+) training sequences", out).group(1).replace(",", ""))
    assert hours == pytest.approx(seqs / (12 / 23) / 3600, abs=0.06)  # the measured 12 sequences per 23 s
    # 3 seeds x (SFT, all-data, 3 specialists, merged, 2 null merges) + base, ablation, dose-matched SFT
    assert "Evaluations: 27 on consistency (" in out and "rows/s (measured" in out
    assert "17 models" in out and out.count("-m consistbench.reference_method.reproduce.similarities") == 3
