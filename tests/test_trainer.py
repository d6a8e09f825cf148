"""SFT + triplet training runs on a tiny random Llama: the loss decreases, resume, LoRA folded in,
the command, learning to stop with eos, and bad input (clear error, no partial output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.collator import CompletionCollator, encode_row
from consistbench.reference_method.consistency_trainer import ConsistencyTrainer
from consistbench.reference_method.train import latest_checkpoint, train
from consistbench.reference_method.triplets import MiningConfig
from tests.trainer_fixtures import config, load_model, state, synth_rows, write_rows

pytest_plugins = ["tests.trainer_fixtures"]  # the fixed tiny Llama, its tokenizer, the synthetic set


# ---------------------------------------------------------------------------------------------
# training runs

@pytest.mark.slow
def test_ce_plus_triplet_loss_decreases(fixed_llama, synth_file, tmp_path):
    out = train(fixed_llama, synth_file, "all", tmp_path / "model",
                config(tmp_path, alpha=1.0, margin=1.0, learning_rate=3e-3, max_steps=12,
                       per_device_train_batch_size=4),
                MiningConfig(negatives="random"), log=lambda _: None)
    card = json.loads((out / "consistbench_train.json").read_text())
    history = card["loss_history"]
    assert len(history) == 12 and all(h["triplet"] is not None for h in history)
    first = sum(h["loss"] for h in history[:3]) / 3
    last = sum(h["loss"] for h in history[-3:]) / 3
    assert last < first
    assert sum(h["triplet"] for h in history[-3:]) < sum(h["triplet"] for h in history[:3])


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(fixed_llama, synth_file, tmp_path):
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def __init__(self, step):
            self.step = step

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == self.step:
                control.should_training_stop = True

    def cfg(name):
        return config(tmp_path / name, max_steps=6, save_strategy="steps", save_steps=3,
                      learning_rate=5e-3, margin=1.0)

    full = train(fixed_llama, synth_file, "all", tmp_path / "full", cfg("a"), log=lambda _: None)
    part = tmp_path / "part"
    train(fixed_llama, synth_file, "all", part, cfg("b"), callbacks=[StopAt(3)], log=lambda _: None)
    assert not part.exists()  # interrupted: no final model
    assert latest_checkpoint(tmp_path / "b" / "ckpt").name == "checkpoint-3"
    resumed = train(fixed_llama, synth_file, "all", part, cfg("b"), resume=True, log=lambda _: None)
    a, b = state(full), state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    base = load_model(fixed_llama).state_dict()
    assert not torch.equal(a["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])
    assert json.loads((resumed / "consistbench_train.json").read_text())["resumed_from"].endswith("checkpoint-3")
    assert not (tmp_path / "b" / "ckpt").exists()  # checkpoints removed after success


@pytest.mark.slow
@pytest.mark.parametrize("lora_layers", [None, 1])
def test_lora_adapters_are_merged_into_a_plain_model(fixed_llama, synth_file, tmp_path, lora_layers):
    out = train(fixed_llama, synth_file, "how_to", tmp_path / "lora",
                config(tmp_path, use_lora=True, lora_r=4, lora_alpha=8, learning_rate=1e-2, max_steps=3,
                       lora_layers=lora_layers),
                log=lambda _: None)
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors" in names and not any(n.startswith("adapter") for n in names)
    merged, base = state(out), load_model(fixed_llama).state_dict()
    assert not any("lora" in k for k in merged)
    for name in ("self_attn.q_proj", "mlp.down_proj"):
        changed = [not torch.equal(merged[f"model.layers.{i}.{name}.weight"], base[f"model.layers.{i}.{name}.weight"])
                   for i in range(2)]
        assert changed == ([True, True] if lora_layers is None else [False, True]), name
    assert torch.equal(merged["model.norm.weight"], base["model.norm.weight"])  # not a LoRA target: untouched
    load_model(out)  # loads as a plain transformers model


@pytest.mark.slow
def test_cli_train_writes_a_complete_model_that_passes_the_doctor(fixed_llama, synth_file, tmp_path, capsys):
    from consistbench.reference_method.doctor import check

    out = tmp_path / "how_to"
    rc = main(["ref", "train", "--variant-type", "how_to", "--data", str(synth_file), "-o", str(out),
               "--model", str(fixed_llama), "--max-steps", "2", "--use-cpu", "--learning-rate", "1e-3"])
    assert rc == 0, capsys.readouterr().err
    card = json.loads((out / "consistbench_train.json").read_text())
    assert card["variant_type"] == "how_to" and card["data"]["triplets"] == 4 and card["global_step"] == 2
    assert card["training"]["alpha"] == 1.0 and card["mining"]["negatives"] == "bottom"
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["do_sample"] is False and gen["max_new_tokens"] == 64
    assert check(out) == []
    assert not (tmp_path / "how_to.checkpoints").exists()


@pytest.mark.slow
def test_a_tiny_model_learns_to_stop_with_eos(tiny_llama_dir, tmp_path):
    """pad == eos on purpose: the collator still keeps the eos label, and the model learns to emit it."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    enc = encode_row(tok, "Use copy.copy().", "How do I copy?", "Use copy.copy().")
    torch.manual_seed(0)
    model = load_model(tiny_llama_dir)
    trainer = ConsistencyTrainer(model=model, args=config(tmp_path, alpha=0.0, learning_rate=1e-2, max_steps=40,
                                                          lr_scheduler_type="constant"),
                                 train_dataset=[enc], data_collator=CompletionCollator(tok.pad_token_id))
    trainer.train()
    model.eval()
    prompt = torch.tensor([enc["input_ids"][:enc["prompt_length"]]])
    with torch.no_grad():
        gen = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    new = gen[0, prompt.shape[1]:].tolist()
    answer = enc["input_ids"][enc["prompt_length"]:]
    assert new == answer  # the answer's tokens, then eos, then generation stops
    assert new[-1] == tok.eos_token_id


