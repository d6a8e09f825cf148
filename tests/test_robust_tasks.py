"""The robust families' rows and lm-eval tasks: build, data version, scoring on a tiny model,
what the template task shows the model, and a user's own template file.

Generation runs use a tiny random Llama with SmolLM2's tokenizer and chat template (8 new tokens)
on the ``_mini`` tasks (whole groups of ``mini_groups.txt``).
"""

from __future__ import annotations

import glob
import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import DataVersionError
from consistbench.benchmark.evaluate import EvalOptions, run_eval, task_metrics
from consistbench.benchmark.robustbuild import build_robust, family_rows
from consistbench.benchmark.schema import data_checksum, load_data
from consistbench.benchmark.taskdata import task_records
from consistbench.benchmark.variants import ROBUST_TYPES
from consistbench.benchmark.variants.template import load_templates
from tests.conftest import REPO

DATA = REPO / "tasks/consistency/data"
GEN_TOKS = 8
MINI = set((DATA / "mini_groups.txt").read_text().split())
TASKS = {f: f"consistency_{f}_mini" for f in ROBUST_TYPES}


# ---------------------------------------------------------------------------------------------
# The shipped rows and the build

def test_shipped_rows_match_the_test_split_and_the_generators():
    test = load_data(DATA / "test.jsonl")
    versions = json.loads((DATA / "robust/versions.json").read_text())
    assert versions["source"]["sha256"] == data_checksum(test)  # built from today's test split
    originals = {r.group_id: r for r in test if r.variant_type == "original"}
    for family in ROBUST_TYPES:
        rows = load_data(DATA / f"robust/{family}.jsonl")
        assert data_checksum(rows) == versions["families"][family]["sha256"]
        groups = defaultdict(list)
        for r in rows:
            groups[r.group_id].append(r)
        assert len(groups) == versions["families"][family]["groups"] >= len(originals) - 3
        for gid, members in groups.items():
            assert [m.variant_type for m in members] == ["original", family]
            assert members[0].question == originals[gid].question and members[1].id == f"{gid}-{family}"
            assert members[1].context == originals[gid].context and members[1].reference == originals[gid].reference
    # the committed rows are what the generators make today (first 40 groups)
    first = [r for r in test if r.group_id in list(originals)[:40]]
    rebuilt, _ = family_rows(first, seed=versions["seed"])
    for family in ROBUST_TYPES:
        shipped = [json.loads(line) for line in (DATA / f"robust/{family}.jsonl").read_text().splitlines()]
        shipped = [r for r in shipped if r["group_id"] in set(list(originals)[:40])]
        if family == "template":  # assignment is over all groups: compare everything but the template
            shipped = [{k: v for k, v in r.items() if k not in ("template_id", "generator")} for r in shipped]
            rebuilt[family] = [{k: v for k, v in r.items() if k not in ("template_id", "generator")}
                               for r in rebuilt[family]]
        assert rebuilt[family] == shipped, family


@pytest.fixture()
def small_task_dir(tmp_path) -> Path:
    """A task folder with the first 25 test groups, their robust rows built by the command."""
    task = tmp_path / "consistency"
    (task / "data").mkdir(parents=True)
    shutil.copyfile(REPO / "tasks/consistency/templates.yaml", task / "templates.yaml")
    lines = (DATA / "test.jsonl").read_text().splitlines(keepends=True)
    keep = []
    for line in lines:
        gid = json.loads(line)["group_id"]
        if gid not in keep:
            keep.append(gid)
        if len(keep) > 25:
            break
    (task / "data/test.jsonl").write_text("".join(line for line in lines if json.loads(line)["group_id"] in keep[:25]))
    (task / "data/mini_groups.txt").write_text("\n".join(keep[:5]) + "\n")
    assert main(["data", "build-robust", "--test", str(task / "data/test.jsonl"), "-o", str(task / "data/robust")]) == 0
    return task


