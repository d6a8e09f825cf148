"""Every merge method equals its formula on the raw tensors of pico Llama models (linear, task
arithmetic, TIES, DARE, consistency), peft agrees where it should, and a method registered from
outside is a decorator and a function."""

from __future__ import annotations

import pytest
import torch

from consistbench.reference_method.merge import merge
from consistbench.reference_method.merge.ops import merge_utils, tensor_seed
from tests.merge_fixtures import FTS, ROWS, assert_close, config, llama_group, write_weights_doc
from tests.pico_models import load_state

pytest_plugins = ["tests.merge_fixtures"]  # the pico models, built once per session


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
