"""Group-bootstrap intervals: exact recombination, whole-group resampling, coverage, integration."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from consistbench.benchmark import intervals as I
from consistbench.benchmark import metrics as M
from consistbench.benchmark.cli import main
from consistbench.benchmark.variants import VARIANT_TYPES

WORDS = "the list copy sort dict value key file path open read write return call use module object".split()


def synthetic_rows(n_groups: int, seed: int = 0) -> list[M.Scored]:
    """Groups of 1 original + 1-3 variants with word-level noise, so every metric varies."""
    rng = random.Random(seed)
    rows = []
    types = list(VARIANT_TYPES)
    for g in range(n_groups):
        ref = " ".join(rng.choices(WORDS, k=rng.randint(3, 12)))
        base = ref.split()
        if rng.random() < 0.5:
            rng.shuffle(base)
        orig = " ".join(base[: rng.randint(1, len(base))])
        rows.append(M.Scored(f"g{g}-o", f"g{g}", "original", orig, ref))
        for k, t in enumerate(rng.sample(types, rng.randint(1, 3))):
            resp = orig if rng.random() < 0.4 else " ".join(rng.sample(base, rng.randint(1, len(base))))
            rows.append(M.Scored(f"g{g}-{k}", f"g{g}", t, resp, ref))
    return rows


NO_BS = M.ScoreSettings(compute_bs=False)


def test_point_equals_compute_all_including_bertscore(responses_rows):
    rows = [M.Scored(r["id"], r["group_id"], r["variant_type"], r["response"], r["reference"]) for r in responses_rows]
    expected = M.compute_all(rows)
    got = I.group_stats(rows).point()
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def test_point_equals_compute_all_on_many_groups():
    rows = synthetic_rows(300, seed=1)
    expected = M.compute_all(rows, NO_BS)
    got = I.group_stats(rows, NO_BS).point()
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_rows_without_pairs_give_the_same_metric_names_as_compute_all():
    rows = [M.Scored("a-o", "a", "original", "x y", "x y z"), M.Scored("b-o", "b", "original", "z", "x y z")]
    expected = M.compute_all(rows, NO_BS)
    res = I.bootstrap(I.group_stats(rows, NO_BS), I.BootstrapSettings(n_resamples=50))
    assert set(res["metrics"]) == set(expected)
    assert np.isnan(res["metrics"]["em"]["value"]) and np.isnan(res["metrics"]["em"]["low"])
    assert res["metrics"]["rougeL"]["valid"] == 50


def test_bleu_from_stats_matches_sacrebleu_on_edge_cases():
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize="13a")
    cases = [
        [10, 12, 6, 3, 1, 0, 10, 9, 8, 7],   # no 4-gram match: exp smoothing
        [10, 8, 6, 0, 0, 0, 10, 9, 8, 7],    # several orders without a match
        [2, 5, 1, 1, 0, 0, 2, 1, 0, 0],      # orders 3 and 4 have no n-gram at all
        [0, 5, 0, 0, 0, 0, 0, 0, 0, 0],      # empty output
        [7, 7, 0, 0, 0, 0, 7, 6, 5, 4],      # nothing matches: 0
        [9, 9, 9, 8, 7, 6, 9, 8, 7, 6],      # perfect
    ]
    rng = np.random.default_rng(0)
    for _ in range(200):
        total = np.sort(rng.integers(0, 30, 4))[::-1]
        correct = np.minimum(total, rng.integers(0, 20, 4))
        cases.append([int(total[0]), int(rng.integers(1, 40)), *correct.tolist(), *total.tolist()])
    for stats in cases:
        expected = bleu._compute_score_from_stats(list(stats)).score / 100
        assert I.bleu_from_stats(np.asarray(stats, dtype=float)) == pytest.approx(expected, abs=1e-12), stats


def test_resampled_bleu_is_exact_corpus_bleu_of_the_resampled_rows():
    rows = synthetic_rows(40, seed=2)
    stats = I.group_stats(rows, NO_BS)
    counts = I.resample_counts(stats.n_groups, 3, np.random.default_rng(5))
    by_group = {}
    for r in rows:
        by_group.setdefault(r.group_id, []).append(r)
    for w in counts:
        values = stats.evaluate(w @ stats.columns)
        resampled = [r for g, n in zip(stats.group_ids, w) for _ in range(int(n)) for r in by_group[g]]
        assert values["bleu"] == pytest.approx(M.bleu([r.response for r in resampled],
                                                      [r.reference for r in resampled]), abs=1e-12)
        para = [r for r in resampled if r.variant_type == "paraphrase"]
        assert values["bleu_paraphrase"] == pytest.approx(
            M.bleu([r.response for r in para], [r.reference for r in para]), abs=1e-12)
        rouge = M.rouge_l_many((r.response, r.reference) for r in resampled)
        assert values["rougeL"] == pytest.approx(rouge.mean(), abs=1e-12)


def test_resample_counts_draw_whole_groups():
    counts = I.resample_counts(50, 20, np.random.default_rng(0))
    assert counts.shape == (20, 50)
    assert (counts.sum(axis=1) == 50).all()
    assert len({tuple(c) for c in counts}) == 20


def _em_stats(pair_values_per_group: list[list[float]]) -> I.GroupStats:
    num = np.asarray([sum(v) for v in pair_values_per_group], dtype=float)
    cnt = np.asarray([len(v) for v in pair_values_per_group], dtype=float)
    return I.GroupStats(tuple(f"g{i:04d}" for i in range(len(num))), np.stack([num, cnt], axis=1),
                        {"em": I.Spec("ratio", 0, 1)})


def test_groups_are_resampled_whole_not_pairs():
    # every group: one consistent pair and one inconsistent pair. Resampling groups always gives
    # em = 0.5 (zero width); resampling pairs would not.
    groups = [[1.0, 0.0] for _ in range(100)]
    by_group = I.bootstrap(_em_stats(groups))["metrics"]["em"]
    assert by_group["low"] == by_group["high"] == 0.5 and by_group["stderr"] == 0.0
    by_pair = I.bootstrap(_em_stats([[v] for g in groups for v in g]))["metrics"]["em"]
    assert by_pair["high"] - by_pair["low"] > 0.1


def test_correlated_groups_give_wider_intervals_than_pairs_would():
    # three identical pairs per group (perfect within-group correlation): the group bootstrap's
    # standard error is sqrt(3) times the (wrong) pair-level one
    rng = np.random.default_rng(1)
    values = (rng.random(400) < 0.3).astype(float)
    groups = [[v, v, v] for v in values]
    se_group = I.bootstrap(_em_stats(groups), I.BootstrapSettings(n_resamples=2000))["metrics"]["em"]["stderr"]
    se_pair = I.bootstrap(_em_stats([[v] for g in groups for v in g]),
                          I.BootstrapSettings(n_resamples=2000))["metrics"]["em"]["stderr"]
    assert 1.5 < se_group / se_pair < 2.0  # sqrt(3) = 1.73


def coverage(reps: int = 400, n_groups: int = 150, seed: int = 0) -> float:
    """Share of simulated benchmarks whose 95% interval covers the true consistency.

    Population: each group has 1-3 pairs; its consistency p_g ~ Beta(2, 3) (true mean 0.4) and its
    pairs are Bernoulli(p_g), so pairs within a group are correlated as in real data.
    """
    rng = np.random.default_rng(seed)
    hit = 0
    for r in range(reps):
        p = rng.beta(2.0, 3.0, n_groups)
        k = rng.integers(1, 4, n_groups)
        em = [list((rng.random(n) < pg).astype(float)) for pg, n in zip(p, k)]
        res = I.bootstrap(_em_stats(em), I.BootstrapSettings(n_resamples=1000, seed=r))["metrics"]["em"]
        hit += res["low"] <= 0.4 <= res["high"]
    return hit / reps


def test_coverage_is_near_nominal():
    rate = coverage()
    print(f"coverage of the 95% interval over 400 simulated benchmarks of 150 groups: {rate:.3f}")
    assert 0.90 <= rate <= 0.99


def test_settings_are_recorded_and_seeded():
    stats = I.group_stats(synthetic_rows(200, seed=3), NO_BS)
    a = I.bootstrap(stats, I.BootstrapSettings(n_resamples=300, seed=7))
    b = I.bootstrap(stats, I.BootstrapSettings(n_resamples=300, seed=7))
    c = I.bootstrap(stats, I.BootstrapSettings(n_resamples=300, seed=8))
    assert a == b
    assert a["metrics"]["em"]["low"] != c["metrics"]["em"]["low"] or a["metrics"]["rougeL"] != c["metrics"]["rougeL"]
    assert a["settings"]["n_resamples"] == 300 and a["settings"]["seed"] == 7 and a["settings"]["confidence"] == 0.95
    assert a["groups"] == 200
    for name, m in a["metrics"].items():
        assert m["low"] <= m["value"] + 1e-12 and m["value"] <= m["high"] + 1e-12, name


def test_default_intervals_are_stable_to_two_decimals():
    # the size of the shipped test split: 1,415 groups. The Monte Carlo standard deviation of every
    # bound over seeds stays under 0.0025, so 95% of reruns agree within +-0.005 (two decimals).
    stats = I.group_stats(synthetic_rows(1415, seed=4), NO_BS)
    bounds = np.asarray([[[m["low"], m["high"]] for m in I.bootstrap(stats, I.BootstrapSettings(seed=s))["metrics"].values()]
                         for s in range(12)])
    assert bounds.std(axis=0, ddof=1).max() < 0.0025


def test_invalid_settings_are_refused():
    with pytest.raises(I.ConsistbenchError, match="n_resamples"):
        I.BootstrapSettings(n_resamples=0)
    with pytest.raises(I.ConsistbenchError, match="confidence"):
        I.BootstrapSettings(confidence=1.5)


def test_paired_identical_inputs_zero_width_not_significant():
    stats = I.group_stats(synthetic_rows(120, seed=5), NO_BS)
    res = I.paired_bootstrap(stats, stats)
    assert res["shared_groups"] == 120
    for name, m in res["metrics"].items():
        assert m["difference"] == m["low"] == m["high"] == 0.0, name
        assert not m["significant"] and m["p_value"] == 1.0


def test_paired_consistent_vs_inconsistent_is_significant():
    base = synthetic_rows(60, seed=6)
    same = [M.Scored(r.id, r.group_id, r.variant_type, "Use copy.copy().", r.reference) for r in base]
    diff = [M.Scored(r.id, r.group_id, r.variant_type, f"answer number {i}", r.reference) for i, r in enumerate(base)]
    res = I.paired_bootstrap(I.group_stats(same, NO_BS), I.group_stats(diff, NO_BS))
    em = res["metrics"]["em"]
    assert em["difference"] == 1.0 and em["low"] == 1.0 and em["significant"]
    assert res["metrics"]["em_paraphrase"]["significant"]


def test_paired_uses_the_same_resamples_for_both_models():
    # B = A with a handful of answers changed: the paired interval is far narrower than the
    # unpaired intervals of either model
    a_rows = synthetic_rows(300, seed=7)
    b_rows = [M.Scored(r.id, r.group_id, r.variant_type, r.response + (" x" if i % 50 == 0 else ""), r.reference)
              for i, r in enumerate(a_rows)]
    a, b = I.group_stats(a_rows, NO_BS), I.group_stats(b_rows, NO_BS)
    paired = I.paired_bootstrap(a, b)["metrics"]["rougeL"]
    single = I.bootstrap(a)["metrics"]["rougeL"]
    assert (paired["high"] - paired["low"]) < 0.25 * (single["high"] - single["low"])


def test_paired_refuses_disjoint_groups():
    a = I.group_stats(synthetic_rows(5, seed=8), NO_BS)
    b = I.GroupStats(tuple(f"x{g}" for g in a.group_ids), a.columns, a.specs)
    with pytest.raises(I.ConsistbenchError, match="share no group"):
        I.paired_bootstrap(a, b)


def test_score_cli_reports_intervals(responses_file, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["score", str(responses_file), "--no-bs", "--json", str(out), "--n-resamples", "200",
                 "--bootstrap-seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "95% intervals" in printed and "200 resamples, seed 3" in printed
    result = json.loads(out.read_text())
    iv = result["intervals"]
    assert iv["settings"]["n_resamples"] == 200 and iv["settings"]["seed"] == 3 and iv["groups"] == 3
    assert set(iv["metrics"]) == set(result["metrics"])
    for name, m in iv["metrics"].items():
        assert m["value"] == pytest.approx(result["metrics"][name])
        assert m["low"] <= m["value"] + 1e-12 <= m["high"] + 2e-12


def test_score_cli_without_intervals(responses_file, tmp_path):
    out = tmp_path / "r.json"
    assert main(["score", str(responses_file), "--no-bs", "--json", str(out), "--n-resamples", "0"]) == 0
    assert json.loads(out.read_text())["intervals"] is None


class _EchoLM:
    """An lm-eval LM answering with the question, or one fixed answer, without any model."""

    @staticmethod
    def make():
        from lm_eval.api.model import LM

        class Echo(LM):
            def loglikelihood(self, requests):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests):
                raise NotImplementedError

            def generate_until(self, requests, disable_tqdm=False):
                out = []
                for r in requests:
                    q = r.args[0].split("Question:")[-1].strip().split("\n")[0]
                    out.append(q if len(q) % 3 else "Use copy.copy().")
                return out

        return Echo()


@pytest.mark.slow
def test_lm_eval_stderr_column_is_filled_from_the_group_bootstrap():
    from lm_eval import evaluator
    from lm_eval.utils import make_table

    from consistbench.benchmark.evaluate import task_manager

    res = evaluator.simple_evaluate(model=_EchoLM.make(), tasks=["consistency_mini"], task_manager=task_manager(),
                                    log_samples=True)
    r = res["results"]["consistency_mini"]
    items = I.items_from_samples(res["samples"]["consistency_mini"])
    expected = I.bootstrap_items(items, M.ScoreSettings(), I.BootstrapSettings())
    for name in ("rougeL", "bleu", "em", "rs", "bs", "em_how_to", "bleu_original"):
        assert isinstance(r[f"{name}_stderr,none"], float), name
        assert r[f"{name}_stderr,none"] == pytest.approx(expected["metrics"][name]["stderr"]), name
        assert r[f"{name},none"] == pytest.approx(expected["metrics"][name]["value"]), name
    table = make_table(res)
    assert "N/A" not in table.split("em_how_to")[1].splitlines()[0]
    # consistbench eval's post-processing: full intervals in, the companions' own stderr keys out
    iv = I.add_to_lm_eval_results(res, res["samples"], M.ScoreSettings(), I.BootstrapSettings())
    assert res["consistbench"]["intervals"]["consistency_mini"] is iv["consistency_mini"]
    assert not [k for k in r if "_stderr_stderr" in k]
    assert iv["consistency_mini"]["groups"] == len({it[1] for it in items})