def test_build_is_rerunnable_and_the_tasks_check_the_data_version(small_task_dir, capsys):
    data = small_task_dir / "data"
    test_sha = data_checksum(load_data(data / "test.jsonl"))
    for family in ROBUST_TYPES:
        recs = task_records(data_sha256=test_sha, data_dir=data, robust=family)
        assert recs and {r["variant_type"] for r in recs} == {"original", family}
        assert all(isinstance(r["generator"], str) for r in recs)  # one arrow type for every row
        mini = task_records(data_sha256=test_sha, data_dir=data, robust=family, subset="mini")
        assert len({r["group_id"] for r in mini}) == 5 and len(mini) == 10  # whole groups
    # the same inputs rewrite the same bytes
    assert main(["data", "build-robust", "--test", str(data / "test.jsonl"), "-o", str(data / "robust"), "--check"]) == 0
    # a robust file edited after the build
    typo = data / "robust/typo.jsonl"
    saved = typo.read_text()
    typo.write_text(saved.replace('"question": "', '"question": "X', 1))
    with pytest.raises(DataVersionError, match="changed after the build"):
        task_records(data_dir=data, robust="typo")
    typo.write_text(saved)
    # the template set edited after the build
    tpl = small_task_dir / "templates.yaml"
    tpl.write_text(tpl.read_text().replace('    template: "Context:', '    template: "Passage:', 1))
    with pytest.raises(DataVersionError, match="differs from the template set"):
        task_records(data_dir=data, robust="template")
    shutil.copyfile(REPO / "tasks/consistency/templates.yaml", tpl)
    # a new test split (one reference changed): every family refuses the old rows ...
    test = data / "test.jsonl"
    rows = [json.loads(line) for line in test.read_text().splitlines()]
    for r in rows:
        if r["group_id"] == rows[0]["group_id"]:
            r["reference"] += " Really."
    test.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    for family in ROBUST_TYPES:
        with pytest.raises(DataVersionError, match="build-robust"):
            task_records(data_dir=data, robust=family)
    # ... until the one command is rerun
    assert main(["data", "build-robust", "--test", str(test), "-o", str(data / "robust")]) == 0
    recs = task_records(data_dir=data, robust="surface")
    assert any(r["reference"].endswith("Really.") for r in recs)


