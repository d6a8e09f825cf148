"""Shared fixtures: small data sets written to tmp files, tiny random models built locally.

Nothing here downloads anything: HF_HUB_OFFLINE is forced on for the whole session.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# Shared fixture modules imported by several test files: rewrite their asserts as pytest does for
# test files, so that a failing helper assertion shows its values.
pytest.register_assert_rewrite("tests.merge_fixtures", "tests.trainer_fixtures", "tests.preference_fixtures",
                               "tests.leaderboard_fixtures")

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(autouse=True)
def _own_leaderboard_cache(tmp_path_factory, monkeypatch):
    """Each test its own cache of leaderboard validation results (none reused across tests, none in ~/.cache)."""
    monkeypatch.setenv("CONSISTBENCH_LEADERBOARD_CACHE", str(tmp_path_factory.mktemp("lb-cache")))


def make_row(gid: str, vtype: str, question: str, *, split: str = "test", reference: str = "Use copy.copy().",
             context: str = "Use copy.copy() for shallow copies.", passage: str | None = None, **extra) -> dict:
    from consistbench.benchmark.schema import VARIANT_SUFFIX

    suffix = VARIANT_SUFFIX[vtype]
    row = {"id": f"{gid}-{suffix}", "group_id": gid, "split": split, "variant_type": vtype, "question": question,
           "context": context, "reference": reference, "passage_id": passage or f"doc.html#{gid}",
           "source": "https://docs.python.org/3.11/doc.html"}
    row.update(extra)
    return row


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def responses_rows() -> list[dict]:
    """Three groups covering all variant types, with responses that agree and disagree."""
    return [
        make_row("g1", "original", "How do I copy a list?", response="Use slicing: new = old[:]"),
        make_row("g1", "how_to", "How to copy a list", response="Use slicing: new = old[:]"),
        make_row("g1", "plural_article", "How do I copy lists?", response="Call list.copy() on it."),
        make_row("g1", "paraphrase", "What is the way to duplicate a list?", response="  Use slicing: new = old[:]\n"),
        make_row("g2", "original", "What does shutil.copyfile return?", reference="It returns dst.",
                 response="It returns the destination path dst."),
        make_row("g2", "paraphrase", "Which value does shutil.copyfile give back?", reference="It returns dst.",
                 response="It returns dst."),
        make_row("g3", "original", "How can I sort a dict by value?", reference="Use sorted with a key.",
                 response="Use sorted(d.items(), key=lambda kv: kv[1])."),
        make_row("g3", "how_to", "How do I sort a dict by value?", reference="Use sorted with a key.",
                 response="Use sorted(d.items(), key=lambda kv: kv[1]) to sort."),
    ]


@pytest.fixture
def responses_file(tmp_path, responses_rows) -> Path:
    return write_jsonl(tmp_path / "responses.jsonl", responses_rows)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The converted embedded SmolLM2 (made by `consistbench setup`; converted here if missing)."""
    from consistbench.benchmark.embedded import convert_smollm2

    return convert_smollm2()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2_dir) -> Path:
    """A tiny random Llama (2 layers, hidden 32) with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def wide_llama_dir(tmp_path_factory, tiny_llama_dir) -> Path:
    """tiny_llama_dir re-initialised with std 0.3: non-empty answers that differ between prompts
    (with the default std 0.02 a tiny random model says the same punctuation to everything)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("wide-llama")
    config = LlamaConfig.from_pretrained(tiny_llama_dir)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(out)
    return out
