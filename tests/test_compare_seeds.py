"""`consistbench compare` beyond one run a side: the equivalence test (TOST), the minimum detectable
difference, and arms of several training seeds (the two-level bootstrap)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from consistbench.benchmark import intervals as I
from consistbench.benchmark import paired_stats as P
from consistbench.benchmark.cli import main
from consistbench.benchmark.compare import compare, load_side, parse_margins
from consistbench.benchmark.errors import ConsistbenchError
from tests.conftest import write_jsonl
from tests.test_compare import consistent, data_rows, inconsistent, with_responses


def run_file(tmp_path, name: str, rows: list[dict], good) -> str:
    """A responses file whose groups in ``good`` (group numbers) answer consistently, the others not."""
    def answer(i, r):
        return consistent(i, r) if int(r["group_id"][3:]) in good else inconsistent(i, r)

    return str(write_jsonl(tmp_path / f"{name}.jsonl", with_responses(rows, answer)))


def ratio_stats(hits, pairs) -> I.GroupStats:
    """One ratio metric ``em`` from per-group consistent pairs and pair counts."""
    hits, pairs = np.asarray(hits, dtype=np.float64), np.asarray(pairs, dtype=np.float64)
    ids = tuple(f"g{i:04d}" for i in range(len(pairs)))
    return I.GroupStats(ids, np.stack([hits, pairs], axis=1), {"em": I.Spec("ratio", 0, 1)})


# ---------------------------------------------------------------------------------------------
# the three constructed comparisons

def test_a_known_large_difference_is_significant_and_not_equivalent(tmp_path):
    rows = data_rows(40)
    a = load_side(run_file(tmp_path, "a", rows, range(40)))
    b = load_side(run_file(tmp_path, "b", rows, range(0, 40, 2)))   # half the groups consistent
    res = compare(a, b, margins={"em": 0.03})["metrics"]["em"]
    assert res["a"] == 1.0 and 0.3 < res["b"] < 0.7
    assert res["significant"] and res["low"] > 0.2 and res["p_value"] < 0.01
    assert res["equivalent"] is False and res["tost_p"] == 1.0     # every resample lies beyond +margin
    assert res["mdd"] == pytest.approx(P.detectable_difference(res["stderr"]))


def test_a_tiny_difference_is_equivalent_within_the_margin(tmp_path):
    rows = data_rows(200)
    a = load_side(run_file(tmp_path, "a", rows, range(200)))
    b = load_side(run_file(tmp_path, "b", rows, set(range(200)) - {7}))  # one group of 200 differs
    res = compare(a, b, margins=parse_margins("em=0.03,rs=0.03"))
    em = res["metrics"]["em"]
    assert 0 < em["difference"] < 0.01
    assert -0.03 < em["tost_low"] <= em["tost_high"] < 0.03 and em["equivalent"] is True
    assert em["tost_p"] < 0.05 and em["margin"] == 0.03
    # the 90 % TOST interval sits inside the 95 % two-sided interval of the same resamples
    assert em["low"] <= em["tost_low"] and em["tost_high"] <= em["high"]
    assert res["metrics"]["em_how_to"]["margin"] == 0.03             # a metric's margin holds per type
    assert "margin" not in res["metrics"]["rougeL"] and res["margins"] == {"em": 0.03, "rs": 0.03}
    # a margin too tight for the design: not equivalent, and the TOST p says so
    tight = compare(a, b, margins={"em": 0.002})["metrics"]["em"]
    assert tight["equivalent"] is False and tight["tost_p"] >= 0.05


def test_a_large_seed_spread_widens_the_interval(tmp_path):
    rows = data_rows(60)
    spread = [range(0, 60), range(0, 60, 2), range(0, 60, 6)]       # A's seeds: EM about 1, 1/2, 1/6
    steady = [range(0, 60, 2), range(1, 60, 2), range(0, 60, 2)]     # B's seeds: EM about 1/2 each
    a = [load_side(run_file(tmp_path, f"a{i}", rows, g)) for i, g in enumerate(spread)]
    b = [load_side(run_file(tmp_path, f"b{i}", rows, g)) for i, g in enumerate(steady)]
    one = compare(a[0], b[0])["metrics"]["em"]
    seeds = compare(a, b)
    em = seeds["metrics"]["em"]
    assert seeds["runs"] == {"a": 3, "b": 3} and len(seeds["a"]["runs"]) == 3
    assert em["a"] == pytest.approx(np.mean(em["a_runs"])) and em["b"] == pytest.approx(np.mean(em["b_runs"]))
    assert em["high"] - em["low"] > 2 * (one["high"] - one["low"])
    assert em["stderr"] > 2 * em["stderr_groups"]                    # the seed level is most of it
    assert em["seed_sd"]["a"] > 0.2 and em["df"] is not None and em["mdd"] > one["mdd"]
    assert one["df"] is None and one["seed_sd"] == {"a": None, "b": None}
    # with one seed of A the difference is large and significant; over A's seeds it is not
    assert one["significant"] and not em["significant"]


# ---------------------------------------------------------------------------------------------
# the pieces

def test_one_run_a_side_is_the_paired_bootstrap():
    rng = np.random.default_rng(3)
    pairs = rng.integers(1, 4, size=80)
    a, b = ratio_stats(rng.binomial(pairs, 0.5), pairs), ratio_stats(rng.binomial(pairs, 0.4), pairs)
    settings = I.BootstrapSettings(n_resamples=500, seed=4)
    one = I.paired_bootstrap(a, b, settings)["metrics"]["em"]
    runs = I.paired_runs_bootstrap([a], [b], settings)["metrics"]["em"]
    assert one == runs and one["stderr"] == one["stderr_groups"]
    # the same run twice in an arm changes nothing but the run draws (which then cannot move it)
    twice = I.paired_runs_bootstrap([a, a], [b, b], settings)["metrics"]["em"]
    assert twice["low"] == pytest.approx(one["low"]) and twice["high"] == pytest.approx(one["high"])


def test_detectable_difference_is_2_8_standard_errors():
    assert P.detectable_difference(0.01) == pytest.approx(0.028016, abs=1e-6)
    assert P.detectable_difference(0.01, confidence=0.99, power=0.9) == pytest.approx((2.5758 + 1.2816) * 0.01, abs=1e-5)
    # with few degrees of freedom, t quantiles: (t_4(.975) + t_4(.8)) x SE
    assert P.detectable_difference(0.01, df=4) == pytest.approx((2.7764 + 0.9410) * 0.01, abs=1e-5)


def test_the_run_level_carries_only_the_variance_the_rows_do_not_explain():
    """Runs that differ only by their rows' sampling noise add (almost) nothing; runs shifted as a
    whole add their shift's variance, widened for the few degrees of freedom."""
    rng = np.random.default_rng(0)
    pairs = rng.integers(1, 4, size=300)
    p = rng.beta(2, 3, size=300)
    same = [ratio_stats(rng.binomial(pairs, p), pairs) for _ in range(3)]
    b = [ratio_stats(rng.binomial(pairs, p), pairs) for _ in range(3)]
    settings = I.BootstrapSettings(n_resamples=1000, seed=1)
    quiet = I.paired_runs_bootstrap(same, b, settings)["metrics"]["em"]
    assert quiet["stderr"] < 1.3 * quiet["stderr_groups"]
    shifted = [ratio_stats(rng.binomial(pairs, np.clip(p + d, 0, 1)), pairs) for d in (-0.15, 0.0, 0.15)]
    loud = I.paired_runs_bootstrap(shifted, b, settings)["metrics"]["em"]
    assert loud["seed_sd"]["a"] == pytest.approx(0.15, rel=0.35)
    assert loud["stderr"] > 2 * loud["stderr_groups"] and loud["df"] < 10
    # the interval is the replicates' widened by t_df / z around the point
    assert loud["high"] - loud["low"] > 3.92 * loud["stderr"]


