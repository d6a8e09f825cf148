"""The consistency merge leaves tensors no fine-tune changed as the base's (no weights), and its two
nulls, the uniform average and task arithmetic of the same models, are one call each."""

from __future__ import annotations

import json

import pytest
import torch

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.merge import merge, null_merge_config
from consistbench.reference_method.merge.consistency import ConsistencyParams, unchanged_tensors
from consistbench.reference_method.merge.plan import build_plan
from tests.merge_fixtures import FTS, ROWS, assert_close, config, write_weights_doc
from tests.pico_models import copy_model, load_state, rewrite_tensor

pytest_plugins = ["tests.merge_fixtures"]  # the pico models, built once per session

UNTOUCHED = ("model.layers.0.input_layernorm.weight", "model.norm.weight", "model.embed_tokens.weight")
PARTLY = "model.layers.2.post_attention_layernorm.weight"  # only ft3 changes it


@pytest.fixture(scope="module")
def adapters_like(pico, states, tmp_path_factory) -> dict:
    """Copies of the fine-tunes in which, as with LoRA, some tensors are exactly the base's."""
    root = tmp_path_factory.mktemp("lora_like")
    out = {"base": pico["base"]}
    for m in FTS:
        out[m] = copy_model(pico[m], root / m)
        for name in UNTOUCHED + ((PARTLY,) if m != "ft3" else ()):
            rewrite_tensor(out[m], name, lambda _t, n=name: states["base"][n].clone())
    return out


def test_tensors_no_model_changed_stay_the_base_and_get_no_weights(adapters_like, states, tmp_path):
    wfile = write_weights_doc(tmp_path / "w.json", adapters_like, ROWS)
    doc = json.loads(wfile.read_text())
    wfile.write_text(json.dumps({**doc, "options": {**doc["options"], "distance": "cka", "norm": "frobenius"}}))
    cfg = config(adapters_like, "consistency", parameters={"weights_file": str(wfile)})
    plan = build_plan(cfg, needs_base=True, per_layer=True)
    try:
        assert unchanged_tensors(plan) == frozenset(UNTOUCHED)      # PARTLY: ft3 changed it
        weights_for = cfg.method_spec().weights(cfg, ConsistencyParams(weights_file=str(wfile)), plan)
        assert list(weights_for(UNTOUCHED[0])) == [0.0, 0.0, 0.0]
        assert list(weights_for(PARTLY)) == ROWS["layers"][2]         # the row's weights, as usual
    finally:
        plan.close()
    merge(cfg, tmp_path / "out")
    out, base = load_state(tmp_path / "out"), states["base"]
    for name in UNTOUCHED:
        assert torch.equal(out[name], base[name]), name               # bit for bit
    ft3 = load_state(adapters_like["ft3"])[PARTLY]
    assert torch.allclose(out[PARTLY], base[PARTLY] + ROWS["layers"][2][2] * (ft3 - base[PARTLY]), atol=1e-7)
    card = (tmp_path / "out" / "README.md").read_text()
    total = sum(1 for _ in base)
    assert f"Tensors no fine-tune changed (every delta exactly 0, e.g. what LoRA did not touch): 3 of {total}" in card
    assert "| embed | 0.2000 | 0.3000 | 0.5000 |  | 0/1 |" in card    # tied embeddings: one tensor, unchanged
    assert "| layer 0 |" in card and "| 8/9 |" in card
    assert "whatever this says" in card                             # what non_layer does to untouched tensors
    assert "- distance: `cka`" in card and "- norm: `frobenius`" in card
    # a version-1 file (its distance was the norm) is recorded as what it means today
    write_weights_doc(wfile, adapters_like, ROWS)
    merge(cfg, tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "- distance: `paper`" in card and "- norm: `mean_abs`" in card


def test_the_uniform_average_and_task_arithmetic_nulls(pico, states, tmp_path):
    models = [pico[m] for m in FTS]
    merge(null_merge_config(pico["base"], models, "linear", names=list(FTS)), tmp_path / "avg")
    b = states["base"]
    assert_close(load_state(tmp_path / "avg"), {n: sum(states[m][n] for m in FTS) / 3 for n in b})
    merge(null_merge_config(pico["base"], models, "task_arithmetic", 0.4), tmp_path / "ta")
    assert_close(load_state(tmp_path / "ta"), {n: b[n] + 0.4 * sum(states[m][n] - b[n] for m in FTS) for n in b})
    card = (tmp_path / "avg" / "README.md").read_text()
    assert "`linear` merge" in card and "| model | ft1 |" in card
    # the uniform average is the consistency merge with equal weights 1/3 everywhere
    third = [1 / 3] * 3
    wfile = write_weights_doc(tmp_path / "w.json", pico, {"embed": third, "layers": [third] * 3, "final": third})
    merge(config(pico, "consistency", parameters={"weights_file": str(wfile)}), tmp_path / "cons")
    assert_close(load_state(tmp_path / "cons"), load_state(tmp_path / "avg"), atol=1e-6)


def test_null_merge_config_refuses_what_it_cannot_mean(pico):
    models = [pico[m] for m in FTS]
    with pytest.raises(ConsistbenchError, match="takes no scale"):
        null_merge_config(pico["base"], models, "linear", 0.5)
    with pytest.raises(ConsistbenchError, match="needs a finite scale"):
        null_merge_config(pico["base"], models, "task_arithmetic")
    with pytest.raises(ConsistbenchError, match="one of linear, task_arithmetic"):
        null_merge_config(pico["base"], models, "ties", 1.0)
    with pytest.raises(ConsistbenchError, match="2 names for 3 models"):
        null_merge_config(pico["base"], models, "linear", names=["a", "b"])
