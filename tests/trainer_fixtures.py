"""Trainer tests' shared data, models and helpers (a pytest plugin: ``tests/test_collator.py``,
``tests/test_consistency_loss.py`` and ``tests/test_trainer.py`` name it in ``pytest_plugins``).

``fixed_llama``: the tiny random Llama after ``consistbench doctor --fix`` (a distinct pad token);
``tokenizer``: its tokenizer; ``synth_file``: a small synthetic set (originals, how_to and
paraphrase variants); ``config``: a CPU ConsistencyConfig; ``triplet_batch``: anchor / positive /
negative rows collated.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from consistbench.reference_method.collator import CompletionCollator, encode_row
from consistbench.reference_method.consistency_config import ConsistencyConfig


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
