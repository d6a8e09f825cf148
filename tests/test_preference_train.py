"""``consistbench ref wrpo`` and ``ref mrpo`` end to end on a tiny random Llama: losses decrease,
WRPO's target-SFT stage, the saved model loads, bad input is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from consistbench.benchmark.cli import main
from consistbench.reference_method.preference.collator import PreferenceCollator, tokenize_rows
from tests.preference_fixtures import QA, load, pref_rows, write_prefs

pytest_plugins = ["tests.preference_fixtures"]  # the tiny Llama's tokenizer, a second reference model


# ------------------------------------------------------------------------------------------------
# end to end: losses decrease, the saved model loads, bad input is refused

def _card(out: Path) -> dict:
    return json.loads((out / "consistbench_train.json").read_text())


def _first_last(history: list[dict]) -> tuple[float, float]:
    losses = [h["loss"] for h in history]
    k = max(1, len(losses) // 4)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


@pytest.mark.slow
def test_wrpo_cli_loss_decreases_and_saves(tiny_llama_dir, tmp_path):
    prefs = write_prefs(tmp_path / "prefs.jsonl")
    out = tmp_path / "wrpo"
    rc = main(["ref", "wrpo", "--data", str(prefs), "--model", str(tiny_llama_dir), "-o", str(out),
               "--allow-pad-eq-eos", "--max-steps", "12", "--per-device-train-batch-size", "4", "--learning-rate", "5e-3",
               "--beta", "0.5", "--alpha-max", "0.5", "--use-cpu"])
    assert rc == 0
    card = _card(out)
    first, last = _first_last(card["loss_history"])
    assert last < first
    alphas = [h["alpha"] for h in card["loss_history"]]
    assert alphas[0] == 0.0 and alphas[-1] == pytest.approx(0.5) and alphas == sorted(alphas)
    assert card["method"] == "wrpo" and "ICLR 2025" in card["citation"]
    assert (out / "README.md").is_file() and list(out.glob("*.safetensors"))
    assert not out.with_name(out.name + ".checkpoints").exists()
    load(out)  # a plain model


def tok_of(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _logps(model_dir, examples, with_source=True):
    from consistbench.reference_method.preference.collator import completion_logps

    model = load(model_dir).eval()
    batch = PreferenceCollator(model.config.pad_token_id or 0, with_source=with_source)(examples)
    with torch.no_grad():
        return completion_logps(model, batch)


@pytest.mark.slow
def test_wrpo_target_sft_stage_runs_first_and_is_the_reference(tiny_llama_dir, tmp_path, monkeypatch):
    """The published pipeline: the target is fine-tuned on the source answers of a third of the
    question groups, then WRPO trains from that SFT model, which is also its reference policy."""
    from consistbench.reference_method.preference.wrpo_trainer import WRPOTrainer
    from tests.pico_models import load_state

    captured = {}
    original = WRPOTrainer._precompute_ref_logps

    def spy(self, dataset, name, batch_size):
        captured["dataset"] = original(self, dataset, name, batch_size)
        return captured["dataset"]

    monkeypatch.setattr(WRPOTrainer, "_precompute_ref_logps", spy)
    prefs = write_prefs(tmp_path / "prefs.jsonl")
    out = tmp_path / "wrpo"
    rc = main(["ref", "wrpo", "--data", str(prefs), "--model", str(tiny_llama_dir), "-o", str(out),
               "--allow-pad-eq-eos", "--max-steps", "2", "--per-device-train-batch-size", "2", "--learning-rate", "1e-3",
               "--target-sft-learning-rate", "1e-2", "--use-cpu"])
    assert rc == 0
    card = _card(out)
    sft_dir = out.with_name(out.name + ".target_sft")
    stage = card["target_sft"]
    assert stage["enabled"] is True and Path(stage["model"]) == sft_dir.resolve()
    assert stage["rows"] == 1 and stage["trained_rows"] == 1 and stage["global_step"] >= 1  # 1 of 4 groups
    assert stage["training"]["alpha"] == 0.0 and stage["training"]["learning_rate"] == 1e-2
    assert card["data"]["trained_rows"] == 3 and card["training"]["target_sft"] is True
    assert card["references"] == [str(sft_dir.resolve())] and card["base_model"] == str(tiny_llama_dir.resolve())
    sft_card = json.loads((sft_dir / "consistbench_train.json").read_text())
    assert sft_card["method"] == "target_sft" and "target-SFT" in (sft_dir / "README.md").read_text()
    # the SFT stage changed the weights, towards the source answer it was trained on
    base_state, sft_state = load_state(tiny_llama_dir), load_state(sft_dir)
    assert max(float((sft_state[k] - base_state[k]).abs().max()) for k in base_state) > 1e-3
    # the SFT group (recorded) is not among the WRPO rows, and its source answer became likelier
    from consistbench.reference_method.preference.train import split_for_target_sft

    sft_part, wrpo_part, groups = split_for_target_sft(pref_rows(), 1 / 3, card["training"]["seed"])
    assert stage["groups"] == groups == [r["group_id"] for r in sft_part] and len(captured["dataset"]) == len(wrpo_part) == 3
    cols, _ = tokenize_rows(sft_part, tok_of(tiny_llama_dir), completions=("chosen", "rejected", "source"),
                            max_length=None)
    example = [{k: v[0] for k, v in cols.items()}]
    source_logp = {d: _logps(d, example)[2].item() for d in (tiny_llama_dir, sft_dir)}
    assert source_logp[sft_dir] > source_logp[tiny_llama_dir] + 1e-3
    # WRPO's reference log-probs are the SFT model's, not the base's
    ds = captured["dataset"]
    examples = [ds[i] for i in range(len(ds))]
    ref = torch.cat([torch.tensor(ds[c]) for c in ("ref_chosen_logps", "ref_rejected_logps", "ref_source_logps")])
    torch.testing.assert_close(_logps(sft_dir, examples), ref, rtol=1e-5, atol=1e-4)
    assert float((_logps(tiny_llama_dir, examples) - ref).abs().max()) > 1e-3


@pytest.mark.slow
def test_wrpo_no_target_sft_skips_the_stage(tiny_llama_dir, tmp_path, capsys):
    prefs = write_prefs(tmp_path / "prefs.jsonl")
    out = tmp_path / "wrpo"
    rc = main(["ref", "wrpo", "--data", str(prefs), "--model", str(tiny_llama_dir), "-o", str(out),
               "--allow-pad-eq-eos", "--max-steps", "1", "--per-device-train-batch-size", "4", "--no-target-sft", "--use-cpu"])
    assert rc == 0
    card = _card(out)
    assert card["target_sft"] == {"enabled": False} and card["training"]["target_sft"] is False
    assert card["data"]["trained_rows"] == len(QA) and card["references"] == [str(tiny_llama_dir.resolve())]
    assert not out.with_name(out.name + ".target_sft").exists()
    # with the stage on, a file of one question group cannot be split: one line, nothing written
    one = write_prefs(tmp_path / "one.jsonl", pref_rows()[:1])
    capsys.readouterr()
    assert main(["ref", "wrpo", "--data", str(one), "--model", str(tiny_llama_dir), "-o",
                 str(tmp_path / "o"), "--allow-pad-eq-eos", "--use-cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "two question groups" in err and "\n" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.target_sft").exists()


@pytest.mark.slow
def test_mrpo_cli_lora_loss_decreases(tiny_llama_dir, other_ref_dir, tmp_path):
    prefs = write_prefs(tmp_path / "prefs.jsonl")
    out = tmp_path / "mrpo"
    rc = main(["ref", "mrpo", "--data", str(prefs), "--model", str(tiny_llama_dir), "--reference", str(other_ref_dir),
               "-o", str(out), "--allow-pad-eq-eos", "--max-steps", "12", "--per-device-train-batch-size", "4",
               "--learning-rate", "2e-2", "--beta", "0.5", "--use-lora", "--lora-r", "4", "--use-cpu"])
    assert rc == 0
    card = _card(out)
    first, last = _first_last(card["loss_history"])
    assert last < first
    assert len(card["references"]) == 2 and card["training"]["use_lora"] is True
    assert card["training"]["reference_combination"] == "lower_bound"
    assert len(card["loss_history"][0]["weights"]) == 2
    model = load(out)
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_bad_input_is_refused(tiny_llama_dir, tmp_path, capsys):
    from transformers import BertConfig

    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    base = ["--model", str(tiny_llama_dir), "--allow-pad-eq-eos", "--use-cpu"]
    assert main(["ref", "wrpo", "--data", str(empty), "-o", str(tmp_path / "o1"), *base]) == 2
    assert "empty" in capsys.readouterr().err
    rows = [{k: v for k, v in r.items() if k != "source_chosen"} for r in pref_rows()]
    no_source = write_prefs(tmp_path / "nosource.jsonl", rows)
    assert main(["ref", "wrpo", "--data", str(no_source), "-o", str(tmp_path / "o2"), *base]) == 2
    assert "source_chosen" in capsys.readouterr().err
    bert = tmp_path / "bert"
    BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
               intermediate_size=8, architectures=["BertModel"]).save_pretrained(bert)
    prefs = write_prefs(tmp_path / "prefs.jsonl")
    assert main(["ref", "mrpo", "--data", str(prefs), "-o", str(tmp_path / "o3"), "--reference", str(bert),
                 *base]) == 2
    assert "architecture" in capsys.readouterr().err
    assert main(["ref", "wrpo", "--data", str(prefs), "-o", str(tmp_path / "o4"), "--model", str(bert),
                 "--allow-pad-eq-eos"]) == 2
    assert "architecture" in capsys.readouterr().err
    for o in ("o1", "o2", "o3", "o4"):
        assert not (tmp_path / o).exists()