def test_build_refuses_to_write_rows_that_break_the_audit(small_task_dir, monkeypatch):
    from consistbench.benchmark import robustbuild
    from consistbench.benchmark.errors import ConsistbenchError
    from consistbench.benchmark.variants import surface

    out = small_task_dir / "data/robust"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(surface, "surface_variant",
                        lambda q, seed=0: surface.Surface(q.replace("e", "3", 1) + "!", ("lowercase",), seed))
    with pytest.raises(ConsistbenchError, match="break the audit.*surface_rule.*nothing was written"):
        robustbuild.build_robust(test_path=small_task_dir / "data/test.jsonl", out_dir=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ---------------------------------------------------------------------------------------------
# lm-eval runs on a tiny model

@pytest.fixture(scope="module")
def robust_run(wide_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("robust-run")
    res = run_eval(EvalOptions(model_args=f"pretrained={wide_llama_dir},dtype=float32", output_path=str(out),
                               tasks=("consistency_robust_mini",), batch_size=16, gen_kwargs=f"max_gen_toks={GEN_TOKS}"))
    return out, res


def _samples(out: Path, task: str) -> list[dict]:
    files = glob.glob(str(out / "**" / f"samples_{task}_2*.jsonl"), recursive=True)
    assert len(files) == 1, files
    return [json.loads(line) for line in open(files[0])]


def _expected_rows(family: str) -> int:
    return sum(1 for r in load_data(DATA / f"robust/{family}.jsonl") if r.group_id in MINI)


def test_every_family_is_scored_with_intervals_and_charted(robust_run):
    out, res = robust_run
    results = res["results"]
    assert set(results["results"]) == set(TASKS.values())
    for family, task in TASKS.items():
        assert results["n-samples"][task]["effective"] == _expected_rows(family)
        m = task_metrics(results, task)
        for name in ("em", "rs", "bs", "rougeL", "bleu"):
            assert 0.0 <= m[name] <= 1.0, (task, name, m)
        assert m["bs"] < 1.0  # the answers depend on the prompt
        iv = results["consistbench"]["intervals"][task]["metrics"]
        for name in ("em", "rs", "bs"):
            assert iv[name]["low"] <= m[name] <= iv[name]["high"]
        assert isinstance(results["results"][task]["em_stderr,none"], float)
    names = {Path(f).name for f in res["files"]}
    assert "report_consistency_robust_mini.png" in names
    assert not any(n.startswith("report_consistency_typo") for n in names)  # one chart for the families


def test_consistency_pairs_each_original_with_its_family_variant(robust_run):
    out, res = robust_run
    for family, task in TASKS.items():
        by_group: dict[str, dict] = defaultdict(dict)
        for s in _samples(out, task):
            by_group[s["doc"]["group_id"]][s["doc"]["variant_type"]] = s["filtered_resps"][0]
        pairs = [(g["original"], g[family]) for g in by_group.values()]
        assert len(pairs) == _expected_rows(family) // 2
        em = sum(a.strip() == b.strip() for a, b in pairs) / len(pairs)
        assert task_metrics(res["results"], task)["em"] == pytest.approx(em)


def test_template_task_shows_the_model_each_template_and_the_preamble_as_system_message(robust_run):
    out, _ = robust_run
    templates = {t.id: t for t in load_templates(REPO / "tasks/consistency/templates.yaml")}
    seen = set()
    for s in _samples(out, TASKS["template"]):
        doc, prompt = s["doc"], s["arguments"]["gen_args_0"]["arg_0"]
        tid = doc["template_id"]
        seen.add(tid)
        assert doc["question"].strip() in prompt and doc["context"].strip() in prompt
        user = prompt.split("<|im_start|>user\n", 1)[1]
        if doc["variant_type"] == "original":
            assert tid == "default" and doc["prompt_template"] == "" and doc["system"] == ""
            assert user.startswith("Answer the question using only the context.")
            # no preamble: the model's own default system prompt (SmolLM2's chat template)
            assert "<|im_start|>system\nYou are a helpful AI assistant named SmolLM" in prompt
            continue
        tpl = templates[tid]
        assert user.startswith(tpl.render(doc["context"], doc["question"]))
        if tpl.system:  # the preamble is the system message, in place of the model's default
            assert prompt.startswith(f"<|im_start|>system\n{tpl.system}")
            assert "SmolLM" not in prompt
        else:
            assert "named SmolLM" in prompt
    assert seen >= {"default", "system_preamble"}


def test_shared_prompts_are_generated_once(robust_run):
    out, res = robust_run
    prompts = [s["arguments"]["gen_args_0"]["arg_0"] for task in TASKS.values() for s in _samples(out, task)]
    assert res["dedup"] == {"requested": len(prompts), "generated": len(set(prompts))}
    assert len(set(prompts)) < len(prompts)  # the originals' default prompt is shared by the three tasks


# ---------------------------------------------------------------------------------------------
# A user's own templates

USER_TEMPLATES = """templates:
  - id: mine_plain
    template: "ZQX-PLAIN {question}\\n\\n{context}\\nAnswer:"
  - id: mine_system
    system: "ZQX-SYSTEM preamble."
    template: "{instruction}\\n{context}\\nZQX-Q {question}\\nAnswer:"
"""


def test_user_templates_reach_the_task_and_the_results_json(wide_llama_dir, tmp_path, capsys):
    path = tmp_path / "my_templates.yaml"
    path.write_text(USER_TEMPLATES)
    out = tmp_path / "out"
    assert main(["eval", "--tasks", "consistency_template_mini", "--templates", str(path), "-o", str(out),
                 "--model-args", f"pretrained={wide_llama_dir},dtype=float32", "--batch-size", "16",
                 "--gen-kwargs", f"max_gen_toks={GEN_TOKS}", "--n-resamples", "50"]) == 0
    results = json.loads(Path(glob.glob(str(out / "**" / "results_*.json"), recursive=True)[0]).read_text())
    assert results["configs"]["consistency_template_mini"]["metadata"]["templates_file"] == str(path.resolve())
    recorded = results["consistbench"]["templates"]
    assert recorded["file"] == str(path.resolve()) and recorded["ids"] == ["mine_plain", "mine_system"]
    assert len(recorded["sha256"]) == 64
    used = defaultdict(int)
    for s in _samples(out, "consistency_template_mini"):
        doc, prompt = s["doc"], s["arguments"]["gen_args_0"]["arg_0"]
        if doc["variant_type"] == "original":
            assert "ZQX" not in prompt
            continue
        used[doc["template_id"]] += 1
        if doc["template_id"] == "mine_plain":
            assert f"ZQX-PLAIN {doc['question'].strip()}" in prompt and "named SmolLM" in prompt
        else:
            assert prompt.startswith("<|im_start|>system\nZQX-SYSTEM preamble.") and "ZQX-Q " in prompt
    assert set(used) == {"mine_plain", "mine_system"} and abs(used["mine_plain"] - used["mine_system"]) <= 1


@pytest.mark.parametrize("case", ["bad_file", "no_template_task", "missing_file"])
def test_bad_templates_option_exits_2_before_any_model(case, tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text("templates:\n  - id: x\n    template: 'no fields at all'\n")
    tasks = "consistency_template_mini"
    if case == "no_template_task":
        path.write_text(USER_TEMPLATES)
        tasks = "consistency_typo_mini"
    elif case == "missing_file":
        path = tmp_path / "nowhere.yaml"
    out = tmp_path / "out"
    rc = main(["eval", "--tasks", tasks, "--templates", str(path), "-o", str(out),
               "--model-args", f"pretrained={tmp_path / 'no-model-needed'}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("consistbench: error: ") and err.count("\n") == 1, err
    assert {"bad_file": "needs exactly one {context}", "no_template_task": "--templates applies to",
            "missing_file": "no such template file"}[case] in err
    assert not out.exists() or not glob.glob(str(out / "**" / "results_*.json"), recursive=True)
