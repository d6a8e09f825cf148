"""consistbench-hf's generator: the same greedy answers as transformers' ``generate``, fewer computations.

Tiny random models (float32), built here. The reference is ``model.generate`` on each prompt
alone (batch 1, no padding), greedy; the prefix-reuse generator must give the same tokens for
any number of slots, prompts of mixed lengths, groups sharing a context, a prompt that is a
prefix of another, and duplicates. Stop strings and end-of-sequence follow lm-eval's HF model.
"""

from __future__ import annotations

import json
import logging
import random

import pytest
import torch

from consistbench.benchmark.fastgen import PrefixGenerator, assign_nodes, build_prefix_tree, prefill_tokens

VOCAB = 300


def _llama(seed: int = 0, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    kw = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0,
              tie_word_embeddings=True, initializer_range=0.3)
    kw.update(overrides)
    return LlamaForCausalLM(LlamaConfig(**kw)).eval()


def _gemma3(seed: int = 0):
    """A tiny Gemma 3 text model: sliding-window layers (window 8) beside full-attention ones."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=8,
                           layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                           max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                           initializer_range=0.3)
    return Gemma3ForCausalLM(cfg).eval()


def _grouped_prompts(seed: int = 0, groups: int = 6) -> list[list[int]]:
    """Groups of 1-4 prompts sharing a context of 12-40 tokens, own suffixes of 1-9 tokens, a common
    system prefix for all, plus a prompt that is a prefix of another and an exact duplicate."""
    rng = random.Random(seed)
    system = [rng.randrange(3, VOCAB) for _ in range(6)]
    seqs = []
    for _ in range(groups):
        ctx = system + [rng.randrange(3, VOCAB) for _ in range(rng.randrange(12, 40))]
        for _ in range(rng.randrange(1, 5)):
            seqs.append(ctx + [rng.randrange(3, VOCAB) for _ in range(rng.randrange(1, 10))])
    seqs.append(seqs[0][: len(seqs[0]) - 3])  # a prefix of another prompt
    seqs.append(list(seqs[1]))                # a duplicate
    seqs.append([rng.randrange(3, VOCAB) for _ in range(3)])  # unrelated and short
    return seqs


def _reference(model, seqs, max_new, eos=None):
    out = []
    for s in seqs:
        ids = torch.tensor([s])
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                             pad_token_id=0, eos_token_id=eos)
        toks = gen[0, len(s):].tolist()
        if eos is not None and eos in toks:
            toks = toks[: toks.index(eos)]
        out.append(toks)
    return out


@pytest.fixture(scope="module")
def llama():
    return _llama()


@pytest.fixture(scope="module")
def prompts():
    return _grouped_prompts()


@pytest.fixture(scope="module")
def reference(llama, prompts):
    return _reference(llama, prompts, 10)


@pytest.mark.parametrize("slots", [1, 3, 16])
def test_same_tokens_as_generate(llama, prompts, reference, slots):
    gen = PrefixGenerator(llama, slots=slots, min_saved_tokens=8, admit_min=2)
    out = gen.generate(prompts, 10)
    assert out == reference
    # the prefix was reused: fewer prompt tokens computed than given
    assert gen.stats.prefill_tokens < gen.stats.prompt_tokens
    assert gen.stats.generated_tokens == sum(len(t) for t in reference)


def test_same_tokens_without_prefix_reuse(llama, prompts, reference):
    gen = PrefixGenerator(llama, slots=4, min_saved_tokens=10**9)
    assert gen.generate(prompts, 10) == reference
    assert gen.stats.prefill_tokens == gen.stats.prompt_tokens


def test_end_of_sequence_retires_a_row(llama, prompts):
    # pick as "eos" a token the reference produces mid-answer, so that some rows stop early
    free = _reference(llama, prompts, 10)
    eos = free[0][3]
    ref = _reference(llama, prompts, 10, eos=eos)
    assert any(len(r) < 10 for r in ref)
    done = {}
    gen = PrefixGenerator(llama, slots=3, min_saved_tokens=8)
    out = gen.generate(prompts, 10, eos_ids=[eos], on_done=lambda row, toks: done.setdefault(row, list(toks)))
    assert out == ref
    assert done == dict(enumerate(ref))  # every row reported once, as it retired


def test_sliding_window_model_same_tokens():
    """Gemma 3's mixed sliding/full layers: prompts longer than the window, against its own cache."""
    model = _gemma3()
    seqs = _grouped_prompts(seed=1, groups=4)
    ref = _reference(model, seqs, 8)
    for slots in (1, 5):
        out = PrefixGenerator(model, slots=slots, min_saved_tokens=8).generate(seqs, 8)
        assert out == ref, slots


def test_prefix_tree_shares_contexts_and_folds_small_splits():
    a = [1] * 40
    seqs = [a + [5, 6], a + [7], a + [8, 9, 10], [1] * 3 + [4] * 30, [2, 3]]
    root, order = build_prefix_tree(seqs, min_saved_tokens=32)
    nodes = assign_nodes(root, len(seqs))
    # the three rows on context `a` share one node of depth 40; the split at depth 3 saves
    # (4 - 1) * 3 = 9 < 32 tokens, so it is folded into the root
    assert nodes[0] is nodes[1] is nodes[2] and nodes[0].depth == 40
    assert nodes[3] is root and nodes[4] is root
    assert prefill_tokens(seqs, root, nodes) == 40 + 2 + 1 + 3 + 33 + 2
    assert sorted(order) == list(range(len(seqs)))
    # a prompt equal to a shared prefix keeps its last token to itself
    root, _ = build_prefix_tree([a, a + [3], a + [4]], min_saved_tokens=1)
    nodes = assign_nodes(root, 3)
    assert nodes[0].depth < 40 and nodes[1].depth == 40


