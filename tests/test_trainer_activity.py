"""The triplet term's activity (loss_history, the card, the step-0 screen, the curves), and the compute
options in whole training runs: resume with the new options, gradient checkpointing with LoRA, bf16
autocast on CPU, bf16 weights. Tiny random Llama; the runs are marked slow."""

from __future__ import annotations

import json

import pytest
import torch

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.consistency_trainer import ConsistencyTrainer
from consistbench.reference_method.train import latest_checkpoint, train
from consistbench.reference_method.triplets import MiningConfig
from tests.trainer_fixtures import config, load_model, state, triplet_batch

pytest_plugins = ["tests.trainer_fixtures"]  # the fixed tiny Llama, its tokenizer, the synthetic set


def _grads(model, trainer, batch):
    model.zero_grad()
    trainer.compute_loss(model, dict(batch)).backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_activity_is_recorded_and_the_gradient_ratio_is_the_norms_ratio(fixed_llama, tokenizer, tmp_path):
    _, batch = triplet_batch(tokenizer, 3)
    model = load_model(fixed_llama)
    model.train()
    alpha, margin = 0.5, 1.0
    trainer = ConsistencyTrainer(model=model, args=config(tmp_path, alpha=alpha, margin=margin))
    total = _grads(model, trainer, batch)
    rec = trainer.loss_history[-1]
    # the ratio: ||grad(alpha * triplet)|| / ||grad(CE)||, the triplet's gradient being the total's minus the CE's
    ce_only = _grads(model, ConsistencyTrainer(model=model, args=config(tmp_path, alpha=0.0)), batch)
    norm = lambda gs: torch.sqrt(sum((g ** 2).sum() for g in gs)).item()  # noqa: E731
    want = norm([t - c for t, c in zip(total, ce_only)]) / norm(ce_only)
    assert want > 0 and rec["grad_ratio"] == pytest.approx(want, rel=1e-3)
    # the distances and the active share are those of the pooled states
    measured = trainer.measure(model, batch)
    d_ap, d_an = torch.tensor(measured["d_ap_each"]), torch.tensor(measured["d_an_each"])
    assert len(d_ap) == 3 and rec["d_ap"] == pytest.approx(d_ap.mean().item(), rel=1e-5)
    assert rec["active"] == pytest.approx((d_ap - d_an + margin > 0).float().mean().item())
    assert rec["triplet"] == pytest.approx(torch.relu(d_ap - d_an + margin).mean().item(), rel=1e-5)
    assert measured["grad_ratio"] == pytest.approx(rec["grad_ratio"], rel=1e-5)
    # once per step, then every logging_steps; never with log_grad_ratio off
    trainer.compute_loss(model, dict(batch))
    assert trainer.loss_history[-1]["grad_ratio"] is None and trainer.loss_history[-1]["active"] is not None
    trainer.state.logging_steps, trainer.state.global_step = 2, 1
    trainer.compute_loss(model, dict(batch))
    assert trainer.loss_history[-1]["grad_ratio"] is None
    trainer.state.global_step = 2
    trainer.compute_loss(model, dict(batch))
    assert trainer.loss_history[-1]["grad_ratio"] == pytest.approx(want, rel=1e-2)
    off = ConsistencyTrainer(model=model, args=config(tmp_path, alpha=alpha, margin=margin, log_grad_ratio=False))
    off.compute_loss(model, dict(batch))
    assert off.loss_history[-1]["grad_ratio"] is None
    # step 0's activity is in Trainer's log history either way; the ratio only when measured
    assert "grad_ratio" not in off.state.log_history[-1] and off.state.log_history[-1]["step"] == 0
    assert off.state.log_history[-1]["triplet_active"] == off.loss_history[-1]["active"]
    assert [h["step"] for h in trainer.state.log_history] == [0, 2]
    assert trainer.state.log_history[-1]["grad_ratio"] == trainer.loss_history[-1]["grad_ratio"]


