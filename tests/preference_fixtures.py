"""Preference tests' shared rows, models and helpers (a pytest plugin: each
``tests/test_preference_*.py`` file names it in ``pytest_plugins``).

``QA``: four questions with a good, a bad and a source answer; ``pref_rows`` / ``write_prefs``:
preference rows made of them; ``tok``: the tiny Llama's tokenizer; ``other_ref_dir``: a second
model with the same tokenizer and perturbed weights (an extra MRPO reference).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch


QA = [
    ("How do I copy a list?", "To copy a list, call list.copy() or slice it with [:].",
     "Use list.copy().", "Bananas are yellow.", "Call list.copy() or use slicing."),
    ("How do I sort a dict by value?", "sorted(d.items(), key=lambda kv: kv[1]) sorts items by value.",
     "Use sorted with a key.", "It cannot be done.", "Use sorted(d.items(), key=...)."),
    ("How do I read a file line by line?", "A file object is iterable: for line in f reads line by line.",
     "Iterate over the file object.", "Use a database.", "Loop over the file: for line in f."),
    ("How do I remove duplicates from a list?", "list(dict.fromkeys(xs)) removes duplicates, keeping order.",
     "Use dict.fromkeys().", "Duplicates stay forever.", "list(dict.fromkeys(xs))"),
]


def pref_rows() -> list[dict]:
    from consistbench.benchmark.prompting import prompt_text

    return [{"id": f"g{i}-orig", "group_id": f"g{i}", "variant_type": "original", "question": q, "context": c,
             "prompt": prompt_text(c, q), "chosen": good, "rejected": bad, "source_chosen": src}
            for i, (q, c, good, bad, src) in enumerate(QA)]


def write_prefs(path: Path, rows: list[dict] | None = None) -> Path:
    rows = pref_rows() if rows is None else rows
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def load(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)


def perturb(model, seed: int = 1, std: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def other_ref_dir(tiny_llama_dir, tmp_path_factory):
    """A second model with the tiny Llama's tokenizer: its weights perturbed."""
    out = tmp_path_factory.mktemp("tiny-ref2")
    model = load(tiny_llama_dir)
    perturb(model, seed=7, std=0.5)
    model.save_pretrained(out)
    shutil.copy(tiny_llama_dir / "tokenizer.json", out / "tokenizer.json")
    shutil.copy(tiny_llama_dir / "tokenizer_config.json", out / "tokenizer_config.json")
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        if (tiny_llama_dir / extra).exists():
            shutil.copy(tiny_llama_dir / extra, out / extra)
    return out
