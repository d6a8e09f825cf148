"""The SFT + triplet loss on a tiny random Llama: alpha 0 is plain SFT, CE plus alpha times the
triplet term on pooled query states, answer-only logits give the standard loss and gradients,
pooling, and the config's checks."""

from __future__ import annotations

import json

import pytest
import torch

from consistbench.reference_method.collator import IGNORE_INDEX, CompletionCollator
from consistbench.reference_method.consistency_trainer import ConsistencyTrainer, pool, triplet_loss
from consistbench.reference_method.train import train
from tests.trainer_fixtures import config, load_model, state, triplet_batch

pytest_plugins = ["tests.trainer_fixtures"]  # the fixed tiny Llama, its tokenizer, the synthetic set


# ---------------------------------------------------------------------------------------------
# the loss

def test_alpha_zero_is_exactly_plain_sft(fixed_llama, tokenizer, tmp_path):
    from transformers import Trainer, TrainingArguments

    _, batch = triplet_batch(tokenizer)
    model = load_model(fixed_llama)
    model.train()
    ours = ConsistencyTrainer(model=model, args=config(tmp_path, alpha=0.0))
    plain = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "plain"), use_cpu=True,
                                                        report_to="none", remove_unused_columns=False))
    sft_inputs = {k: v for k, v in batch.items() if k != "query_mask"}
    torch.manual_seed(0)
    got = ours.compute_loss(model, dict(batch), num_items_in_batch=None)
    torch.manual_seed(0)
    want = plain.compute_loss(model, sft_inputs, num_items_in_batch=None)
    assert torch.equal(got, want)
    # and that loss is the cross-entropy of the answer tokens only
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shift = batch["labels"][:, 1:]
    manual = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), shift.reshape(-1),
                                               ignore_index=IGNORE_INDEX)
    assert torch.allclose(got.detach(), manual, atol=1e-5)


def test_loss_is_ce_plus_alpha_times_triplet_on_pooled_query_states(fixed_llama, tokenizer, tmp_path):
    _, batch = triplet_batch(tokenizer)
    model = load_model(fixed_llama)
    model.train()
    trainer = ConsistencyTrainer(model=model, args=config(tmp_path, alpha=0.5, margin=1.0, pooling_layer=1))
    loss = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                    output_hidden_states=True)
    pooled = pool(out.hidden_states[1], batch["query_mask"], "mean")
    a, p, n = pooled.chunk(3)
    d_ap = 1 - torch.nn.functional.cosine_similarity(a, p)
    d_an = 1 - torch.nn.functional.cosine_similarity(a, n)
    expected_triplet = torch.clamp(d_ap - d_an + 1.0, min=0).mean()
    assert expected_triplet > 0
    assert torch.allclose(loss.detach(), out.loss + 0.5 * expected_triplet, atol=1e-5)
    last = trainer.loss_history[-1]
    assert last["triplet"] == pytest.approx(expected_triplet.item(), abs=1e-5)


def test_triplet_term_is_zero_when_the_margin_is_met():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    n = torch.tensor([[-1.0, 0.0], [0.0, -1.0]])
    assert triplet_loss(a, p, n, margin=0.5).item() == 0.0  # d(a,p) ~ 0.006, d(a,n) = 2
    assert triplet_loss(a, p, n, margin=0.5, kind="euclidean").item() == 0.0
    # not met: the hinge is active and equals d(a,p) - d(a,n) + margin
    got = triplet_loss(a, n, p, margin=0.5)
    d_ap = 2.0
    d_an = 1 - torch.nn.functional.cosine_similarity(a, p).mean().item()
    assert got.item() == pytest.approx(d_ap - d_an + 0.5, abs=1e-6)


def test_trainer_adds_nothing_when_every_margin_is_met(fixed_llama, tokenizer, tmp_path):
    """Positive == anchor and margin 0: d(a,p) = 0 <= d(a,n), so L = L_CE exactly."""
    items, _ = triplet_batch(tokenizer)
    same = [{"anchor": it["anchor"], "positive": it["anchor"], "negative": it["negative"]} for it in items]
    batch = CompletionCollator(tokenizer.pad_token_id)(same)
    model = load_model(fixed_llama)
    model.train()
    trainer = ConsistencyTrainer(model=model, args=config(tmp_path, alpha=2.0, margin=0.0))
    loss = trainer.compute_loss(model, dict(batch))
    assert trainer.loss_history[-1]["triplet"] == 0.0
    plain = ConsistencyTrainer(model=model, args=config(tmp_path, alpha=0.0))
    assert torch.equal(loss, plain.compute_loss(model, dict(batch)))


