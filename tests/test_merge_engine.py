"""The merge engine on pico Llama models: slices, shards and dtypes, the command and its card, and
bad input failing cleanly with no output left."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.merge import MergeConfig, export_mergekit, merge
from tests import pico_models
from tests.merge_fixtures import ROWS, config, no_leftovers, write_weights_doc
from tests.pico_models import load_state

pytest_plugins = ["tests.merge_fixtures"]  # the pico models, built once per session


# ---------------------------------------------------------------------------------------------
# engine behaviour

def test_slices_shards_and_dtype(pico, states, tmp_path):
    w = (0.3, 0.5, 0.2)
    merge(config(pico, "task_arithmetic", w, chunk_elements=1000, max_shard_size="50KB"), tmp_path / "small")
    merge(config(pico, "task_arithmetic", w), tmp_path / "whole")
    small, whole = load_state(tmp_path / "small"), load_state(tmp_path / "whole")
    assert len(list((tmp_path / "small").glob("*.safetensors"))) > 2
    assert (tmp_path / "small" / "model.safetensors.index.json").is_file()
    assert all(torch.equal(small[n], whole[n]) for n in whole)
    # transformers loads the streamed shards, and the tokenizer and config came along
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "small")
    assert torch.equal(model.model.layers[1].self_attn.q_proj.weight, whole["model.layers.1.self_attn.q_proj.weight"])
    assert len(AutoTokenizer.from_pretrained(tmp_path / "small")) == model.config.vocab_size
    merge(config(pico, "task_arithmetic", w, dtype="bfloat16"), tmp_path / "bf16")
    from safetensors import safe_open

    with safe_open(tmp_path / "bf16" / "model.safetensors", "pt") as f:
        t = f.get_tensor("model.norm.weight")
    assert t.dtype == torch.bfloat16 and torch.equal(t, whole["model.norm.weight"].to(torch.bfloat16))
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"


def test_cli_merge_yaml_with_relative_paths_and_card(pico, tmp_path, capsys):
    cfg = {"method": "task_arithmetic", "base": str(pico["base"]),
           "models": [{"path": str(pico["ft1"]), "weight": 0.5}, str(pico["ft3"])]}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["merge", str(tmp_path / "m.yaml"), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    out = tmp_path / "out"
    for f in ("README.md", "merge_config.yaml", "config.json", "tokenizer.json", "model.safetensors"):
        assert (out / f).is_file(), f
    card = (out / "README.md").read_text()
    assert "task_arithmetic" in card and "ft1" in card and "| 0.5 |" in card
    again = MergeConfig.from_yaml(out / "merge_config.yaml")
    assert again.models[0].weight == 0.5 and again.models[1].weight == 1.0
    assert main(["merge", "--list-methods"]) == 0
    listed = capsys.readouterr().out
    for name in ("linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "consistency"):
        assert name in listed


# ---------------------------------------------------------------------------------------------
# bad input: a clear one-line error, exit status 2, no output folder

def _fails(tmp_path: Path, cfg: dict | MergeConfig, capsys, *fragments: str) -> None:
    data = cfg.model_dump() if isinstance(cfg, MergeConfig) else cfg
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "merged"
    capsys.readouterr()
    assert main(["merge", str(path), "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("consistbench: error:") and "\n" not in err, err
    for f in fragments:
        assert f in err, err
    no_leftovers(tmp_path, "merged")


def test_bad_mismatched_shapes(pico, tmp_path, capsys):
    bad = pico_models.copy_model(pico["ft2"], tmp_path / "shapes")
    pico_models.rewrite_tensor(bad, "model.layers.1.mlp.down_proj.weight", lambda t: t[:, :-1])
    cfg = config(pico, "task_arithmetic").model_dump()
    cfg["models"][1]["path"] = str(bad)
    _fails(tmp_path, cfg, capsys, "shape mismatch", "model.layers.1.mlp.down_proj.weight", "[32, 64]", "[32, 63]")


def test_bad_architecture(pico, tmp_path, capsys):
    bad = pico_models.copy_model(pico["ft2"], tmp_path / "arch")
    c = json.loads((bad / "config.json").read_text())
    c["num_attention_heads"] = 8
    (bad / "config.json").write_text(json.dumps(c))
    cfg = config(pico, "linear").model_dump()
    cfg["models"][1]["path"] = str(bad)
    _fails(tmp_path, cfg, capsys, "architecture mismatch", "num_attention_heads", "arch")


def test_bad_different_vocabularies(pico, tmp_path, capsys):
    bad = pico_models.copy_model(pico["ft3"], tmp_path / "vocab")
    tj = json.loads((bad / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[300:302]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, same shapes: only the vocabulary differs
    (bad / "tokenizer.json").write_text(json.dumps(tj))
    cfg = config(pico, "task_arithmetic").model_dump()
    cfg["models"][2]["path"] = str(bad)
    _fails(tmp_path, cfg, capsys, "vocabulary mismatch", repr(a))


def test_bad_missing_shard(pico, tmp_path, capsys):
    bad = pico_models.copy_model(pico["ft1"], tmp_path / "shard")
    shard = sorted(bad.glob("model-*.safetensors"))[-1]
    shard.unlink()
    cfg = config(pico, "task_arithmetic").model_dump()
    cfg["models"][0]["path"] = str(bad)
    _fails(tmp_path, cfg, capsys, "shard", shard.name, "missing")


def test_bad_tensor_names(pico, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    bad = pico_models.copy_model(pico["ft3"], tmp_path / "names")
    t = load_file(bad / "model.safetensors")
    t["model.layers.0.mlp.up_proj.weight_renamed"] = t.pop("model.layers.0.mlp.up_proj.weight")
    save_file(t, bad / "model.safetensors", metadata={"format": "pt"})
    cfg = config(pico, "task_arithmetic").model_dump()
    cfg["models"][2]["path"] = str(bad)
    _fails(tmp_path, cfg, capsys, "tensor names differ", "model.layers.0.mlp.up_proj.weight")


def test_bad_unknown_method(pico, tmp_path, capsys):
    _fails(tmp_path, dict(config(pico, "linear").model_dump(), method="slerpy"), capsys,
           "unknown merge method 'slerpy'", "task_arithmetic")


def test_bad_parameters(pico, tmp_path, capsys):
    _fails(tmp_path, dict(config(pico, "ties").model_dump(), parameters={"density": 1.5}), capsys, "density")
    _fails(tmp_path, dict(config(pico, "ties").model_dump(), parameters={"densty": 0.5}), capsys, "densty")


def test_bad_non_finite_weights(pico, tmp_path, capsys):
    cfg = config(pico, "task_arithmetic").model_dump()
    cfg["models"][0]["weight"] = math.nan
    _fails(tmp_path, cfg, capsys, "models.0.weight", "finite")
    rows = json.loads(json.dumps(ROWS))
    rows["layers"][2][1] = math.nan
    wfile = write_weights_doc(tmp_path / "nan.json", pico, rows)
    cfg = config(pico, "consistency", parameters={"weights_file": str(wfile)}).model_dump()
    _fails(tmp_path, cfg, capsys, "non-finite weight", "ft2", "layer 2")
    rows["layers"][2][1] = math.inf
    write_weights_doc(tmp_path / "nan.json", pico, rows)
    _fails(tmp_path, cfg, capsys, "non-finite weight", "inf")


def test_bad_weights_file_for_other_models(pico, tmp_path, capsys):
    wfile = write_weights_doc(tmp_path / "two.json", pico, {k: (v if k == "layers" else v[:2]) for k, v in ROWS.items()},
                              models=("ft1", "ft2"))
    cfg = config(pico, "consistency", parameters={"weights_file": str(wfile)}).model_dump()
    _fails(tmp_path, cfg, capsys, "two.json")


def test_bad_weights_file_sections_fail_before_anything_is_written(pico, tmp_path, capsys):
    """A weights file whose weights are fine but which lacks what the model card reads (options,
    dev set) or holds a bad option fails with one line up front, not with a traceback later."""
    wfile = write_weights_doc(tmp_path / "w.json", pico, ROWS)
    cfg = config(pico, "consistency", parameters={"weights_file": str(wfile)}).model_dump()
    full = json.loads(wfile.read_text())
    for drop, fragment in (("options", "options"), ("dev", "dev"), ("base", "base")):
        wfile.write_text(json.dumps({k: v for k, v in full.items() if k != drop}))
        _fails(tmp_path, cfg, capsys, "w.json", fragment, "required")
    wfile.write_text(json.dumps({k: v for k, v in full.items() if k not in ("options", "dev")}))
    _fails(tmp_path, cfg, capsys, "w.json", "malformed weights file")
    wfile.write_text(json.dumps(dict(full, options=dict(full["options"], distance="cosine"))))
    _fails(tmp_path, cfg, capsys, "w.json", "options.distance")
    wfile.write_text(json.dumps(dict(full, base_distances={"embed": 0.1, "layers": [0.1], "final": 0.2})))
    _fails(tmp_path, cfg, capsys, "w.json", "base_distances")


def test_bad_nan_in_a_model_is_caught_in_the_output(pico, tmp_path, capsys):
    bad = pico_models.copy_model(pico["ft2"], tmp_path / "nanmodel")
    pico_models.rewrite_tensor(bad, "model.layers.2.self_attn.v_proj.weight", lambda t: t.index_fill(0, torch.tensor([3]), math.nan))
    cfg = config(pico, "task_arithmetic").model_dump()
    cfg["models"][1]["path"] = str(bad)
    _fails(tmp_path, cfg, capsys, "non-finite values", "model.layers.2.self_attn.v_proj.weight")


def test_output_folder_never_replaces_an_input_or_a_foreign_folder(pico, tmp_path):
    cfg = config(pico, "task_arithmetic")
    with pytest.raises(ConsistbenchError, match="is or contains the input"):
        merge(cfg, pico["ft2"])
    with pytest.raises(ConsistbenchError, match="is or contains the input"):
        merge(cfg, pico["ft2"].parent)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConsistbenchError, match="not an earlier merge's output"):
        merge(cfg, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    merge(cfg, tmp_path / "again")
    merge(cfg, tmp_path / "again")  # an earlier merge's output is replaced
    assert (tmp_path / "again" / "merge_config.yaml").is_file()


def test_bad_input_raises_before_the_output_exists(pico, tmp_path):
    cfg = config(pico, "task_arithmetic").model_dump()
    cfg["models"][0]["path"] = str(tmp_path / "nowhere")
    with pytest.raises(ConsistbenchError, match="nowhere"):
        merge(MergeConfig.from_dict(cfg), tmp_path / "merged")
    no_leftovers(tmp_path, "merged")
    with pytest.raises(ConsistbenchError, match="no mergekit equivalent|unknown merge method"):
        export_mergekit(MergeConfig.from_dict(dict(cfg, method="nope")), tmp_path / "x.yaml")
