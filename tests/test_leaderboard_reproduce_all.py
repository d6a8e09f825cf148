"""Leaderboard: reproducing every row (``reproduce --all``) against a seeded sample (``--sample``).

A copy of a submission with one pair of responses swapped and every metric recomputed passes
rescoring and a sampled reproduction whose sample misses the pair, and fails ``--all``, which names
the rows; the record, the JSON/CSV exports and the site say which reproduction it was.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from consistbench.benchmark.cli import main
from consistbench.leaderboard import sampling as S
from consistbench.leaderboard import tracks as T
from consistbench.leaderboard import validate as V
from consistbench.leaderboard.render import COVERAGE_FIELDS, coverage_text

pytest.register_assert_rewrite("tests.leaderboard_fixtures")
pytest_plugins = ["tests.leaderboard_fixtures"]
from tests.leaderboard_fixtures import TASK, TEST_PLAN, read_samples, rejects, set_responses  # noqa: E402


def _reproduce(sub, model_dir, **kw):
    from consistbench.leaderboard.reproduce import reproduce

    return reproduce(sub, model_args=f"pretrained={model_dir}", batch_size=64, **{**TEST_PLAN, **kw})


@pytest.fixture(scope="session")
def sampled_submission(tmp_path_factory, real_submission, chatty_llama_dir):
    """A copy of the shared submission with a sampled reproduction record (TEST_PLAN: a few groups)."""
    out = tmp_path_factory.mktemp("lb-sampled") / "tiny-chatty"
    shutil.copytree(real_submission, out)
    _reproduce(out, chatty_llama_dir, mode="sample")
    return out


# ---------------------------------------------------------------------------------------------
# The plan, the defaults, the words

def test_every_track_states_its_default_and_all_fits_the_budget():
    assert set(T.REPRODUCE) == set(T.TRACKS)
    for track, mode in T.REPRODUCE.items():
        assert T.reproduce_mode(track) == mode in S.MODES
        rows = len(T.load_task(track).docs)
        # "all" exactly where regenerating every row fits the stated budget
        assert (mode == "all") == (rows <= T.REPRODUCE_ALL_MAX_ROWS), (track, rows)
    assert T.reproduce_mode("consistency_mini") == "all" and T.reproduce_mode("consistency") == "sample"


def test_the_all_plan_detects_one_forged_row_and_the_sample_states_its_power():
    spec = T.load_task(TASK)
    everything = S.plan_all(spec)
    assert everything.sample_groups == everything.n_groups and everything.max_mismatched_groups == 0
    assert everything.forged_share == 1 / len(spec.docs) and S.detection_power(everything) == 1.0
    assert S.groups_for(spec, "all", 0, everything) == sorted(S.group_sizes(spec))
    assert S.rows_of(spec, S.groups_for(spec, "all", 0, everything)) == list(range(len(spec.docs)))
    # tolerated mismatches: more than c groups must be forged, so the share grows
    tolerant = S.plan_all(spec, tolerated_share=0.05)
    assert tolerant.max_mismatched_groups >= 1 and tolerant.forged_share > everything.forged_share
    # the sample's power is the plan's own formula at its sample size
    for plan in (S.plan_sample(spec), S.plan_sample(spec, **TEST_PLAN), S.plan_sample(T.load_task("consistency"))):
        assert S.detection_power(plan) == plan.detection_probability
        cov = S.coverage(plan, "sample", 7)
        assert cov == {"mode": "sample", "rows_checked": 7, "rows_total": plan.n_docs,
                       "detectable_share": plan.forged_share, "power": plan.detection_probability}


def test_coverage_words_never_claim_all_without_every_row():
    assert coverage_text({"mode": "all", "rows_checked": 133, "rows_total": 133}) == "all 133 rows"
    assert (coverage_text({"mode": "sample", "rows_checked": 66, "rows_total": 133, "detectable_share": 0.1,
                           "power": 0.956}) == "a sample of 66 rows of 133 (detects a forged share \u2265 10% with "
                                              "probability 0.956)")
    assert coverage_text({"mode": "all", "rows_checked": 66, "rows_total": 133}).startswith("a sample of 66 rows")
    for old in (None, {}, {"verdict": "reproduced", "groups": 23}):
        assert coverage_text(old) == "a sample (size not recorded)"


# ---------------------------------------------------------------------------------------------
# The swapped pair

def test_a_swapped_pair_passes_a_sample_that_misses_it_and_fails_all(sub, chatty_llama_dir, capsys):
    spec = T.load_task(TASK)
    first, last = spec.docs[0], spec.docs[-1]
    logged = {s["doc"]["id"]: s["filtered_resps"][0] for s in read_samples(sub)}
    assert first["group_id"] != last["group_id"] and logged[first["id"]] != logged[last["id"]]
    swap = {first["id"]: logged[last["id"]], last["id"]: logged[first["id"]]}
    set_responses(sub, lambda d: swap.get(d["id"], logged[d["id"]]))  # every metric recomputed
    v = V.validate_submission(sub)
    assert v.verification == "rescored"  # rescoring cannot tell
    # a salt whose seeded sample misses both forged rows' groups
    plan = S.plan_sample(spec, **TEST_PLAN)
    forged_groups = {first["group_id"], last["group_id"]}
    salt = next(s for s in map(str, range(1000)) if not forged_groups
                & set(S.choose_groups(spec, S.sample_seed(v.content_sha256, s), plan.sample_groups)))
    rec = _reproduce(sub, chatty_llama_dir, mode="sample", salt=salt)
    assert not forged_groups & set(rec.groups) and rec.plan.sample_groups < rec.plan.n_groups
    assert rec.verdict == "reproduced" and rec.mode == "sample" and rec.rows_checked < rec.rows_total
    assert V.validate_submission(sub).verification == "reproduced"  # the sample passed the forgery
    # every row: the pair is found and named
    rc = main(["leaderboard", "reproduce", str(sub), "--all", "--model-args", f"pretrained={chatty_llama_dir}",
               "--batch-size", "64"])
    out = capsys.readouterr().out
    assert rc == 1 and "verdict: not reproduced" in out and f"all {len(spec.docs)} rows" in out
    assert first["id"] in out and last["id"] in out
    rec = json.loads((sub / "reproduction.json").read_text())
    assert rec["mode"] == "all" and rec["rows_checked"] == rec["rows_total"] == rec["compared_docs"] == len(spec.docs)
    assert rec["mismatched_groups"] == 2 and {m["id"] for m in rec["mismatches"]} == {first["id"], last["id"]}
    assert rec["exact_matches"] == len(spec.docs) - 2
    rejects(sub, "did not reproduce the logged responses", first["id"], last["id"])


# ---------------------------------------------------------------------------------------------
# The record's fields

def test_the_record_says_which_reproduction_it_was(tmp_path, reproduced_submission, sampled_submission):
    spec = T.load_task(TASK)
    everything = json.loads((reproduced_submission / "reproduction.json").read_text())  # the track's default
    assert everything["mode"] == "all" and everything["rows_checked"] == everything["rows_total"] == len(spec.docs)
    assert everything["power"] == 1.0 and everything["detectable_share"] == 1 / len(spec.docs)
    assert everything["groups"] == sorted(S.group_sizes(spec)) and everything["verdict"] == "reproduced"
    sampled = json.loads((sampled_submission / "reproduction.json").read_text())
    plan = S.plan_sample(spec, **TEST_PLAN)
    assert sampled["mode"] == "sample" and sampled["rows_total"] == len(spec.docs)
    assert (sampled["rows_checked"] == sampled["compared_docs"] == len(S.rows_of(spec, sampled["groups"]))
            < len(spec.docs))
    assert sampled["detectable_share"] == TEST_PLAN["forged_share"] and sampled["power"] == plan.detection_probability
    assert V.validate_submission(sampled_submission).verification == "reproduced"
    # the fields must follow from the plan and the figures
    sub = tmp_path / "sub"
    shutil.copytree(sampled_submission, sub)
    record = sub / "reproduction.json"
    for key, value, needle in (("mode", "all", "does not follow from its own parameters"),
                               ("rows_total", 10_000, "rows checked, rows total"),
                               ("rows_checked", len(spec.docs), "rows checked, rows total"),
                               ("power", 1.0, "rows checked, rows total")):
        record.write_text(json.dumps({**sampled, key: value}))
        rejects(sub, needle)
    # a record from before the fields existed is still valid, and read as the sample it was
    record.write_text(json.dumps({k: v for k, v in sampled.items() if k not in COVERAGE_FIELDS}))
    v = V.validate_submission(sub)
    assert v.verification == "reproduced" and v.reproduction.mode is None


# ---------------------------------------------------------------------------------------------
# The site and its exports

def test_the_site_and_exports_say_all_or_sample(tmp_path, reproduced_submission, sampled_submission):
    from consistbench.leaderboard.site import build_site

    root = tmp_path / "subs"
    shutil.copytree(reproduced_submission, root / "a-all")
    shutil.copytree(sampled_submission, root / "b-sample")
    shutil.copytree(sampled_submission, root / "c-old")
    old = json.loads((root / "c-old" / "reproduction.json").read_text())
    (root / "c-old" / "reproduction.json").write_text(json.dumps({k: v for k, v in old.items()
                                                                  if k not in COVERAGE_FIELDS}))
    site = tmp_path / "site"
    build_site(root, site, task=TASK)
    n = len(T.load_task(TASK).docs)
    sampled = json.loads((root / "b-sample" / "reproduction.json").read_text())
    sample_words = (f"a sample of {sampled['rows_checked']} rows of {n} (detects a forged share \u2265 50% with "
                    f"probability {sampled['power']:.3f})")
    pages = {slug: (site / "models" / f"{slug}.html").read_text() for slug in ("a-all", "b-sample", "c-old")}
    assert f"Reproduced, all {n} rows" in pages["a-all"] and "a sample of" not in pages["a-all"]
    assert f"Reproduced, {sample_words}" in pages["b-sample"] and f"all {n} rows" not in pages["b-sample"]
    assert f"Reproduced, {sample_words}" in pages["c-old"] and "before the mode was recorded" in pages["c-old"]
    assert f"all {n} rows" not in pages["c-old"]
    index = (site / "index.html").read_text()
    assert index.count(f'<span class="coverage">all {n} rows</span>') == 1
    assert index.count(f'<span class="coverage">{sample_words}</span>') == 2
    rows = {r["slug"]: r["reproduction"] for r in json.loads((site / "leaderboard.json").read_text())
            ["tracks"][TASK]["rows"]}
    assert {k: rows["a-all"][k] for k in COVERAGE_FIELDS} == {"mode": "all", "rows_checked": n, "rows_total": n,
                                                              "detectable_share": 1 / n, "power": 1.0}
    for slug in ("b-sample", "c-old"):
        assert {k: rows[slug][k] for k in COVERAGE_FIELDS} == {k: sampled[k] for k in COVERAGE_FIELDS}
    assert rows["c-old"]["mode_recorded"] is False and rows["b-sample"]["mode_recorded"] is True
    table = {r["slug"]: r for r in csv.DictReader((site / "leaderboard.csv").read_text().splitlines())}
    assert (table["a-all"]["mode"], table["a-all"]["rows_checked"], table["a-all"]["power"]) == ("all", str(n), "1.0")
    assert table["b-sample"]["mode"] == "sample" and table["b-sample"]["rows_checked"] == str(sampled["rows_checked"])
    assert float(table["b-sample"]["detectable_share"]) == 0.5 and float(table["b-sample"]["power"]) == sampled["power"]
