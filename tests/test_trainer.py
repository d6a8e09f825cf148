"""SFT + triplet trainer on a tiny random Llama: collator, loss, resume, LoRA, eos, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.prompting import prompt_text
from consistbench.reference_method.collator import IGNORE_INDEX, CompletionCollator, encode_row
from consistbench.reference_method.consistency_config import ConsistencyConfig
from consistbench.reference_method.consistency_trainer import ConsistencyTrainer, pool, triplet_loss
from consistbench.reference_method.train import latest_checkpoint, train
from consistbench.reference_method.triplets import MiningConfig

QUESTIONS = [
    ("How do I copy a list?", "Use list.copy() or slicing.",
     "To copy a list, call list.copy() or slice it with [:]."),
    ("How do I sort a dictionary by value?", "Use sorted() with a key function.",
     "sorted(d.items(), key=lambda kv: kv[1]) sorts a dict's items by value."),
    ("How do I read a file line by line?", "Iterate over the file object.",
     "A file object is iterable: for line in f reads it line by line."),
    ("How do I remove duplicates from a list?", "Use dict.fromkeys().",
     "list(dict.fromkeys(xs)) removes duplicates while keeping order."),
]


def synth_rows() -> list[dict]:
    rows = []
    for i, (q, a, c) in enumerate(QUESTIONS):
        base = {"group_id": f"g{i}", "split": "train", "context": c, "reference": a, "passage_id": f"doc.html#p{i}",
                "source": "https://docs.python.org/3.11/doc.html"}
        rows.append(dict(base, id=f"g{i}-orig", variant_type="original", question=q))
        rows.append(dict(base, id=f"g{i}-howto", variant_type="how_to", question=q.replace("How do I", "How to")[:-1]))
        rows.append(dict(base, id=f"g{i}-para", variant_type="paraphrase",
                         question="What is the way to " + q[len("How do I "):]))
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def fixed_llama(tiny_llama_dir, tmp_path_factory) -> Path:
    """The tiny Llama after `consistbench doctor --fix` (distinct pad token)."""
    from consistbench.reference_method.doctor import fix

    out = tmp_path_factory.mktemp("fixed") / "model"
    fix(tiny_llama_dir, out)
    return out


@pytest.fixture(scope="module")
def tokenizer(fixed_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(fixed_llama)


@pytest.fixture
def synth_file(tmp_path) -> Path:
    return write_rows(tmp_path / "synth.jsonl", synth_rows())


def config(tmp_path: Path, **kw) -> ConsistencyConfig:
    base = dict(output_dir=str(tmp_path / "ckpt"), per_device_train_batch_size=1, learning_rate=1e-3, seed=0,
                logging_steps=1, save_strategy="no", disable_tqdm=True, use_cpu=True, dataloader_pin_memory=False)
    base.update(kw)
    return ConsistencyConfig(**base)


def triplet_batch(tokenizer, n: int = 2):
    rows = {r["id"]: r for r in synth_rows()}
    items = []
    for i in range(n):
        a, p, neg = rows[f"g{i}-orig"], rows[f"g{i}-howto"], rows[f"g{(i + 1) % len(QUESTIONS)}-orig"]
        items.append({role: encode_row(tokenizer, r["context"], r["question"], r["reference"])
                      for role, r in (("anchor", a), ("positive", p), ("negative", neg))})
    return items, CompletionCollator(tokenizer.pad_token_id)(items)


def load_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


# ---------------------------------------------------------------------------------------------
# collator and prompt

def test_encode_row_uses_the_eval_prompt_in_the_chat_template(tokenizer):
    q, a, c = QUESTIONS[0]
    enc = encode_row(tokenizer, c, q, a)
    user = tokenizer.apply_chat_template([{"role": "user", "content": prompt_text(c, q)}], tokenize=False,
                                         add_generation_prompt=True)
    prompt_ids = tokenizer(user, add_special_tokens=False)["input_ids"]
    assert enc["input_ids"][:enc["prompt_length"]] == prompt_ids
    answer = enc["input_ids"][enc["prompt_length"]:]
    assert answer[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(answer[:-1]) == a
    query = tokenizer.decode(enc["input_ids"][enc["query_start"]:enc["query_end"]])
    assert query.strip() == q


def test_encode_row_without_chat_template_is_the_raw_prompt(tokenizer):
    from copy import deepcopy

    tok = deepcopy(tokenizer)
    tok.chat_template = None
    q, a, c = QUESTIONS[1]
    enc = encode_row(tok, c, q, a)
    assert tok.decode(enc["input_ids"][:enc["prompt_length"]]) == prompt_text(c, q)
    assert tok.decode(enc["input_ids"][enc["prompt_length"]:-1]) == " " + a
    assert tok.decode(enc["input_ids"][enc["query_start"]:enc["query_end"]]).strip() == q


def test_collator_masks_the_prompt_and_keeps_eos_even_when_pad_is_eos(tiny_llama_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert tok.pad_token_id == tok.eos_token_id  # SmolLM2's tokenizer: the trap itself
    short = encode_row(tok, "Use x.", "How do I y?", "Use x.")
    long = encode_row(tok, QUESTIONS[0][2], QUESTIONS[0][0], QUESTIONS[0][1])
    batch = CompletionCollator(tok.pad_token_id)([short, long])
    for i, enc in enumerate((short, long)):
        size, start = len(enc["input_ids"]), enc["prompt_length"]
        labels = batch["labels"][i]
        assert (labels[:start] == IGNORE_INDEX).all()
        assert labels[start:size].tolist() == enc["input_ids"][start:]
        assert labels[size - 1].item() == tok.eos_token_id  # the eos is a label, though it equals the pad id
        assert (labels[size:] == IGNORE_INDEX).all() and (batch["attention_mask"][i, size:] == 0).all()
    assert "query_mask" not in batch


def test_collator_lays_out_triplets_anchor_positive_negative(tokenizer):
    items, batch = triplet_batch(tokenizer, 2)
    assert batch["input_ids"].shape[0] == 6
    order = [items[0]["anchor"], items[1]["anchor"], items[0]["positive"], items[1]["positive"],
             items[0]["negative"], items[1]["negative"]]
    for i, enc in enumerate(order):
        assert batch["input_ids"][i, :len(enc["input_ids"])].tolist() == enc["input_ids"]
        mask = batch["query_mask"][i]
        assert mask.sum().item() == enc["query_end"] - enc["query_start"]
        assert mask[enc["query_start"]:enc["query_end"]].eq(1).all()


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


def test_naive_pad_masking_would_drop_the_eos(tiny_llama_dir):
    """Why the doctor refuses pad == eos: transformers' LM collator masks every pad-id label, eos included."""
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    ids = tok("Use copy.copy().", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    labels = DataCollatorForLanguageModeling(tok, mlm=False)([{"input_ids": ids}])["labels"][0]
    assert labels[-1].item() == IGNORE_INDEX


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
