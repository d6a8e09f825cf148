"""`consistbench doctor`: each tokenizer/generation trap is detected, and --fix repairs it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.prompting import MAX_GEN_TOKS, prompt_text
from consistbench.reference_method import doctor


def codes(findings) -> set[str]:
    return {f.code for f in findings}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def model_copy(tiny_llama_dir, tmp_path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, out)
    return out


def edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_pad_equal_to_eos_is_found_and_fixed(model_copy, tmp_path, capsys):
    found = doctor.check(model_copy)
    assert codes(found) == {"pad_eq_eos", "generation_config"}
    assert [f.severity for f in found if f.code == "pad_eq_eos"] == ["error"]
    assert main(["doctor", str(model_copy)]) == 1
    assert "pad_eq_eos" in capsys.readouterr().out

    before = {p.name: sha(p) for p in model_copy.iterdir()}
    out = tmp_path / "fixed"
    assert main(["doctor", str(model_copy), "--fix", "-o", str(out)]) == 0
    assert "no problems found" in capsys.readouterr().out
    assert {p.name: sha(p) for p in model_copy.iterdir()} == before  # the source is never modified
    tok = tokenizer(out)
    assert tok.pad_token_id != tok.eos_token_id and tok.pad_token == "<|endoftext|>"
    assert len(tok) == len(tokenizer(model_copy))  # an existing token: no new embedding row
    assert sha(out / "model.safetensors") == before["model.safetensors"]  # weights copied byte for byte
    assert json.loads((out / "config.json").read_text())["pad_token_id"] == tok.pad_token_id
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["pad_token_id"] == tok.pad_token_id and gen["eos_token_id"] == tok.eos_token_id
    assert doctor.check(out) == []


def test_generation_settings_that_differ_from_evaluation(model_copy, tmp_path):
    from transformers import GenerationConfig

    GenerationConfig(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=512, eos_token_id=0,
                     pad_token_id=2).save_pretrained(model_copy)
    (f,) = [f for f in doctor.check(model_copy) if f.code == "generation_config"]
    assert "do_sample=True" in f.message and "max_new_tokens=512" in f.message and "eos_token_id=0" in f.message
    out = tmp_path / "fixed"
    doctor.fix(model_copy, out)
    gen = GenerationConfig.from_pretrained(out)
    assert gen.do_sample is False and gen.num_beams == 1 and gen.max_new_tokens == MAX_GEN_TOKS
    tok = tokenizer(out)
    assert tok.eos_token_id in ([gen.eos_token_id] if isinstance(gen.eos_token_id, int) else gen.eos_token_id)
    assert "generation_config" not in codes(doctor.check(out))


def _prepend_normaliser(model: Path, normalized: bool, normalizer) -> None:
    def change(data):
        for tok in data["added_tokens"]:
            tok["normalized"] = normalized
        data["normalizer"] = normalizer

    edit_json(model / "tokenizer.json", change)


def test_special_tokens_split_by_normalisation_are_found_and_fixed(model_copy, tmp_path):
    _prepend_normaliser(model_copy, True, {"type": "Prepend", "prepend": "\u2581"})
    tok = tokenizer(model_copy)
    assert tok.eos_token_id not in tok("Hi" + tok.eos_token, add_special_tokens=False)["input_ids"]  # the trap
    found = {f.code: f for f in doctor.check(model_copy)}
    assert found["special_token_split"].severity == "error" and "<|im_end|>" in found["special_token_split"].message
    out = tmp_path / "fixed"
    actions, left = doctor.fix(model_copy, out)
    assert any("normalized=False" in a for a in actions)
    tok = tokenizer(out)
    assert tok("Hi" + tok.eos_token, add_special_tokens=False)["input_ids"][-1] == tok.eos_token_id
    assert not codes(left) & {"special_token_split", "special_tokens_normalized"}
    assert all(not t["normalized"] for t in json.loads((out / "tokenizer.json").read_text())["added_tokens"])


def test_normalized_flag_without_a_split_is_a_warning(model_copy, tmp_path):
    _prepend_normaliser(model_copy, True, None)
    found = {f.code: f for f in doctor.check(model_copy)}
    assert found["special_tokens_normalized"].severity == "warning"
    assert "special_token_split" not in found
    doctor.fix(model_copy, tmp_path / "fixed")
    assert "special_tokens_normalized" not in codes(doctor.check(tmp_path / "fixed"))


def test_missing_chat_template_is_found_and_a_raw_prompt_template_installed(model_copy, tmp_path):
    from consistbench.reference_method.collator import encode_row

    (model_copy / "chat_template.jinja").unlink()
    raw = tokenizer(model_copy)
    assert not raw.chat_template
    assert "no_chat_template" in codes(doctor.check(model_copy))
    out = tmp_path / "fixed"
    doctor.fix(model_copy, out)
    tok = tokenizer(out)
    assert "no_chat_template" not in codes(doctor.check(out))
    prompt = prompt_text("Use copy.copy().", "How do I copy?")
    assert tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                   add_generation_prompt=True) == prompt
    # the trainer's tokens do not change: same prompt, same " answer" + eos as without a template
    assert encode_row(tok, "Use copy.copy().", "How do I copy?", "Use it.") == \
        encode_row(raw, "Use copy.copy().", "How do I copy?", "Use it.")


def test_chat_template_from_a_file(model_copy, tmp_path):
    (model_copy / "chat_template.jinja").unlink()
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    out = tmp_path / "fixed"
    assert main(["doctor", str(model_copy), "--fix", "-o", str(out), "--chat-template", str(template)]) == 0
    assert tokenizer(out).chat_template == template.read_text()


def test_a_new_pad_token_resizes_the_embeddings(model_copy, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "fixed"
    actions, left = doctor.fix(model_copy, out, pad_token="<|mypad|>")
    assert any("embeddings resized" in a for a in actions) and left == []
    tok, old = tokenizer(out), tokenizer(model_copy)
    assert tok.pad_token == "<|mypad|>" and len(tok) == len(old) + 1
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    base = AutoModelForCausalLM.from_pretrained(model_copy)
    assert torch.equal(model.get_input_embeddings().weight[:len(old)], base.get_input_embeddings().weight)


def test_bad_fix_requests_leave_no_output(model_copy, tmp_path, capsys):
    out = tmp_path / "fixed"
    assert main(["doctor", str(model_copy), "--fix", "-o", str(out), "--pad-token", "<|im_end|>"]) == 2
    assert "bos/eos" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".fixed")]
    with pytest.raises(ConsistbenchError, match="other than the model directory"):
        doctor.fix(model_copy, model_copy)
    assert main(["doctor", str(tmp_path / "nope")]) == 2
    assert "no such model directory" in capsys.readouterr().err


def test_json_report(model_copy, tmp_path):
    out = tmp_path / "findings.json"
    assert main(["doctor", str(model_copy), "--json", str(out)]) == 1
    report = json.loads(out.read_text())
    assert {r["code"] for r in report} == {"pad_eq_eos", "generation_config"}
    assert all(set(r) == {"code", "severity", "message", "fix"} for r in report)