def test_margins_parse_and_bad_ones_are_refused():
    assert parse_margins("0.03") == {"*": 0.03}
    assert parse_margins(" em=0.03, rs=0.05 ") == {"em": 0.03, "rs": 0.05}
    assert P.margin_for("em_paraphrase", {"em": 0.03, "*": 0.1}) == 0.03
    assert P.margin_for("bleu", {"em": 0.03, "*": 0.1}) == 0.1 and P.margin_for("bleu", {"em": 0.03}) is None
    for bad in ("", "-0.1", "em=", "em=x", "=0.1", "em=0.1,,rs=0.1", "nan"):
        with pytest.raises(ConsistbenchError, match="equivalence margin"):
            parse_margins(bad)
    stats = ratio_stats([1, 0, 1], [1, 1, 1])
    with pytest.raises(ConsistbenchError, match="equivalence margin bleu=0.1"):
        I.paired_runs_bootstrap([stats], [stats], I.BootstrapSettings(n_resamples=10), {"bleu": 0.1})


def test_cli_several_runs_a_side_and_the_equivalence_margin(tmp_path, capsys):
    rows = data_rows(30)
    a = [run_file(tmp_path, f"a{i}", rows, range(i, 30)) for i in range(3)]
    b = [run_file(tmp_path, f"b{i}", rows, range(0, 30 - i)) for i in range(3)]
    out = tmp_path / "cmp.json"
    args = ["compare", a[0], b[0], "--a", a[1], "--a", a[2], "--b", b[1], "--b", b[2], "--no-bs",
            "--equivalence-margin", "em=0.2", "--label-a", "armA", "--json", str(out)]
    assert main(args) == 0
    res = json.loads(out.read_text())
    assert res["runs"] == {"a": 3, "b": 3} and res["a"]["label"] == "armA"
    assert [r["source"] for r in res["a"]["runs"]] == a and [r["source"] for r in res["b"]["runs"]] == b
    em = res["metrics"]["em"]
    assert abs(em["difference"]) < 0.05 and em["equivalent"] and "margin" not in res["metrics"]["rougeL"]
    printed = capsys.readouterr().out
    assert "two-level bootstrap" in printed and "MDD" in printed
    assert "equivalence (TOST" in printed and "em_how_to" in printed and " yes " in printed
    # only options, no positionals: the same comparison
    out2 = tmp_path / "cmp2.json"
    only = ["compare", "--a", a[0], "--a", a[1], "--a", a[2], "--b", b[0], "--b", b[1], "--b", b[2], "--no-bs",
            "--equivalence-margin", "em=0.2", "--label-a", "armA", "--json", str(out2)]
    assert main(only) == 0 and json.loads(out2.read_text())["metrics"] == res["metrics"]
    # a missing side and a bad margin: one line each, exit 2, no JSON
    out.unlink()
    assert main(["compare", a[0], "--no-bs", "--json", str(out)]) == 2
    assert "no model B" in capsys.readouterr().err
    assert main(["compare", a[0], b[0], "--no-bs", "--equivalence-margin", "em=-1", "--json", str(out)]) == 2
    assert "equivalence margin" in capsys.readouterr().err and not out.exists()


def test_runs_on_another_data_version_are_refused(tmp_path):
    rows = data_rows(10)
    changed = [dict(r) for r in rows]
    changed[4]["question"] = "Edited later?"
    a = [load_side(run_file(tmp_path, "a0", rows, range(10)))]
    a.append(load_side(str(write_jsonl(tmp_path / "a1.jsonl", with_responses(changed, consistent)))))
    b = load_side(run_file(tmp_path, "b", rows, range(10)))
    with pytest.raises(ConsistbenchError, match="different data versions"):
        compare(a, b)