def test_screen_measures_the_triplet_term_without_training(fixed_llama, synth_file, tmp_path):
    from consistbench.reference_method.screen import screen_triplets

    cfg = config(tmp_path, alpha=1.0, margin=0.2, per_device_train_batch_size=2)
    before = load_model(fixed_llama).state_dict()
    out = screen_triplets(fixed_llama, synth_file, "all", cfg, MiningConfig(negatives="random"), batches=2,
                          log=lambda _: None)
    assert out["batches"] == 2 and out["triplets"] == 4 and len(out["per_triplet"]["d_ap"]) == 4
    mean = out["mean"]
    assert 0 <= mean["active"] <= 1 and mean["grad_ratio"] > 0 and mean["ce"] > 0
    assert mean["d_ap"] == pytest.approx(sum(out["per_triplet"]["d_ap"]) / 4, rel=1e-5)
    assert out["settings"]["margin"] == 0.2 and out["settings"]["mining"]["negatives"] == "random"
    # a wider margin makes every triplet active; the screen is deterministic for a seed
    wide = screen_triplets(fixed_llama, synth_file, "all", config(tmp_path, alpha=1.0, margin=5.0,
                                                                   per_device_train_batch_size=2),
                           MiningConfig(negatives="random"), batches=2, log=lambda _: None)
    assert wide["mean"]["active"] == 1.0 and wide["per_triplet"] == out["per_triplet"]
    # nothing was trained
    after = load_model(fixed_llama).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ConsistbenchError, match="alpha"):
        screen_triplets(fixed_llama, synth_file, "all", config(tmp_path, alpha=0.0), batches=1, log=lambda _: None)