# ---------------------------------------------------------------------------------------------
# bad input: clear error, non-zero exit, no partial output

def _entries(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()}


def test_unsupported_architecture_is_refused(tmp_path, synth_file, capsys):
    from transformers import BertConfig, BertModel

    bert = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=99, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(bert)
    before = _entries(tmp_path)
    rc = main(["ref", "train", "--variant-type", "how_to", "--data", str(synth_file),
               "-o", str(tmp_path / "out"), "--model", str(bert)])
    err = capsys.readouterr().err
    assert rc == 2 and "unsupported architecture" in err and "causal LM" in err
    assert _entries(tmp_path) == before


def test_empty_synthetic_set_is_refused(fixed_llama, tmp_path, capsys):
    only_originals = write_rows(tmp_path / "orig.jsonl", [r for r in synth_rows() if r["variant_type"] == "original"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    before = _entries(tmp_path)
    for data, needle in ((only_originals, "no how_to variants"), (empty, "no rows")):
        rc = main(["ref", "train", "--variant-type", "how_to", "--data", str(data),
                   "-o", str(tmp_path / "out"), "--model", str(fixed_llama)])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err, err
    assert _entries(tmp_path) == before


def test_pad_equal_to_eos_is_refused_unless_allowed(tiny_llama_dir, synth_file, tmp_path, capsys):
    rc = main(["ref", "train", "--variant-type", "how_to", "--data", str(synth_file),
               "-o", str(tmp_path / "out"), "--model", str(tiny_llama_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and "pad token == eos" in err and "doctor" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.checkpoints").exists()
    rc = main(["ref", "train", "--variant-type", "how_to", "--data", str(synth_file), "-o",
               str(tmp_path / "out"), "--model", str(tiny_llama_dir), "--allow-pad-eq-eos", "--max-steps", "1"])
    assert rc == 0 and (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["weights", "optimizer", "state"])
def test_corrupt_checkpoint_is_refused(fixed_llama, synth_file, tmp_path, capsys, damage):
    ckpt = tmp_path / "out.checkpoints"
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            control.should_training_stop = True

    train(fixed_llama, synth_file, "how_to", tmp_path / "out",
          config(tmp_path, output_dir=str(ckpt), max_steps=4, save_strategy="steps", save_steps=1),
          callbacks=[Stop()], log=lambda _: None)
    cp = latest_checkpoint(ckpt)
    assert cp is not None and cp.name == "checkpoint-1"
    target = {"weights": cp / "model.safetensors", "optimizer": cp / "optimizer.pt",
              "state": cp / "trainer_state.json"}[damage]
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    rc = main(["ref", "train", "--variant-type", "how_to", "--data", str(synth_file), "-o",
               str(tmp_path / "out"), "--model", str(fixed_llama), "--max-steps", "4", "--resume", "latest"])
    err = capsys.readouterr().err
    assert rc == 2 and "corrupt checkpoint" in err and target.name in err
    assert not (tmp_path / "out").exists()


def test_resume_without_checkpoint_and_stale_checkpoints_are_errors(fixed_llama, synth_file, tmp_path):
    cfg = config(tmp_path, max_steps=1)
    with pytest.raises(ConsistbenchError, match="no checkpoint to resume from"):
        train(fixed_llama, synth_file, "how_to", tmp_path / "out", cfg, resume=True, log=lambda _: None)
    (tmp_path / "ckpt" / "checkpoint-5").mkdir(parents=True)
    with pytest.raises(ConsistbenchError, match="earlier run"):
        train(fixed_llama, synth_file, "how_to", tmp_path / "out", config(tmp_path, max_steps=1), log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_plain_sft_sees_each_row_once(fixed_llama, synth_file, tmp_path, tokenizer):
    """``examples="rows"``: the paper's SFT baseline trains on the rows themselves (originals and
    variants, each once per epoch), not on triplet-expanded data; it refuses a triplet weight."""
    from consistbench.benchmark.schema import load_data
    from consistbench.reference_method.train import prepare_data

    rows = load_data(synth_file)
    prepared = prepare_data(rows, "all", tokenizer, mining=MiningConfig(), max_length=1024, examples="rows")
    assert len(prepared.items) == len(rows) and prepared.triplets == []
    assert all("input_ids" in item for item in prepared.items)
    expanded = prepare_data(rows, "all", tokenizer, mining=MiningConfig(), max_length=1024)
    assert 3 * len(expanded.items) > len(prepared.items)  # what the triplet-expanded SFT trains on instead
    one_epoch = len(rows)
    out = train(fixed_llama, synth_file, "all", tmp_path / "sft",
                config(tmp_path, alpha=0.0, examples="rows", num_train_epochs=1, per_device_train_batch_size=1),
                log=lambda _: None)
    card = json.loads((out / "consistbench_train.json").read_text())
    assert card["global_step"] == one_epoch and card["data"]["examples"] == "rows"
    assert card["data"]["training_sequences_per_epoch"] == one_epoch
    assert all(h["triplet"] is None for h in card["loss_history"])
    with pytest.raises(ValueError, match="needs alpha 0"):
        config(tmp_path, alpha=1.0, examples="rows")