def _loss_and_grads(trainer, model, batch, items):
    model.zero_grad()
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=items)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("alpha", [0.0, 0.5])
@pytest.mark.parametrize("items", [None, "count"])
@pytest.mark.parametrize("lora", [False, True])
def test_answer_logits_only_gives_the_standard_loss_and_gradients(fixed_llama, tokenizer, tmp_path, alpha, items, lora):
    """The same CE (and triplet term) and the same gradients as Trainer's path, with or without
    Trainer's token count, full fine-tuning or LoRA; only the answer positions get logits."""
    _, batch = triplet_batch(tokenizer)
    n_labels = torch.tensor(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) + 3) if items else None
    model = load_model(fixed_llama)
    if lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    model.train()
    kw = dict(alpha=alpha, margin=1.0, pooling_layer=1)
    standard = ConsistencyTrainer(model=model, args=config(tmp_path, **kw))
    fast = ConsistencyTrainer(model=model, args=config(tmp_path, answer_logits_only=True, **kw))
    want, want_grads = _loss_and_grads(standard, model, batch, n_labels)
    got, got_grads = _loss_and_grads(fast, model, batch, n_labels)
    assert fast._answer_path is True
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert fast.loss_history[-1]["ce"] == pytest.approx(standard.loss_history[-1]["ce"], rel=1e-5)
    if alpha:
        assert fast.loss_history[-1]["triplet"] == pytest.approx(standard.loss_history[-1]["triplet"], rel=1e-5, abs=1e-7)
    assert want_grads.keys() == got_grads.keys() and want_grads
    for name in want_grads:
        assert torch.allclose(got_grads[name], want_grads[name], rtol=1e-4, atol=1e-6), name


def test_answer_logits_only_computes_logits_for_answer_positions_only(fixed_llama, tokenizer, tmp_path):
    _, batch = triplet_batch(tokenizer)
    model = load_model(fixed_llama)
    model.train()
    rows_seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: rows_seen.append(i[0].shape))
    trainer = ConsistencyTrainer(model=model, args=config(tmp_path, answer_logits_only=True, alpha=0.0))
    trainer.compute_loss(model, dict(batch))
    hook.remove()
    answer_positions = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert rows_seen[-1] == (answer_positions, model.config.hidden_size)  # one row per label, not B x L
    assert answer_positions < batch["input_ids"].numel() / 2


def test_answer_logits_only_keeps_the_standard_path_for_soft_capped_logits(tmp_path, caplog):
    """Gemma 2 soft-caps its logits: the output embedding alone is not the model's logits, so the
    check on the first batch keeps Trainer's path (and says so) and the loss is unchanged."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1, head_dim=8, final_logit_softcapping=0.5, pad_token_id=0)
    model = Gemma2ForCausalLM(cfg)
    model.train()
    ids = torch.randint(1, 64, (3, 12))
    labels = ids.clone()
    labels[:, :6] = IGNORE_INDEX
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    fast = ConsistencyTrainer(model=model, args=config(tmp_path, answer_logits_only=True, alpha=0.0))
    standard = ConsistencyTrainer(model=model, args=config(tmp_path, alpha=0.0))
    with caplog.at_level("WARNING"):
        got = fast.compute_loss(model, dict(batch))
    assert fast._answer_path is False
    assert "soft" in caplog.text or "not its output embedding" in caplog.text
    assert torch.equal(got, standard.compute_loss(model, dict(batch)))


@pytest.mark.slow
def test_answer_logits_only_trains_the_same_model(fixed_llama, synth_file, tmp_path):
    """A few LoRA steps with CE + triplet: the weights agree with the standard path's to float rounding."""
    runs = {}
    for flag in (False, True):
        out = train(fixed_llama, synth_file, "all", tmp_path / f"m{flag}",
                    config(tmp_path / f"c{flag}", alpha=1.0, margin=1.0, learning_rate=5e-3, max_steps=3,
                           per_device_train_batch_size=2, use_lora=True, lora_r=4, lora_alpha=8,
                           answer_logits_only=flag),
                    log=lambda _: None)
        runs[flag] = state(out)
        card = json.loads((out / "consistbench_train.json").read_text())
        assert card["compute"]["answer_logits_only"] is flag
    base = load_model(fixed_llama).state_dict()
    key = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(runs[True][key], base[key])
    for k in runs[False]:
        assert torch.allclose(runs[True][k], runs[False][k], rtol=1e-4, atol=1e-6), k


@pytest.mark.parametrize("mode", ["mean", "last", "max"])
def test_pooling_reads_only_query_positions(mode):
    hidden = torch.randn(2, 5, 3)
    mask = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.float32)
    got = pool(hidden, mask, mode)
    for i in range(2):
        sel = hidden[i][mask[i] == 1]
        want = {"mean": sel.mean(0), "last": sel[-1], "max": sel.max(0).values}[mode]
        assert torch.allclose(got[i], want)
    hidden2 = hidden.clone()
    hidden2[mask == 0] = 1e3  # non-query positions must not matter
    assert torch.allclose(pool(hidden2, mask, mode), got)


def test_config_validates_literals_and_ranges(tmp_path):
    with pytest.raises(ValueError, match="distance"):
        config(tmp_path, distance="manhattan")
    with pytest.raises(ValueError, match="pooling"):
        config(tmp_path, pooling="median")
    with pytest.raises(ValueError, match="alpha"):
        config(tmp_path, alpha=-1)
    c = config(tmp_path)
    assert (c.alpha, c.margin, c.distance, c.pooling_layer, c.pooling, c.remove_unused_columns) == \
        (1.0, 0.2, "cosine", -1, "mean", False)
