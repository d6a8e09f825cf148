"""The merge engine on pico Llama models: every method equals its formula on the raw tensors,
peft and mergekit agree where they should, and bad input fails cleanly with no output left."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.merge import MergeConfig, export_mergekit, merge
from consistbench.reference_method.merge.ops import merge_utils, tensor_seed
from tests import pico_models
from tests.pico_models import load_state

FTS = ("ft1", "ft2", "ft3")


def llama_group(name: str) -> int | str:
    """Where a pico Llama tensor belongs, written out for the tests (not the code under test)."""
    m = re.match(r"model\.layers\.(\d+)\.", name)
    if m:
        return int(m.group(1))
    return "embed" if name.startswith("model.embed_tokens.") else "final"


@pytest.fixture(scope="session")
def pico(tmp_path_factory, smollm2_dir) -> dict[str, Path]:
    return pico_models.family(tmp_path_factory.mktemp("pico"), smollm2_dir)


@pytest.fixture(scope="session")
def states(pico) -> dict[str, dict[str, torch.Tensor]]:
    return {k: load_state(v) for k, v in pico.items()}


def config(pico, method: str, weights=(1.0, 1.0, 1.0), models=FTS, **extra) -> MergeConfig:
    return MergeConfig.from_dict({"method": method, "base": str(pico["base"]),
                                  "models": [{"path": str(pico[m]), "weight": w} for m, w in zip(models, weights)],
                                  **extra})


def assert_close(out: dict, expected: dict, atol: float = 1e-6) -> None:
    assert set(out) == set(expected)
    for name in expected:
        err = float((out[name] - expected[name]).abs().max())
        assert err <= atol, f"{name}: max error {err}"


def no_leftovers(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")], "temporary folder left behind"


# ---------------------------------------------------------------------------------------------
# formulas

def test_pico_family_is_what_the_tests_assume(pico, states):
    assert len(list(pico["ft1"].glob("*.safetensors"))) >= 2, "ft1 must be sharded"
    assert (pico["ft1"] / "model.safetensors.index.json").is_file()
    assert "lm_head.weight" not in states["base"]  # tied embeddings
    assert any(llama_group(n) == "final" for n in states["base"])
    assert not torch.equal(states["ft1"]["model.norm.weight"], states["base"]["model.norm.weight"])


def test_task_arithmetic_equals_its_formula(pico, states, tmp_path):
    w = (0.3, 0.5, -0.2)
    merge(config(pico, "task_arithmetic", w), tmp_path / "out")
    b = states["base"]
    expected = {n: b[n] + sum(wk * (states[m][n] - b[n]) for wk, m in zip(w, FTS)) for n in b}
    assert_close(load_state(tmp_path / "out"), expected)


def test_task_arithmetic_of_one_model_with_weight_one_reproduces_it(pico, states, tmp_path):
    merge(config(pico, "task_arithmetic", (1.0,), models=("ft1",)), tmp_path / "out")
    assert_close(load_state(tmp_path / "out"), states["ft1"])


def test_linear_of_identical_models_is_the_identity(pico, states, tmp_path):
    merge(config(pico, "linear", (1.0, 2.0, 0.5), models=("ft2", "ft2", "ft2")), tmp_path / "out")
    assert_close(load_state(tmp_path / "out"), states["ft2"])


def test_linear_equals_its_formula_with_and_without_normalize(pico, states, tmp_path):
    w = (1.0, 2.0, 1.0)
    merge(config(pico, "linear", w), tmp_path / "norm")
    merge(config(pico, "linear", w, parameters={"normalize": False}), tmp_path / "raw")
    names = states["base"]
    total = sum(w)
    raw = {n: sum(wk * states[m][n] for wk, m in zip(w, FTS)) for n in names}
    assert_close(load_state(tmp_path / "raw"), raw)
    assert_close(load_state(tmp_path / "norm"), {n: v / total for n, v in raw.items()})


def _ties_by_hand(base, models, w, density):
    """TIES written out on the tensors, independently of peft."""
    deltas = []
    for m in models:
        d = m - base
        k = int(density * d.numel())
        keep = torch.zeros(d.numel())
        keep[d.abs().reshape(-1).topk(k).indices] = 1
        deltas.append(d * keep.reshape(d.shape))
    stacked = torch.stack(deltas)
    sign = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
    agree = (stacked.sign() == sign).float()
    weighted = stacked * torch.tensor(w).reshape(-1, *([1] * base.dim()))
    return base + (weighted * agree).sum(0) / agree.sum(0).clamp(min=1)


def test_ties_equals_its_formula(pico, states, tmp_path):
    w, density = (1.0, 0.7, 1.3), 0.3
    merge(config(pico, "ties", w, parameters={"density": density}), tmp_path / "out")
    b = states["base"]
    expected = {n: _ties_by_hand(b[n], [states[m][n] for m in FTS], w, density) for n in b}
    assert_close(load_state(tmp_path / "out"), expected)


def _blocks(n):
    from consistbench.reference_method.merge.ops import RNG_BLOCK

    return [(a, min(n, a + RNG_BLOCK)) for a in range(0, n, RNG_BLOCK)]


def _dare_masks(name, seed, deltas, density):
    """The masks DARE draws for one tensor: per block of RNG_BLOCK flat elements, seeded with
    tensor_seed(seed, name, start), bernoulli(density) for each delta in model order."""
    flat = [d.reshape(-1) for d in deltas]
    masks = [torch.empty_like(f) for f in flat]
    for a, b in _blocks(flat[0].numel()):
        torch.manual_seed(tensor_seed(seed, name, a))
        for m, f in zip(masks, flat):
            m[a:b] = torch.bernoulli(torch.full_like(f[a:b], density))
    return [m.reshape(d.shape) for m, d in zip(masks, deltas)]


def test_dare_linear_equals_its_formula(pico, states, tmp_path):
    w, density, seed = (0.5, 1.0, 0.25), 0.4, 7
    merge(config(pico, "dare_linear", w, parameters={"density": density, "seed": seed}), tmp_path / "out")
    b = states["base"]
    expected = {}
    for n in b:
        deltas = [states[m][n] - b[n] for m in FTS]
        masks = _dare_masks(n, seed, deltas, density)
        expected[n] = b[n] + sum(wk * mk * d / density for wk, mk, d in zip(w, masks, deltas))
    assert_close(load_state(tmp_path / "out"), expected)


def test_dare_ties_equals_its_formula_and_agrees_with_peft_for_the_same_seed(pico, states, tmp_path):
    w, density, seed = (1.0, 1.0, 1.0), 0.5, 3
    merge(config(pico, "dare_ties", w, parameters={"density": density, "seed": seed}), tmp_path / "out")
    out = load_state(tmp_path / "out")
    b = states["base"]
    peft_ops = merge_utils()
    assert len(_blocks(b["model.embed_tokens.weight"].numel())) > 1  # several RNG blocks
    for n in b:
        deltas = [states[m][n] - b[n] for m in FTS]
        flat = [d.reshape(-1) for d in deltas]
        via_peft = torch.empty_like(flat[0])
        for a, e in _blocks(flat[0].numel()):
            torch.manual_seed(tensor_seed(seed, n, a))
            via_peft[a:e] = peft_ops.dare_ties([f[a:e] for f in flat], torch.tensor(w), density)
        via_peft = b[n] + via_peft.reshape(b[n].shape)
        assert float((out[n] - via_peft).abs().max()) <= 1e-6, n
        masks = _dare_masks(n, seed, deltas, density)
        kept = torch.stack([mk * d / density for mk, d in zip(masks, deltas)])
        sign = torch.where(kept.sum(0) >= 0, 1.0, -1.0)
        agree = (kept.sign() == sign).float()
        by_hand = b[n] + (kept * agree).sum(0) / agree.sum(0).clamp(min=1)
        assert float((out[n] - by_hand).abs().max()) <= 1e-6, n
    # a different seed draws different masks
    merge(config(pico, "dare_ties", w, parameters={"density": density, "seed": seed + 1}), tmp_path / "other")
    other = load_state(tmp_path / "other")
    assert not torch.equal(other["model.layers.0.mlp.up_proj.weight"], out["model.layers.0.mlp.up_proj.weight"])
    # the masks do not depend on how the engine slices the tensors
    merge(config(pico, "dare_ties", w, parameters={"density": density, "seed": seed}, chunk_elements=999),
          tmp_path / "sliced")
    assert_close(load_state(tmp_path / "sliced"), out, atol=0)


def write_weights_doc(path: Path, pico, rows: dict, models=FTS, value=None) -> Path:
    """A hand-made consistency weights file (format of reference_method.consistency_weights)."""
    from consistbench.reference_method.consistency_weights import FORMAT, FORMAT_VERSION

    doc = {"format": FORMAT, "version": FORMAT_VERSION, "num_layers": pico_models.NUM_LAYERS,
           "base": {"path": str(pico["base"]), "label": "base"},
           "models": [{"path": str(pico[m].resolve()), "label": m} for m in models],
           "dev": {"path": None, "n_queries": 0, "sha256": ""}, "options": {
               "pooling": "mean", "distance": "mean_abs", "compare": "raw", "normalisation": "softmax",
               "temperature": 0.05, "temperature_scale": "base", "power": 2.0, "total": 1.0, "batch_size": 8,
               "max_queries": 256, "chat_template": True, "encoder": None},
           "weights": rows}
    path.write_text(json.dumps(doc, allow_nan=True))
    return path


ROWS = {"embed": [0.2, 0.3, 0.5], "layers": [[0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.34, 0.33, 0.33]],
        "final": [0.05, 0.9, 0.05]}


def _consistency_expected(states, rows, deltas_fn=None):
    b = states["base"]
    out = {}
    for n in b:
        g = llama_group(n)
        w = rows["layers"][g] if isinstance(g, int) else rows[g]
        deltas = [states[m][n] - b[n] for m in FTS]
        if deltas_fn:
            deltas = deltas_fn(n, deltas)
        out[n] = b[n] + sum(wk * d for wk, d in zip(w, deltas))
    return out


def test_consistency_merge_equals_its_layerwise_formula(pico, states, tmp_path):
    wfile = write_weights_doc(tmp_path / "w.json", pico, ROWS)
    merge(config(pico, "consistency", parameters={"weights_file": str(wfile)}), tmp_path / "out")
    assert_close(load_state(tmp_path / "out"), _consistency_expected(states, ROWS))
    card = (tmp_path / "out" / "README.md").read_text()
    assert "consistency" in card and "| layer 1 | 0.1000 | 0.1000 | 0.8000 |" in card
    assert (tmp_path / "out" / "consistency_weights.json").is_file()


@pytest.mark.parametrize("non_layer", ["mean", "base"])
def test_consistency_non_layer_options(pico, states, tmp_path, non_layer):
    wfile = write_weights_doc(tmp_path / "w.json", pico, ROWS)
    merge(config(pico, "consistency", parameters={"weights_file": str(wfile), "non_layer": non_layer}), tmp_path / "o")
    mean = [sum(col) / 3 for col in zip(*ROWS["layers"])]
    other = mean if non_layer == "mean" else [0.0, 0.0, 0.0]
    rows = dict(ROWS, embed=other, final=other)
    assert_close(load_state(tmp_path / "o"), _consistency_expected(states, rows))


def test_consistency_with_dare_sparsified_deltas(pico, states, tmp_path):
    wfile = write_weights_doc(tmp_path / "w.json", pico, ROWS)
    merge(config(pico, "consistency", parameters={"weights_file": str(wfile), "sparsify": "dare", "density": 0.6,
                                                  "seed": 11}), tmp_path / "out")

    def dare(name, deltas):
        masks = _dare_masks(name, 11, deltas, 0.6)
        return [m * d / 0.6 for m, d in zip(masks, deltas)]

    assert_close(load_state(tmp_path / "out"), _consistency_expected(states, ROWS, dare))


def test_consistency_with_ties_sparsified_deltas(pico, states, tmp_path):
    wfile = write_weights_doc(tmp_path / "w.json", pico, ROWS)
    merge(config(pico, "consistency", parameters={"weights_file": str(wfile), "sparsify": "ties", "density": 0.5}),
          tmp_path / "out")

    def ties(_name, deltas):
        trimmed = []
        for d in deltas:
            keep = torch.zeros(d.numel())
            keep[d.abs().reshape(-1).topk(int(0.5 * d.numel())).indices] = 1
            trimmed.append(d * keep.reshape(d.shape))
        sign = torch.where(torch.stack(trimmed).sum(0) >= 0, 1.0, -1.0)
        return [t * (t.sign() == sign) for t in trimmed]

    assert_close(load_state(tmp_path / "out"), _consistency_expected(states, ROWS, ties))


def test_fused_weighted_sums_equal_peft_task_arithmetic():
    from consistbench.reference_method.merge import ops

    g = torch.Generator().manual_seed(0)
    base = torch.randn(1000, generator=g)
    models = [base + 0.01 * torch.randn(1000, generator=g) for _ in range(3)]
    w = torch.tensor([0.7, -0.2, 1.5])
    peft_ops = merge_utils()
    assert torch.allclose(ops.weighted_delta_sum(base, models, w),
                          peft_ops.task_arithmetic([m - base for m in models], w), atol=1e-7)
    assert torch.allclose(ops.weighted_sum(models, w), peft_ops.task_arithmetic(models, w), atol=1e-6)


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


def test_registering_a_method_is_a_decorator_and_a_function(pico, states, tmp_path):
    from consistbench.reference_method.merge import MethodParams, TensorInputs, merge_method

    class Half(MethodParams):
        factor: float = 0.5

    @merge_method("test_scaled_task_arithmetic", params=Half)
    def scaled(t: TensorInputs, p: Half):
        return t.base + p.factor * merge_utils().task_arithmetic(t.deltas, t.weights)

    merge(config(pico, "test_scaled_task_arithmetic", (1.0,), models=("ft1",), parameters={"factor": 0.25}),
          tmp_path / "out")
    b = states["base"]
    assert_close(load_state(tmp_path / "out"), {n: b[n] + 0.25 * (states["ft1"][n] - b[n]) for n in b})


# ---------------------------------------------------------------------------------------------
# mergekit

def _run_mergekit(yaml_path: Path, out: Path, seed: int | None = None) -> dict:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    text = yaml_path.read_text()
    cfg = MergeConfiguration.model_validate(yaml.safe_load(text))
    run_merge(cfg, str(out), MergeOptions(write_model_card=False, quiet=True, random_seed=seed))
    return load_state(out)


def test_mergekit_export_round_trips_task_arithmetic(pico, tmp_path):
    cfg = config(pico, "task_arithmetic", (0.3, 0.5, -0.2))
    export_mergekit(cfg, tmp_path / "mk.yaml")
    assert yaml.safe_load((tmp_path / "mk.yaml").read_text())["merge_method"] == "task_arithmetic"
    theirs = _run_mergekit(tmp_path / "mk.yaml", tmp_path / "mk_out")
    merge(cfg, tmp_path / "ours")
    assert_close(theirs, load_state(tmp_path / "ours"), atol=1e-6)


def test_mergekit_export_round_trips_consistency_per_layer_weights(pico, tmp_path):
    wfile = write_weights_doc(tmp_path / "w.json", pico, ROWS)
    cfg = config(pico, "consistency", parameters={"weights_file": str(wfile)})
    assert main(["merge", "--export-mergekit", str(tmp_path / "mk.yaml"), "--quiet", "--",
                 _yaml(tmp_path, cfg)]) == 0
    theirs = _run_mergekit(tmp_path / "mk.yaml", tmp_path / "mk_out")
    merge(cfg, tmp_path / "ours")
    assert_close(theirs, load_state(tmp_path / "ours"), atol=1e-6)


def test_mergekit_export_of_linear_and_ties_with_unit_weights_match(pico, tmp_path):
    for method, params in (("linear", {}), ("ties", {"density": 0.5})):
        cfg = config(pico, method, parameters=params)
        export_mergekit(cfg, tmp_path / f"{method}.yaml")
        theirs = _run_mergekit(tmp_path / f"{method}.yaml", tmp_path / f"{method}_mk")
        merge(cfg, tmp_path / method)
        assert_close(theirs, load_state(tmp_path / method), atol=1e-6)


def _yaml(tmp_path: Path, cfg: MergeConfig) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    return str(path)


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
