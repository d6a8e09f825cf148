"""padding_free / share_prefix (reference_method/packing.py): the same CE, pooled states and
gradients as the padded batch, on a tiny random Llama; what the layout computes; when trees are
not used. Tolerances (float32): losses to rtol 1e-5, each parameter's gradient to 1e-4 of its norm
(||g - g_padded|| <= 1e-4 ||g_padded|| + 1e-8)."""

from __future__ import annotations

import pytest
import torch

from consistbench.reference_method.collator import IGNORE_INDEX, CompletionCollator, encode_row
from consistbench.reference_method.consistency_trainer import ConsistencyTrainer
from consistbench.reference_method.packing import layout_of
from tests.trainer_fixtures import config, load_model, synth_rows, triplet_batch

pytest_plugins = ["tests.trainer_fixtures"]  # the fixed tiny Llama, its tokenizer, the synthetic set


def _encode(tokenizer, row, **kw):
    return encode_row(tokenizer, row["context"], row["question"], row["reference"], **kw)


def _triplets(tokenizer, spec, **kw):
    rows = {r["id"]: r for r in synth_rows()}
    items = [{role: _encode(tokenizer, rows[rid], **kw) for role, rid in zip(("anchor", "positive", "negative"), t)}
             for t in spec]
    return items, CompletionCollator(tokenizer.pad_token_id)(items)


def _run(model, tmp_path, batch, items=None, **kw):
    trainer = ConsistencyTrainer(model=model, args=config(tmp_path, log_grad_ratio=False, **kw))
    model.zero_grad()
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=items)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), trainer.loss_history[-1], grads


def _assert_same(got, want):
    (loss_g, rec_g, grads_g), (loss_w, rec_w, grads_w) = got, want
    assert torch.allclose(loss_g, loss_w, rtol=1e-5, atol=1e-7)
    assert rec_g["ce"] == pytest.approx(rec_w["ce"], rel=1e-5)
    if rec_w["triplet"] is not None:
        assert rec_g["triplet"] == pytest.approx(rec_w["triplet"], rel=1e-4, abs=1e-7)
        assert rec_g["d_ap"] == pytest.approx(rec_w["d_ap"], rel=1e-4, abs=1e-7)
        assert rec_g["d_an"] == pytest.approx(rec_w["d_an"], rel=1e-4, abs=1e-7)
    assert grads_g.keys() == grads_w.keys() and grads_w
    for name in grads_w:
        g, w = grads_g[name], grads_w[name]
        assert (g - w).norm() <= 1e-4 * w.norm() + 1e-8, (name, (g - w).norm().item(), w.norm().item())


LAYOUTS = [dict(padding_free=True), dict(share_prefix=True), dict(padding_free=True, share_prefix=True)]


@pytest.mark.parametrize("answer_only", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS, ids=["padding_free", "share_prefix", "both"])
def test_layout_gives_the_padded_batch_loss_and_gradients(fixed_llama, tokenizer, tmp_path, layout, answer_only):
    _, batch = triplet_batch(tokenizer, 3)
    n_labels = torch.tensor(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) + 5)
    model = load_model(fixed_llama)
    model.train()
    kw = dict(alpha=0.5, margin=1.0, pooling_layer=1)
    want = _run(model, tmp_path, batch, n_labels, **kw)
    got = _run(model, tmp_path, batch, n_labels, answer_logits_only=answer_only, **layout, **kw)
    _assert_same(got, want)


@pytest.mark.parametrize("positions", ["prompt", "question_only"])
def test_layout_pools_every_kind_of_position_like_the_padded_batch(fixed_llama, tokenizer, tmp_path, positions):
    spec = [("g0-orig", "g0-howto", "g1-orig"), ("g2-orig", "g2-para", "g3-orig")]
    _, batch = _triplets(tokenizer, spec, question_only=positions == "question_only")
    model = load_model(fixed_llama)
    model.train()
    kw = dict(alpha=1.0, margin=1.0, pooled_positions=positions)
    _assert_same(_run(model, tmp_path, batch, padding_free=True, share_prefix=True, **kw),
                 _run(model, tmp_path, batch, **kw))


