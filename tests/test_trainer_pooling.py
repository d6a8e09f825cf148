"""What the triplet term pools (``pooled_positions``), the length-grouped order through Trainer's
dataloader, and the activity entries in Trainer's log history (``trainer_state.json``). Tiny random
Llama, CPU, seconds each."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from consistbench.reference_method.collator import CompletionCollator, encode_row
from consistbench.reference_method.consistency_trainer import ConsistencyTrainer
from consistbench.reference_method.samplers import GroupedSampler
from tests.trainer_fixtures import config, load_model, synth_rows

pytest_plugins = ["tests.trainer_fixtures"]  # the fixed tiny Llama, its tokenizer, the synthetic set

SPEC = [("g0-orig", "g0-howto", "g1-orig"), ("g2-orig", "g2-para", "g3-orig")]


def _items(tokenizer):
    rows = {r["id"]: r for r in synth_rows()}
    return [{role: encode_row(tokenizer, rows[rid]["context"], rows[rid]["question"], rows[rid]["reference"],
                              question_only=True) | {"question": rows[rid]["question"]}
             for role, rid in zip(("anchor", "positive", "negative"), t)} for t in SPEC]


def _spans(enc: dict, positions: str) -> tuple[list[int], list[int]]:
    """The token ids fed to the model and the positions pooled, from the encoded row alone."""
    if positions == "question_only":
        ids, span = enc["question_ids"], range(enc["question_query_start"], enc["question_query_end"])
    elif positions == "question":
        ids, span = enc["input_ids"], range(enc["query_start"], enc["query_end"])
    else:
        ids, span = enc["input_ids"], range(enc["prompt_length"])
    return ids, list(span)


@pytest.mark.parametrize("positions", ["question", "question_only", "prompt"])
def test_each_pooled_positions_choice_pools_exactly_its_tokens(fixed_llama, tokenizer, tmp_path, positions):
    items = _items(tokenizer)
    model = load_model(fixed_llama)
    want = []
    for item in items:
        pooled = {}
        for role in ("anchor", "positive", "negative"):
            enc, question = item[role], item[role]["question"]
            ids, span = _spans(enc, positions)
            text = tokenizer.decode(ids[span[0]:span[-1] + 1])
            if positions == "prompt":  # every prompt token: the passage and the question, no answer
                assert span == list(range(enc["prompt_length"])) and question in text
            else:  # the question's tokens, nothing before or after
                assert text.strip() == question
            with torch.no_grad():
                hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
            pooled[role] = hidden[span].mean(0)
        want.append(((1 - F.cosine_similarity(pooled["anchor"], pooled["positive"], dim=0)).item(),
                     (1 - F.cosine_similarity(pooled["anchor"], pooled["negative"], dim=0)).item()))
    batch = CompletionCollator(tokenizer.pad_token_id)([{k: {f: v for f, v in r.items() if f != "question"}
                                                          for k, r in it.items()} for it in items])
    trainer = ConsistencyTrainer(model=model, args=config(tmp_path, alpha=1.0, margin=1.0, pooled_positions=positions,
                                                          log_grad_ratio=False))
    got = trainer.measure(model, batch)
    assert got["d_ap_each"] == pytest.approx([w[0] for w in want], rel=1e-4, abs=1e-6)
    assert got["d_an_each"] == pytest.approx([w[1] for w in want], rel=1e-4, abs=1e-6)


def test_the_three_choices_pool_different_states(fixed_llama, tokenizer, tmp_path):
    """A guard for the test above: the choices are not the same computation under three names."""
    items = [{k: {f: v for f, v in r.items() if f != "question"} for k, r in it.items()} for it in _items(tokenizer)]
    batch = CompletionCollator(tokenizer.pad_token_id)(items)
    model = load_model(fixed_llama)
    d = {p: ConsistencyTrainer(model=model, args=config(tmp_path, alpha=1.0, pooled_positions=p, log_grad_ratio=False))
         .measure(model, batch)["d_an_each"] for p in ("question", "question_only", "prompt")}
    assert d["question"] != pytest.approx(d["question_only"], rel=1e-3)
    assert d["question"] != pytest.approx(d["prompt"], rel=1e-3)


@pytest.mark.parametrize("strategy", ["group_by_length", "random"])
def test_trainer_batches_hold_every_example_once_per_epoch(fixed_llama, tokenizer, tmp_path, strategy):
    """Through Trainer's own dataloader (what training iterates): triplets length-grouped by GroupedSampler,
    each drawn once per epoch, in batches of per_device_train_batch_size."""
    rows = synth_rows()
    enc = [encode_row(tokenizer, r["context"], r["question"], r["reference"]) for r in rows]
    items = [{"anchor": enc[i], "positive": enc[(i + 1) % len(enc)], "negative": enc[(i + 5) % len(enc)], "id": i}
             for i in range(len(enc))]
    trainer = ConsistencyTrainer(model=load_model(fixed_llama),
                                 args=config(tmp_path, per_device_train_batch_size=4, train_sampling_strategy=strategy),
                                 train_dataset=items, data_collator=lambda feats: {"ids": [f["id"] for f in feats]})
    assert isinstance(trainer._get_train_sampler(), GroupedSampler) is (strategy == "group_by_length")
    for epoch in range(2):
        loader = trainer.get_train_dataloader()
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        batches = [b["ids"] for b in loader]
        drawn = [i for b in batches for i in b]
        assert sorted(drawn) == list(range(len(items))) and all(len(b) == 4 for b in batches)
        if strategy == "group_by_length":
            lengths = [max(len(items[i][r]["input_ids"]) for r in ("anchor", "positive", "negative")) for i in drawn]
            assert lengths[0] == max(lengths)  # the longest batch first


def test_activity_is_in_the_log_history_and_trainer_state(fixed_llama, synth_file, tmp_path):
    """Step 0 and every logging step: an entry with the active share and the gradient ratio; every training
    log: the mean CE, triplet and active share. Saved in the checkpoint's trainer_state.json, which the
    loss chart reads."""
    from consistbench.reference_method.loss_chart import history_from_log, plot_loss_curves
    from consistbench.reference_method.train import train
    from consistbench.reference_method.triplets import MiningConfig

    cfg = config(tmp_path / "c", alpha=1.0, margin=1.0, max_steps=4, logging_steps=2, save_strategy="steps",
                 save_steps=4, per_device_train_batch_size=2)
    out = train(fixed_llama, synth_file, "all", tmp_path / "m", cfg, MiningConfig(negatives="random"),
                keep_checkpoints=True, log=lambda _: None)
    log = json.loads((tmp_path / "c" / "ckpt" / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    activity = [h for h in log if "grad_ratio" in h]
    assert [h["step"] for h in activity] == [0, 2]
    for h in activity:
        assert 0 <= h["triplet_active"] <= 1 and h["grad_ratio"] > 0 and h["d_an"] >= 0 and h["ce"] > 0
    training = [h for h in log if "loss" in h]
    assert [h["step"] for h in training] == [2, 4]
    assert all({"ce", "triplet", "triplet_active"} <= set(h) for h in training)
    card = json.loads((out / "consistbench_train.json").read_text())
    per_step = card["loss_history"]
    assert activity[0]["grad_ratio"] == pytest.approx(per_step[0]["grad_ratio"])
    assert training[0]["ce"] == pytest.approx((per_step[0]["ce"] + per_step[1]["ce"]) / 2)
    assert training[1]["triplet_active"] == pytest.approx((per_step[2]["active"] + per_step[3]["active"]) / 2)
    curves = history_from_log(log)
    assert [h["step"] for h in curves if h["ce"] is not None] == [0, 2, 4]  # step 0 from its activity entry
    assert [h["step"] for h in curves if h["grad_ratio"] is not None] == [0, 2]
    png = plot_loss_curves(tmp_path / "c" / "ckpt" / "checkpoint-4", tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