def test_bad_input(llama):
    gen = PrefixGenerator(llama, slots=2)
    with pytest.raises(ValueError, match="empty prompt"):
        gen.generate([[5, 6], []], 4)
    assert gen.generate([], 4) == []
    assert gen.generate([[5, 6]], 0) == [[]]


# ---------------------------------------------------------------------------------------------
# the lm-eval model: stop strings, fallbacks

@pytest.fixture(scope="module")
def lm_pair(tiny_llama_dir):
    """lm-eval's HFLM and consistbench-hf on the same tiny model (SmolLM2's tokenizer)."""
    from lm_eval.models.huggingface import HFLM

    from consistbench.benchmark.fastlm import ConsistbenchHFLM

    args = dict(pretrained=str(tiny_llama_dir), dtype="float32", device="cpu")
    return HFLM(batch_size=1, **args), ConsistbenchHFLM(batch_size=1, decode_slots=3, prefix_min_saved=8, **args)


def _instances(contexts, gen_kwargs):
    from lm_eval.api.instance import Instance

    return [Instance(request_type="generate_until", doc={}, arguments=(c, dict(gen_kwargs)), idx=0,
                     metadata=("t", i, 1)) for i, c in enumerate(contexts)]


def _contexts():
    shared = "Answer from the context.\n\nContext:\nThe copy module offers copy() and deepcopy(). " * 3
    return [shared + f"\n\nQuestion: {q}\nAnswer:" for q in
            ("How do I copy a list?", "How to copy a list", "How do I copy lists?", "What is a deep copy?")] + [
        "Something unrelated and short.", "Another prompt, of a different length, about sorting dicts by value."]


def test_stop_strings_cut_like_lm_eval(lm_pair):
    hf, fast = lm_pair
    ctxs = _contexts()
    free = hf.generate_until(_instances(ctxs, {"until": [], "max_gen_toks": 12, "do_sample": False}))
    assert len(set(free)) > 1
    # stop strings the model really produces, mid-answer: a piece of two different answers
    stops = [free[0][len(free[0]) // 2: len(free[0]) // 2 + 2], free[4][3:5]]
    assert all(stops)
    kwargs = {"until": stops, "max_gen_toks": 12, "do_sample": False}
    want = hf.generate_until(_instances(ctxs, kwargs))
    got = fast.generate_until(_instances(ctxs, kwargs))
    assert got == want
    assert any(len(w) < len(f) for w, f in zip(want, free))  # a stop string really cut something
    assert fast.last_stats.prefill_tokens < fast.last_stats.prompt_tokens


def test_sampling_falls_back_to_lm_eval_with_a_warning(lm_pair, caplog):
    _, fast = lm_pair
    with caplog.at_level(logging.WARNING, logger="consistbench"):
        out = fast.generate_until(_instances(_contexts()[:2], {"until": ["\n\n"], "max_gen_toks": 4,
                                                                "do_sample": True, "temperature": 1.0}))
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    assert "sampling" in caplog.text and "lm-eval's HF generation" in caplog.text


def test_bad_quantize_value_is_refused(tiny_llama_dir):
    from consistbench.benchmark.fastlm import ConsistbenchHFLM

    with pytest.raises(ValueError, match="only int8"):
        ConsistbenchHFLM(pretrained=str(tiny_llama_dir), device="cpu", quantize="int3")


# ---------------------------------------------------------------------------------------------
# the generation cache file

def test_generation_cache_tolerates_a_torn_last_line(tmp_path):
    from consistbench.benchmark.gencache import GenerationCache

    path = tmp_path / "g.jsonl"
    cache = GenerationCache(path, "model-a")
    cache.add("p1", {"until": ["\n\n"]}, "one")
    cache.add("p2", {"until": ["\n\n"]}, "two")
    cache.close()
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"key": "abc", "respo')  # the process died mid-line
    again = GenerationCache(path, "model-a")
    assert again.get("p1", {"until": ["\n\n"]}) == "one" and again.loaded == 2
    assert again.get("p1", {"until": ["\n"]}) is None             # other settings: another key
    assert GenerationCache(path, "model-b").get("p1", {"until": ["\n\n"]}) is None  # another model
    again.add("p3", {}, "three")
    again.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["response"] for line in lines)  # the torn line was cut


def test_generation_cache_refuses_a_corrupt_line(tmp_path):
    from consistbench.benchmark.errors import ConsistbenchError
    from consistbench.benchmark.gencache import GenerationCache

    path = tmp_path / "g.jsonl"
    path.write_text('{"key": "k", "response": "r"}\nnot json\n{"key": "k2", "response": "r2"}\n')
    with pytest.raises(ConsistbenchError, match=r"g.jsonl:2: not a generation cache line"):
        GenerationCache(path, "m")
