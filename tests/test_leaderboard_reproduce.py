"""Leaderboard: plausibility and reproduction. The sampling plan detects the stated forged share;
an honest submission reproduces; forged responses and a chat template that is not the model's
are caught (``consistbench leaderboard reproduce``).
"""

from __future__ import annotations

import json
import math
import shutil

import pytest

from consistbench.benchmark.cli import main
from consistbench.leaderboard import tracks as T
from consistbench.leaderboard import validate as V

# the shared submission and helpers, built once per session (a plugin, its asserts rewritten)
pytest.register_assert_rewrite("tests.leaderboard_fixtures")
pytest_plugins = ["tests.leaderboard_fixtures"]
from tests.leaderboard_fixtures import (  # noqa: E402
    FEW_SHOT, TASK, TEST_PLAN, raw_results, read_results, read_samples, rejects, reproduce_sub,
    reprompt, results_path, set_responses)


def test_plan_detects_the_stated_forged_share():
    from scipy.stats import hypergeom

    from consistbench.leaderboard.sampling import plan_sample

    for task in (TASK, "consistency"):
        spec = T.load_task(task)
        p = plan_sample(spec)
        assert p.n_docs == len(spec.docs) and p.max_mismatched_groups == 0
        # the detection probability at the stated share, and the next smaller sample misses it
        assert p.detection_probability >= 0.95
        assert 1 - hypergeom.cdf(0, p.n_groups, p.forged_groups, p.sample_groups - 1) < 0.95
        # the forger's best hiding place holds the forged share in as few groups as possible
        sizes = sorted((sum(d["group_id"] == g for d in spec.docs) for g in {d["group_id"] for d in spec.docs}),
                       reverse=True) if task == TASK else None
        if sizes:
            assert sum(sizes[:p.forged_groups]) >= 0.1 * p.n_docs > sum(sizes[:p.forged_groups - 1])
    # sampling whole groups without replacement needs no more groups than the binomial bound
    full = plan_sample(T.load_task("consistency"))
    assert full.sample_groups <= math.ceil(math.log(1 - full.power) / math.log(1 - full.forged_groups / full.n_groups))
    tolerant = plan_sample(T.load_task("consistency"), tolerated_share=0.02)
    assert tolerant.max_mismatched_groups >= 1 and tolerant.sample_groups > plan_sample(T.load_task("consistency")).sample_groups


def test_reproduce_an_honest_submission(reproduced_submission, chatty_llama_dir, capsys):
    from consistbench.leaderboard.sampling import choose_groups, sample_seed

    rec = json.loads((reproduced_submission / "reproduction.json").read_text())
    assert rec["verdict"] == "reproduced", rec["reasons"]
    assert rec["exact_matches"] == rec["compared_docs"] > 0 and rec["mismatched_groups"] == 0
    assert rec["identical_prompts"] == rec["compared_docs"] and rec["chat_template_matches"] is True
    assert rec["metrics"]["rougeL"]["difference"] == 0 and rec["exact_match_ci"][1] == 1.0
    v = V.validate_submission(reproduced_submission)
    assert v.verification == "reproduced" and v.reproduction.seed == sample_seed(v.content_sha256)
    assert rec["groups"] == choose_groups(T.load_task(TASK), rec["seed"], rec["plan"]["sample_groups"])
    assert "reproduction.json" in v.files


def test_a_reproduction_record_is_bound_to_the_files_and_its_own_figures(tmp_path, reproduced_submission):
    sub = tmp_path / "sub"
    shutil.copytree(reproduced_submission, sub)
    record = sub / "reproduction.json"
    rec = json.loads(record.read_text())
    results_path(sub).write_text(raw_results(sub) + "\n")  # any edit of the files makes it stale
    rejects(sub, "reproduction record is for other files")
    shutil.copyfile(results_path(reproduced_submission), results_path(sub))
    for key, value, needle in (("groups", rec["groups"][1:] + ["gzzzz"], "not the seeded sample"),
                               ("mismatched_groups", 3, "does not follow from its own figures")):
        record.write_text(json.dumps({**rec, key: value}))
        rejects(sub, needle)


def _forge_reference(d):
    return d["reference"]


def _identical_in_group(sub):
    """Every response of a group replaced by the group original's logged response (EM 1.0)."""
    samples = read_samples(sub)
    first = {s["doc"]["group_id"]: s["filtered_resps"][0] for s in samples if s["doc"]["variant_type"] == "original"}
    return lambda d: first[d["group_id"]]


def _swapped(sub):
    """Each group's responses rotated by one row: every response belongs to another question."""
    samples = read_samples(sub)
    groups: dict[str, list] = {}
    for s in samples:
        groups.setdefault(s["doc"]["group_id"], []).append(s)
    moved = {}
    for members in groups.values():
        for a, b in zip(members, members[1:] + members[:1]):
            moved[a["doc"]["id"]] = b["filtered_resps"][0]
    return lambda d: moved[d["id"]]


@pytest.mark.parametrize("forgery,implausible", [
    ("reference", "equal their reference"), ("identical", "answer every question identically"), ("swapped", None)])
def test_reproduce_detects_forged_responses(sub, chatty_llama_dir, capsys, forgery, implausible):
    respond = {"reference": lambda: _forge_reference, "identical": lambda: _identical_in_group(sub),
               "swapped": lambda: _swapped(sub)}[forgery]()
    set_responses(sub, respond)
    v = V.validate_submission(sub)  # the arithmetic is right: rescoring alone accepts it
    if implausible:
        assert v.verification == "needs reproduction" and any(implausible in r for r in v.implausible), v.implausible
    else:
        assert v.verification == "rescored"
    rc = main(["leaderboard", "reproduce", str(sub), "--model-args", f"pretrained={chatty_llama_dir}",
               "--batch-size", "64", "--forged-share", str(TEST_PLAN["forged_share"]), "--power", str(TEST_PLAN["power"])])
    out = capsys.readouterr().out
    assert rc == 1 and "verdict: not reproduced" in out
    rec = json.loads((sub / "reproduction.json").read_text())
    assert rec["verdict"] == "not reproduced" and rec["mismatched_groups"] > 0 and rec["mismatches"]
    assert rec["exact_matches"] < rec["compared_docs"]
    rejects(sub, "did not reproduce the logged responses")


def test_reproduce_detects_a_chat_template_that_is_not_the_models(sub, chatty_llama_dir):
    # few-shot text baked into the recorded template: every prompt matches the recorded template,
    # but the model's own tokenizer renders other prompts
    template = read_results(sub)["chat_template"]
    forged = "{{ '<|im_start|>user\n" + FEW_SHOT.replace("\n", "\\n") + "<|im_end|>\n' }}" + template
    reprompt(sub, lambda text: text, template=forged)
    assert V.validate_submission(sub).verification == "rescored"
    rec = reproduce_sub(sub, chatty_llama_dir)
    assert rec.verdict == "not reproduced" and rec.chat_template_matches is False
    assert rec.identical_prompts == 0
