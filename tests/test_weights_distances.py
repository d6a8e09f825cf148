"""The distance kinds of the consistency weights (paper, centered, cka, within_group) on matrices
whose answer is known, how they reach the weights file, and the side-by-side distances chart."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.consistency_weights import (
    Similarities,
    compute_weights,
    distance,
    double_centre,
    linear_cka,
    weights_from_similarities,
)
from consistbench.reference_method.weights_chart import plot_distances
from consistbench.reference_method.weights_file import (
    DISTANCE_KINDS,
    WeightsOptions,
    check_weights_doc,
    options_from,
    row_keys,
)
from tests.test_consistency_weights import FTS, QUESTIONS, pico, weights_doc  # noqa: F401  (fixtures)

GROUPS = ["g0", "g0", "g0", "g1", "g1", "g2", "g2", "g2", "g3", "g3"]


def gram(x: np.ndarray) -> np.ndarray:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def reps(n=10, dim=6, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim))


# ---------------------------------------------------------------------------------------------
# each distance on constructed matrices

def test_a_shared_offset_moves_paper_but_not_centered_or_cka():
    s, r = gram(reps(seed=1)), gram(reps(seed=2))
    shifted = s + 0.7                                # every similarity up by the same amount
    assert distance(shifted, r, "paper") != pytest.approx(distance(s, r, "paper"), abs=0.1)
    for kind in ("centered", "cka"):
        assert distance(shifted, r, kind) == pytest.approx(distance(s, r, kind), abs=1e-12), kind
        assert distance(2.5 * s - 0.3, r, kind) == pytest.approx(distance(s, r, kind), abs=1e-12), kind
    # a per-query offset (row and column effects) is removed by double centring as well
    u = np.linspace(-0.2, 0.2, s.shape[0])
    assert distance(s + u[:, None] + u[None, :], r, "centered") == pytest.approx(distance(s, r, "centered"), abs=1e-12)


def test_identical_representations_give_zero_and_cka_is_the_representations_cka():
    x, y = reps(seed=3), reps(seed=4, dim=9)
    s, r = gram(x), gram(y)
    for kind in ("paper", "centered", "cka"):
        assert distance(s, s, kind) == pytest.approx(0.0, abs=1e-12), kind
    # linear CKA from the features: ||Yc' Xc||_F^2 / (||Xc' Xc||_F ||Yc' Yc||_F), rows unit-normalised
    xc = x / np.linalg.norm(x, axis=1, keepdims=True)
    yc = y / np.linalg.norm(y, axis=1, keepdims=True)
    xc, yc = xc - xc.mean(0), yc - yc.mean(0)
    expected = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(s, r) == pytest.approx(expected, rel=1e-10)
    assert distance(s, r, "cka") == pytest.approx(1 - expected, rel=1e-10) and 0 < distance(s, r, "cka") < 1
    c = double_centre(s)
    assert np.allclose(c.sum(0), 0) and np.allclose(c.sum(1), 0)


def test_within_group_reads_only_pairs_of_the_same_group():
    s, r = gram(reps(seed=5)), gram(reps(seed=6))
    base = distance(s, r, "within_group", groups=GROUPS)
    across, within = s.copy(), s.copy()
    across[0, 4] = across[4, 0] = 0.99               # queries 0 and 4: groups g0 and g1
    within[0, 1] = within[1, 0] = 0.99               # queries 0 and 1: both g0
    assert distance(across, r, "within_group", groups=GROUPS) == base
    assert distance(within, r, "within_group", groups=GROUPS) != base
    iu = np.triu_indices(10, 1)
    same = np.array(GROUPS)[iu[0]] == np.array(GROUPS)[iu[1]]
    assert base == pytest.approx(np.mean(np.abs(s[iu][same] - r[iu][same])))
    with pytest.raises(ConsistbenchError, match="group of every dev query"):
        distance(s, r, "within_group")
    with pytest.raises(ConsistbenchError, match="at least two queries"):
        distance(s, r, "within_group", groups=[str(i) for i in range(10)])


def test_anisotropy_makes_paper_uniform_while_centered_and_cka_see_the_pattern():
    """Two fine-tunes whose similarities sit on the same large offset (0.87, as SmolLM2's do): one
    follows the encoder's pattern, one does not. The paper's distance is the offset for both."""
    r = gram(reps(n=24, seed=7))
    rc = double_centre(r)
    noise = double_centre(gram(reps(n=24, seed=8)))
    good = 0.87 + 0.05 * rc / np.abs(rc).max()
    bad = 0.87 + 0.05 * noise / np.abs(noise).max()
    for m in (good, bad):
        np.fill_diagonal(m, 1.0)
    d_paper = [distance(m, r, "paper") for m in (good, bad)]
    assert abs(d_paper[0] - d_paper[1]) < 0.02 * d_paper[0]
    for kind in ("centered", "cka"):
        d = [distance(m, r, kind) for m in (good, bad)]
        assert d[0] < 0.5 * d[1], (kind, d)
    sims = Similarities(reference=r, base={k: bad for k in row_keys(1)},
                        models=[{k: good for k in row_keys(1)}, {k: bad for k in row_keys(1)}], num_layers=1)
    paper = weights_from_similarities(sims, WeightsOptions(temperature_scale="absolute"), ["good", "bad"])
    cka = weights_from_similarities(sims, WeightsOptions(distance="cka", temperature_scale="absolute"), ["good", "bad"])
    assert abs(paper["weights"]["layers"][0][0] - 0.5) < 0.1 and cka["weights"]["layers"][0][0] > 0.99
    assert cka["mean_similarity"]["models"]["layers"][0] == pytest.approx([0.87, 0.87], abs=0.01)


# ---------------------------------------------------------------------------------------------
# options, the file and the chart

def test_options_read_version_1_distances_as_paper_with_that_norm():
    for norm in ("mean_abs", "frobenius", "max_abs"):
        o = WeightsOptions(distance=norm)
        assert (o.distance, o.norm) == ("paper", norm)
    assert options_from(distance="cka").norm == "mean_abs"
    with pytest.raises(ConsistbenchError, match="contradicts norm"):
        options_from(distance="frobenius", norm="max_abs")
    with pytest.raises(ConsistbenchError, match="distance"):
        options_from(distance="euclid")
    s, r = gram(reps(seed=9)), gram(reps(seed=10))
    assert distance(s, r, "frobenius") == distance(s, r, "paper", "frobenius")


def test_every_computable_distance_is_kept_and_the_chosen_one_weighs(weights_doc, pico):  # noqa: F811
    doc, sims = weights_doc
    assert doc["version"] == 2 and set(doc["all_distances"]) == set(DISTANCE_KINDS)
    assert doc["dev"]["n_groups"] == len(QUESTIONS) and doc["dev"]["within_group_pairs"] == 3 * len(QUESTIONS)
    assert doc["all_distances"]["paper"]["models"] == doc["raw_distances"]
    models = [pico[m] for m in FTS]
    cka = compute_weights(pico["base"], models, similarities_in=sims, options=WeightsOptions(distance="cka"))
    assert cka["raw_distances"] == doc["all_distances"]["cka"]["models"]
    assert cka["base_distances"] == doc["all_distances"]["cka"]["base"]
    assert cka["weights"] != doc["weights"]
    for row in cka["raw_distances"]["layers"]:
        assert all(0 <= d <= 1 for d in row)


def test_within_group_from_matrices_saved_without_groups(weights_doc, pico, tmp_path):  # noqa: F811
    doc, sims_file = weights_doc
    sims = Similarities.load(sims_file)
    sims.meta.pop("groups")                          # as saved before the groups were recorded
    old = sims.save(tmp_path / "old.npz")
    rows = [{"group_id": f"g{g}", "question": q, "context": f"Passage {g} about Python."}
            for g, variants in enumerate(QUESTIONS) for q in variants]
    models = [pico[m] for m in FTS]
    opts = WeightsOptions(distance="within_group")
    again = compute_weights(pico["base"], models, rows, opts, similarities_in=old)  # groups from the dev rows
    assert again["raw_distances"] == doc["all_distances"]["within_group"]["models"]
    other = [dict(r, question=r["question"] + "?") for r in rows]  # not the queries these matrices are of
    with pytest.raises(ConsistbenchError, match="groups of these saved similarities are unknown"):
        compute_weights(pico["base"], models, other, opts, similarities_in=old)


def test_version_1_files_are_read(weights_doc):  # noqa: F811
    doc, _ = weights_doc
    v1 = {k: v for k, v in doc.items() if k not in ("all_distances", "mean_similarity")}
    v1 = json.loads(json.dumps(v1 | {"version": 1, "options": {**doc["options"], "distance": "max_abs"}}))
    del v1["options"]["norm"]
    assert check_weights_doc(v1)["version"] == 1
    with pytest.raises(ConsistbenchError, match="reads versions 1, 2"):
        check_weights_doc({**v1, "version": 3})


def test_distances_chart_draws_two_kinds_and_names_a_missing_one(weights_doc, tmp_path):  # noqa: F811
    doc, _ = weights_doc
    png = plot_distances(doc, tmp_path / "d.png", ("paper", "cka"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    old = {k: v for k, v in doc.items() if k != "all_distances"}
    with pytest.raises(ConsistbenchError, match="no 'paper' distances"):
        plot_distances(old, tmp_path / "e.png")
    assert not (tmp_path / "e.png").exists()


def test_cli_distance_norm_and_distances_chart_from_saved_matrices(weights_doc, pico, tmp_path, capsys):  # noqa: F811
    _, sims = weights_doc
    out = tmp_path / "w.json"
    args = ["ref", "weights", "--base", str(pico["base"]), "--models", *[str(pico[m]) for m in FTS],
            "--from-similarities", str(sims), "-o", str(out), "--distance", "centered", "--norm", "frobenius",
            "--distances-chart", "paper,centered", "--no-heatmap"]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    assert (doc["options"]["distance"], doc["options"]["norm"]) == ("centered", "frobenius")
    assert (tmp_path / "w_distances.png").is_file() and not out.with_suffix(".png").exists()
    assert main(args[:-3] + ["--distances-chart", "paper,nope"]) == 2
    assert "two of paper, centered, cka, within_group" in capsys.readouterr().err
    assert all(math.isfinite(w) for row in doc["weights"]["layers"] for w in row)