def test_eager_attention_takes_the_tree_as_an_additive_mask(fixed_llama, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    _, batch = triplet_batch(tokenizer, 2)
    model = AutoModelForCausalLM.from_pretrained(fixed_llama, dtype=torch.float32, attn_implementation="eager")
    model.train()
    kw = dict(alpha=0.5, margin=1.0)
    _assert_same(_run(model, tmp_path, batch, share_prefix=True, **kw), _run(model, tmp_path, batch, **kw))


def test_lora_gradients_match_too(fixed_llama, tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    _, batch = triplet_batch(tokenizer, 2)
    torch.manual_seed(0)
    model = get_peft_model(load_model(fixed_llama),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    model.train()
    kw = dict(alpha=0.5, margin=1.0, answer_logits_only=True)
    _assert_same(_run(model, tmp_path, batch, padding_free=True, share_prefix=True, **kw),
                 _run(model, tmp_path, batch, **kw))


def test_a_repeated_anchor_is_computed_once_and_counted_twice(fixed_llama, tokenizer, tmp_path):
    """Two triplets of one anchor (one group's how_to and paraphrase): the anchor's passage and question
    are computed once, its CE counts twice, and the loss and gradients are the padded batch's."""
    spec = [("g0-orig", "g0-howto", "g1-orig"), ("g0-orig", "g0-para", "g2-orig")]
    _, batch = _triplets(tokenizer, spec)
    layout = layout_of(batch, share_prefix=True, padding_free=True)
    lengths = batch["attention_mask"].sum(1).tolist()
    # 6 sequences; units: the g0 tree (anchor once, two positives), then g1-orig, g2-orig
    assert len(layout.calls) == 3 and layout.tokens == sum(lengths)
    assert layout.positions < sum(lengths) - lengths[0]  # the repeat and the shared passage are not computed
    assert torch.equal(layout.index[0], layout.index[1])  # both anchors read the same positions
    model = load_model(fixed_llama)
    model.train()
    kw = dict(alpha=0.5, margin=1.0)
    _assert_same(_run(model, tmp_path, batch, share_prefix=True, padding_free=True, **kw),
                 _run(model, tmp_path, batch, **kw))


def test_tree_layout_shares_the_prefix_and_masks_the_other_suffix(tokenizer):
    _, batch = triplet_batch(tokenizer, 1)  # anchor, positive (same passage), negative
    layout = layout_of(batch, share_prefix=True, padding_free=True)
    tree, single = layout.calls
    assert single.attention_mask is None  # the negative: one unpadded sequence, the model's own causal mask
    n_a, n_p = batch["attention_mask"].sum(1).tolist()[:2]
    ids = batch["input_ids"]
    prefix = int((ids[0, :min(n_a, n_p)] != ids[1, :min(n_a, n_p)]).nonzero()[0])
    size = prefix + (n_a - prefix) + (n_p - prefix)
    assert tree.input_ids.shape == (1, size) and layout.shared == prefix
    mask = tree.attention_mask[0, 0]
    a_end = n_a  # the anchor's suffix occupies [prefix, n_a), the positive's [n_a, size)
    assert mask[a_end, :prefix].all() and not mask[a_end, prefix:a_end].any() and mask[a_end, a_end]
    assert mask[a_end - 1, prefix:a_end].all() and mask[prefix, :prefix].all()
    # positions restart at the prefix for the positive's suffix
    assert tree.position_ids[0, a_end].item() == prefix
    # every label lies in a suffix, once: the same count as the padded batch's
    assert int((tree.targets != IGNORE_INDEX).sum() + (single.targets != IGNORE_INDEX).sum()) == \
        int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    # the anchor's tokens are where the index says
    flat = torch.cat([c.input_ids.flatten() for c in layout.calls])
    for i, n in enumerate(batch["attention_mask"].sum(1).tolist()):
        assert torch.equal(flat[layout.index[i, :n]], ids[i, :n])


def test_rows_of_one_group_share_their_passage(fixed_llama, tokenizer, tmp_path):
    """examples="rows" (plain SFT): rows of one group in a batch share the passage."""
    rows = [r for r in synth_rows() if r["group_id"] in ("g0", "g1")]
    batch = CompletionCollator(tokenizer.pad_token_id)([_encode(tokenizer, r) for r in rows])
    layout = layout_of(batch, share_prefix=True, padding_free=True)
    assert len(layout.calls) == 2 and layout.shared > 0
    model = load_model(fixed_llama)
    model.train()
    _assert_same(_run(model, tmp_path, batch, alpha=0.0, share_prefix=True, padding_free=True),
                 _run(model, tmp_path, batch, alpha=0.0))


def test_sliding_window_models_compute_long_sequences_unshared(tokenizer, tmp_path):
    """Gemma 2 (sliding-window layers, soft-capped logits): a 4-D mask would replace its sliding mask, so
    sequences longer than the window are not put in trees; the loss still equals the padded batch's."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=8, sliding_window=16,
                       pad_token_id=tokenizer.pad_token_id, attn_implementation="eager")
    model = Gemma2ForCausalLM(cfg)
    model.train()
    _, batch = triplet_batch(tokenizer, 2)
    trainer = ConsistencyTrainer(model=model, args=config(tmp_path, share_prefix=True, log_grad_ratio=False))
    rule = trainer._trees(model)
    assert rule == {"trees": True, "max_tree_length": 16}
    assert all(c.attention_mask is None or c.attention_mask.dim() < 4 for c in layout_of(batch, share_prefix=True,
                                                                                          padding_free=True, **rule).calls)
    kw = dict(alpha=0.5, margin=1.0)
    _assert_same(_run(model, tmp_path, batch, share_prefix=True, padding_free=True, answer_logits_only=True, **kw),
                 _run(model, tmp_path, batch, **kw))


def test_layout_refuses_left_padding():
    ids = torch.tensor([[0, 5, 6], [5, 6, 7]])
    with pytest.raises(ValueError, match="right-padded"):
        layout_of({"input_ids": ids, "attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
                   "labels": ids}, share_prefix=True, padding_free=True)