def test_loss_curves_are_drawn_from_a_card(tmp_path):
    from consistbench.reference_method.loss_chart import plot_loss_curves, step_means

    history = [{"step": s // 2, "ce": 3.0 - 0.1 * s, "triplet": 0.05, "loss": 3.0, "active": 0.7, "d_ap": 0.01,
                "d_an": 0.2, "grad_ratio": 0.1 if s % 4 == 0 else None} for s in range(20)]
    steps, ce = step_means(history, "ce")  # the mean over each step's two micro-batches
    assert steps == list(range(10)) and ce == pytest.approx([3.0 - 0.1 * (2 * s + 0.5) for s in range(10)])
    card = {"variant_type": "all", "training": {"alpha": 1.0, "margin": 0.2, "pooling_layer": -1},
            "loss_history": history}
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "consistbench_train.json").write_text(json.dumps(card))
    out = plot_loss_curves(tmp_path / "m", tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    sft = plot_loss_curves({"loss_history": [{"step": 0, "ce": 2.0, "triplet": None, "loss": 2.0}]},
                           tmp_path / "sft.png")
    assert sft.is_file()
    with pytest.raises(ConsistbenchError, match="no per-step losses"):
        plot_loss_curves({"loss_history": []}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_model_dtype_loads_bf16_weights_and_keeps_lora_in_float32(fixed_llama, tmp_path):
    from consistbench.reference_method.train import load_model as load

    model = load(fixed_llama, config(tmp_path, model_dtype="bfloat16", use_lora=True, lora_r=4, lora_alpha=8))
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes["base_model.model.model.embed_tokens.weight"] == torch.bfloat16
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    with pytest.raises(ValueError, match="model_dtype"):
        config(tmp_path, model_dtype="float16")


@pytest.mark.parametrize("dtype", ["autocast", "weights"])
def test_answer_logits_only_stays_on_in_bfloat16(fixed_llama, tokenizer, tmp_path, dtype):
    """bf16 autocast (bf16=True on CPU) or bf16 weights: the first-batch check still finds the logits to be
    the output embedding of the last hidden state, and the loss is the standard path's to bf16 rounding."""
    _, batch = triplet_batch(tokenizer, 2)
    model = load_model(fixed_llama)
    if dtype == "weights":
        model = model.to(torch.bfloat16)
    model.train()
    kw = dict(alpha=0.5, margin=1.0, bf16=dtype == "autocast", log_grad_ratio=False)
    losses = {}
    for fast in (True, False):
        trainer = ConsistencyTrainer(model=model, args=config(tmp_path, answer_logits_only=fast, **kw))
        if dtype == "autocast":  # as Trainer.train prepares it: autocast inside the model's forward
            model = trainer.accelerator.prepare_model(model)
        with trainer.compute_loss_context_manager():
            losses[fast] = trainer.compute_loss(model, dict(batch)).float().item()
        assert trainer.answer_path_used is fast
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)


def test_config_checks_the_new_options(tmp_path):
    with pytest.raises(ValueError, match="pooled_positions"):
        config(tmp_path, pooled_positions="answer")
    with pytest.raises(ValueError, match="group_by_passage"):
        config(tmp_path, group_by_passage=True, train_sampling_strategy="group_by_length")
    c = config(tmp_path, gradient_checkpointing=True)
    assert c.gradient_checkpointing_kwargs == {"use_reentrant": False}
    # defaults: today's behaviour, and the same fingerprint as a run made before the options existed
    d = config(tmp_path)
    assert (d.pooled_positions, d.padding_free, d.share_prefix, d.group_by_passage, d.model_dtype) == \
        ("question", False, False, False, "float32")
    assert not {"pooled_positions", "group_by_passage", "train_sampling_strategy", "model_dtype"} & set(d.loss_settings())
    assert config(tmp_path, pooled_positions="prompt").loss_settings()["pooled_positions"] == "prompt"


# ---------------------------------------------------------------------------------------------
# whole runs

def _stop_at(step):
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == step:
                control.should_training_stop = True

    return StopAt()


@pytest.mark.slow
def test_a_fast_run_resumes_to_the_same_weights_and_history(fixed_llama, synth_file, tmp_path):
    """share_prefix + padding_free + length-grouped batches + question-only pooling: killed after step 2
    and resumed, the run ends with the uninterrupted run's weights and loss history; the card has the
    activity and the compute settings."""
    def cfg(name):
        return config(tmp_path / name, max_steps=4, save_strategy="steps", save_steps=2, logging_steps=2,
                      per_device_train_batch_size=2, learning_rate=5e-3, margin=1.0, share_prefix=True,
                      padding_free=True, answer_logits_only=True, train_sampling_strategy="group_by_length",
                      pooled_positions="question_only")

    full = train(fixed_llama, synth_file, "all", tmp_path / "full", cfg("a"), log=lambda _: None)
    part = tmp_path / "part"
    train(fixed_llama, synth_file, "all", part, cfg("b"), callbacks=[_stop_at(2)], log=lambda _: None)
    assert latest_checkpoint(tmp_path / "b" / "ckpt").name == "checkpoint-2"
    assert (latest_checkpoint(tmp_path / "b" / "ckpt") / "loss_history.json").is_file()
    resumed = train(fixed_llama, synth_file, "all", part, cfg("b"), resume=True, log=lambda _: None)
    a, b = state(full), state(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    card_a = json.loads((full / "consistbench_train.json").read_text())
    card_b = json.loads((resumed / "consistbench_train.json").read_text())
    assert card_b["loss_history"] == card_a["loss_history"] and len(card_a["loss_history"]) == 4
    assert [h["grad_ratio"] is not None for h in card_a["loss_history"]] == [True, False, True, False]
    assert card_a["triplet_activity"]["first"]["step"] == 0 and card_a["triplet_activity"]["last"]["step"] == 2
    assert card_a["compute"]["share_prefix"] and card_a["compute"]["padding_free"]
    assert card_a["compute"]["positions_computed"] < card_a["compute"]["tokens"]
    assert card_a["training"]["pooled_positions"] == "question_only"
    assert "triplets active" in (full / "README.md").read_text()


@pytest.mark.slow
def test_gradient_checkpointing_with_lora_trains_the_same_model(fixed_llama, synth_file, tmp_path):
    runs = {}
    for gc in (False, True):
        out = train(fixed_llama, synth_file, "all", tmp_path / f"m{gc}",
                    config(tmp_path / f"c{gc}", max_steps=2, per_device_train_batch_size=2, learning_rate=5e-3,
                           margin=1.0, use_lora=True, lora_r=4, lora_alpha=8, gradient_checkpointing=gc,
                           logging_steps=1), log=lambda _: None)
        runs[gc] = state(out)
        card = json.loads((out / "consistbench_train.json").read_text())
        assert card["compute"]["gradient_checkpointing"] is gc
        assert all(h["grad_ratio"] is not None for h in card["loss_history"])  # autograd.grad through checkpoints
    base = load_model(fixed_llama).state_dict()
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(runs[True][key], base[key])  # the adapters inside checkpointed blocks were trained
    for k in runs[False]:
        assert torch.allclose(runs[True][k], runs[False][k], rtol=1e-4, atol=1e-6), k


@pytest.mark.slow
def test_bf16_autocast_on_cpu_runs_every_path_in_bfloat16(fixed_llama, synth_file, tmp_path):
    """bf16=True with use_cpu: the linear layers run in bfloat16 (torch autocast) on the new paths too."""
    from transformers import TrainerCallback

    seen = set()

    class Hook(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            layer = next(m for n, m in model.named_modules() if n.endswith("layers.0.mlp.up_proj"))
            layer.register_forward_hook(lambda m, i, o: seen.add(o.dtype))

    out = train(fixed_llama, synth_file, "all", tmp_path / "bf16",
                config(tmp_path, max_steps=2, per_device_train_batch_size=2, bf16=True, margin=1.0,
                       share_prefix=True, padding_free=True, answer_logits_only=True),
                callbacks=[Hook()], log=lambda _: None)
    card = json.loads((out / "consistbench_train.json").read_text())
    assert seen == {torch.bfloat16} and card["compute"]["bf16"] is True
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in card["loss_history"])
