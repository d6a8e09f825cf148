"""Consistency weights: the normalisations, the distances, and the whole computation on pico models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.consistency_weights import (
    Similarities,
    compute_weights,
    distance,
    load_queries,
    model_similarities,
    normalise,
    weights_from_similarities,
    write_weights,
)
from consistbench.reference_method.weights_file import WeightsOptions, load_weights, row_keys, weight_spread
from tests import pico_models
from tests.conftest import write_jsonl

FTS = ("ft1", "ft2", "ft3")
QUESTIONS = [
    ("How do I copy a list?", "How to copy a list", "What is the way to duplicate a list?"),
    ("How do I sort a dict by value?", "How to sort a dict by value", "How can a dictionary be ordered by its values?"),
    ("What does shutil.copyfile return?", "What do shutil.copyfile calls return?", "Which value does copyfile give back?"),
    ("How do I read a file line by line?", "How to read a file line by line", "How can I iterate over the lines of a file?"),
]


@pytest.fixture(scope="session")
def pico(tmp_path_factory, smollm2_dir) -> dict[str, Path]:
    return pico_models.family(tmp_path_factory.mktemp("pico"), smollm2_dir)


@pytest.fixture
def dev_rows() -> list[dict]:
    rows = []
    for g, variants in enumerate(QUESTIONS):
        for vtype, q in zip(("original", "how_to", "paraphrase"), variants):
            rows.append({"id": f"g{g}-{vtype}", "group_id": f"g{g}", "split": "dev", "variant_type": vtype,
                         "question": q, "context": f"Passage {g}. The Python documentation explains topic {g} here."})
    return rows


@pytest.fixture(scope="session")
def weights_doc(pico, tmp_path_factory):
    rows = []
    for g, variants in enumerate(QUESTIONS):
        rows += [{"group_id": f"g{g}", "question": q, "context": f"Passage {g} about Python."} for q in variants]
    sims = tmp_path_factory.mktemp("sims") / "s.npz"
    doc = compute_weights(pico["base"], [pico[m] for m in FTS], rows, WeightsOptions(batch_size=5),
                          similarities_out=sims)
    return doc, sims


# ---------------------------------------------------------------------------------------------
# normalisation and distance

def test_softmax_weights_sum_to_total_and_favour_smaller_distance():
    d = [0.30, 0.25, 0.40]
    for total in (1.0, 3.0):
        w = normalise(d, WeightsOptions(total=total), base_distance=0.3)
        assert math.isclose(w.sum(), total, rel_tol=1e-12)
        assert list(np.argsort(w)[::-1]) == list(np.argsort(d))  # smaller distance -> larger weight
    # temperature in units of the base distance: w_i / w_j = exp((d_j - d_i) / (T * d_base))
    w = normalise([0.30, 0.285], WeightsOptions(temperature=0.05), base_distance=0.3)
    assert math.isclose(w[1] / w[0], math.e, rel_tol=1e-9)
    w = normalise([0.30, 0.285], WeightsOptions(temperature=0.015, temperature_scale="absolute"))
    assert math.isclose(w[1] / w[0], math.e, rel_tol=1e-9)
    # equal distances -> equal weights; a hotter softmax is flatter
    assert np.allclose(normalise([0.2, 0.2, 0.2], WeightsOptions(), 0.2), 1 / 3)
    hot = normalise(d, WeightsOptions(temperature=50.0), 0.3)
    cold = normalise(d, WeightsOptions(temperature=0.01), 0.3)
    assert np.ptp(hot) < 0.01 and cold.max() > 0.999


def test_inverse_power_weights():
    d = np.array([0.2, 0.4, 0.8])
    w = normalise(d, WeightsOptions(normalisation="inverse_power", power=2.0, total=2.0))
    expected = 2.0 * d ** -2 / (d ** -2).sum()
    assert np.allclose(w, expected) and math.isclose(w.sum(), 2.0)
    assert w[0] > w[1] > w[2]
    with pytest.raises(ConsistbenchError, match="positive distances"):
        normalise([0.1, 0.0], WeightsOptions(normalisation="inverse_power"))


def test_distances_on_known_matrices():
    s_ref = np.eye(3, dtype=np.float32)
    s = np.array([[1, 0.5, 0.1], [0.5, 1, -0.3], [0.1, -0.3, 1]], dtype=np.float32)
    off = np.array([0.5, 0.1, -0.3])
    assert math.isclose(distance(s, s_ref, "mean_abs"), np.abs(off).mean(), rel_tol=1e-6)
    assert math.isclose(distance(s, s_ref, "frobenius"), np.linalg.norm(s - s_ref), rel_tol=1e-6)
    assert math.isclose(distance(s, s_ref, "max_abs"), 0.5, rel_tol=1e-6)
    assert distance(s_ref, s_ref) == 0.0


def _sims(n_layers=2, n=6, k=3, seed=0, base_equals_ref=False) -> Similarities:
    rng = np.random.default_rng(seed)

    def rand_sim(scale=1.0):
        x = rng.normal(size=(n, 5)) * scale
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return (x @ x.T).astype(np.float32)

    ref = rand_sim()
    keys = row_keys(n_layers)
    base = {r: ref.copy() if base_equals_ref else rand_sim() for r in keys}
    models = [{r: rand_sim() for r in keys} for _ in range(k)]
    return Similarities(reference=ref, base=base, models=models, num_layers=n_layers)


def test_raw_and_delta_compare_give_the_same_softmax_weights():
    sims = _sims()
    raw = weights_from_similarities(sims, WeightsOptions(compare="raw"), FTS)
    delta = weights_from_similarities(sims, WeightsOptions(compare="delta"), FTS)
    for a, b in zip(raw["weights"]["layers"], delta["weights"]["layers"]):
        assert np.allclose(a, b, atol=1e-12)
    assert np.allclose(np.array(raw["distances"]["embed"]) - raw["base_distances"]["embed"],
                       delta["distances"]["embed"])
    with pytest.raises(ConsistbenchError, match="positive distances"):
        weights_from_similarities(sims, WeightsOptions(compare="delta", normalisation="inverse_power"), FTS)


def test_degenerate_base_gives_a_clear_non_finite_error():
    # the base reproduces S_r exactly: temperature scaled by a zero distance -> non-finite weights
    sims = _sims(base_equals_ref=True)
    with pytest.raises(ConsistbenchError, match="non-finite consistency weight"):
        weights_from_similarities(sims, WeightsOptions(), FTS)
    # an absolute temperature has no such problem
    weights_from_similarities(sims, WeightsOptions(temperature_scale="absolute"), FTS)


def test_load_queries_keeps_groups_whole(dev_rows, tmp_path):
    assert len(load_queries(dev_rows)) == 12
    assert len(load_queries(dev_rows, max_queries=7)) == 6  # two whole groups of three
    bad = write_jsonl(tmp_path / "bad.jsonl", [dict(dev_rows[0], context="")])
    with pytest.raises(ConsistbenchError, match="bad.jsonl:1: missing or empty field 'context'"):
        load_queries(bad)


# ---------------------------------------------------------------------------------------------
# on pico models

def test_weights_on_pico_models_are_normalised_and_ordered_by_distance(weights_doc, pico, tmp_path):
    doc, _ = weights_doc
    assert doc["num_layers"] == pico_models.NUM_LAYERS
    assert doc["rows"] == row_keys(pico_models.NUM_LAYERS)
    assert doc["options"] == WeightsOptions(batch_size=5).model_dump()
    assert doc["dev"]["n_queries"] == 12
    w, d = doc["weights"], doc["distances"]
    rows = [(w["embed"], d["embed"])] + list(zip(w["layers"], d["layers"])) + [(w["final"], d["final"])]
    for ws, ds in rows:
        assert len(ws) == 3 and all(math.isfinite(x) and x >= 0 for x in ws)
        assert math.isclose(sum(ws), 1.0, rel_tol=1e-9)
        order_w = sorted(range(3), key=lambda i: -ws[i])
        order_d = sorted(range(3), key=lambda i: ds[i])
        assert order_w == order_d
    # the files: JSON round trip and a heatmap PNG
    json_path, png = write_weights(doc, tmp_path / "w.json", tmp_path / "w.png")
    assert load_weights(json_path)["weights"] == w
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_weight_spread_and_summary_name_where_the_weights_differ(weights_doc):
    from consistbench.reference_method.weights_file import spread_summary

    doc, _ = weights_doc
    spread = weight_spread(doc)
    n = len(doc["weights"]["layers"])
    assert list(spread) == ["embed", *map(str, range(n)), "final"]
    assert spread["0"] == pytest.approx(max(doc["weights"]["layers"][0]) - min(doc["weights"]["layers"][0]))
    uniform = {**doc, "weights": {"embed": [1 / 3] * 3, "layers": [[1 / 3] * 3] * n, "final": [0.2, 0.3, 0.5]}}
    assert max(weight_spread(uniform).values()) == pytest.approx(0.3)
    assert "largest 0.3000 at final norm, median 0.0000" in spread_summary(uniform)


def test_saved_similarities_reproduce_and_reweight(weights_doc, pico):
    doc, sims = weights_doc
    models = [pico[m] for m in FTS]
    again = compute_weights(pico["base"], models, similarities_in=sims, options=WeightsOptions(batch_size=5))
    assert again["weights"] == doc["weights"]
    inv = compute_weights(pico["base"], models, similarities_in=sims,
                          options=WeightsOptions(normalisation="inverse_power", power=1.0))
    for ws, ds in zip(inv["weights"]["layers"], inv["distances"]["layers"]):
        expected = np.array(ds) ** -1.0 / (np.array(ds) ** -1.0).sum()
        assert np.allclose(ws, expected)


@pytest.mark.slow
def test_model_identical_to_base_has_the_base_distance(pico, dev_rows):
    doc = compute_weights(pico["base"], [pico["base"], pico["ft3"]], dev_rows[:6], WeightsOptions(),
                          labels=["same", "ft3"])
    for r in range(pico_models.NUM_LAYERS):
        assert math.isclose(doc["raw_distances"]["layers"][r][0], doc["base_distances"]["layers"][r], rel_tol=1e-6)


@pytest.mark.slow
def test_similarities_do_not_depend_on_batching_and_pool_the_query_tokens(pico, dev_rows):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from consistbench.reference_method.consistency_weights import _render

    queries = load_queries(dev_rows[:5])
    one = model_similarities(pico["ft1"], queries, WeightsOptions(batch_size=1))
    many = model_similarities(pico["ft1"], queries, WeightsOptions(batch_size=5))
    for r in one:
        assert np.allclose(one[r], many[r], atol=1e-5), r
    # layer 1 by hand: mean of output_hidden_states[2] over the tokens of the question
    tok = AutoTokenizer.from_pretrained(pico["ft1"])
    model = AutoModelForCausalLM.from_pretrained(pico["ft1"]).eval()
    vecs = []
    for q in queries:
        text, (start, end), special = _render(tok, q, True)
        enc = tok(text, return_offsets_mapping=True, return_tensors="pt", add_special_tokens=special)
        offsets = enc.pop("offset_mapping")[0]
        keep = [i for i, (s, e) in enumerate(offsets.tolist()) if e > start and s < end and e > s]
        assert tok.decode(enc["input_ids"][0, keep]).strip() == q.question.strip()
        with torch.no_grad():
            h = model(**enc, output_hidden_states=True).hidden_states[2][0]
        vecs.append(torch.nn.functional.normalize(h[keep].mean(0), dim=0))
    v = torch.stack(vecs)
    assert np.allclose((v @ v.T).numpy(), one["1"], atol=1e-5)


@pytest.mark.slow
def test_cli_ref_weights_and_merge_with_them(pico, dev_rows, tmp_path, capsys):
    dev = write_jsonl(tmp_path / "dev.jsonl", dev_rows)
    out = tmp_path / "weights.json"
    args = ["ref", "weights", "--base", str(pico["base"]), "--models", *[str(pico[m]) for m in FTS],
            "--dev", str(dev), "-o", str(out), "--normalisation", "inverse_power", "--total", "2"]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    assert doc["options"]["normalisation"] == "inverse_power" and doc["options"]["total"] == 2.0
    assert all(math.isclose(sum(r), 2.0) for r in doc["weights"]["layers"])
    assert out.with_suffix(".png").is_file()
    assert [m["label"] for m in doc["models"]] == list(FTS)
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(f"method: consistency\nbase: {pico['base']}\nmodels: [{', '.join(str(pico[m]) for m in FTS)}]\n"
                   f"parameters: {{weights_file: weights.json}}\n")
    assert main(["merge", str(cfg), "-o", str(tmp_path / "merged"), "--quiet"]) == 0
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "inverse_power" in card and "sha256" in card


def test_cli_ref_weights_bad_input(pico, dev_rows, tmp_path, capsys):
    out = tmp_path / "weights.json"
    base = ["ref", "weights", "--base", str(pico["base"]), "--models", str(pico["ft1"]), "-o", str(out)]
    bad = write_jsonl(tmp_path / "dev.jsonl", [{k: v for k, v in dev_rows[0].items() if k != "question"}] + dev_rows)
    capsys.readouterr()
    assert main(base + ["--dev", str(bad)]) == 2
    assert "missing or empty field 'question'" in capsys.readouterr().err
    assert main(base + ["--dev", str(tmp_path / "nope.jsonl")]) == 2
    assert main(base + ["--dev", str(bad), "--temperature", "-1"]) == 2
    assert "temperature" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".weights")]
