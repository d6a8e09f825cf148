"""The training collator on a tiny random Llama: the evaluation prompt in the chat template, the
prompt masked and eos kept (even when pad is eos), triplets laid out anchor / positive / negative."""

from __future__ import annotations

from consistbench.benchmark.prompting import prompt_text
from consistbench.reference_method.collator import IGNORE_INDEX, CompletionCollator, encode_row
from tests.trainer_fixtures import QUESTIONS, triplet_batch

pytest_plugins = ["tests.trainer_fixtures"]  # the fixed tiny Llama, its tokenizer, the synthetic set


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
    # rows carry the query span too (share_prefix groups rows by the tokens before it)
    for i, enc in enumerate((short, long)):
        assert batch["query_mask"][i].nonzero().flatten().tolist() == list(range(enc["query_start"], enc["query_end"]))
    assert "question_input_ids" not in batch  # only rows encoded with question_only


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


def test_naive_pad_masking_would_drop_the_eos(tiny_llama_dir):
    """Why the doctor refuses pad == eos: transformers' LM collator masks every pad-id label, eos included."""
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    ids = tok("Use copy.copy().", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    labels = DataCollatorForLanguageModeling(tok, mlm=False)([{"input_ids": ids}])["labels"][0]
    assert labels[-1].item() == IGNORE_INDEX


def test_question_only_encodes_the_question_alone_in_the_chat_template(tokenizer):
    """pooled_positions="question_only": the question as the user turn, cut after its last token; its span."""
    from copy import deepcopy

    q, a, c = QUESTIONS[0]
    enc = encode_row(tokenizer, c, q, a, question_only=True)
    ids = enc["question_ids"]
    assert tokenizer.decode(ids[enc["question_query_start"]:enc["question_query_end"]]).strip() == q
    assert enc["question_query_end"] == len(ids)  # nothing after the question: later tokens cannot change its states
    templated = tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(ids) == templated[:templated.index(q) + len(q)]
    assert c.split()[0] not in tokenizer.decode(ids)  # no passage
    raw = deepcopy(tokenizer)
    raw.chat_template = None
    enc_raw = encode_row(raw, c, q, a, question_only=True)
    assert raw.decode(enc_raw["question_ids"]).strip() == q
    # the collator pads them into question_* tensors in the sequences' order
    items = [enc, encode_row(tokenizer, QUESTIONS[1][2], QUESTIONS[1][0], QUESTIONS[1][1], question_only=True)]
    batch = CompletionCollator(tokenizer.pad_token_id)(items)
    for i, e in enumerate(items):
        n = len(e["question_ids"])
        assert batch["question_input_ids"][i, :n].tolist() == e["question_ids"]
        assert batch["question_attention_mask"][i].sum().item() == n
        assert batch["question_query_mask"][i].nonzero().flatten().tolist() == \
            list(range(e["question_query_start"], e["question_query_end"]))
