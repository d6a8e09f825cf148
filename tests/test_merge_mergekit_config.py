"""A mergekit configuration given to ``consistbench merge`` unchanged: mapped onto ours where the
methods agree (the same tensors as mergekit's own run, pico Llama models), refused with one line
naming the key otherwise; and a killed merge's leftovers removed by the next merge."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import TMP_MARKER, mark_tmp_owner
from consistbench.reference_method.merge import MergeConfig, merge
from consistbench.reference_method.merge.engine import MERGE_COMMAND
from consistbench.reference_method.merge.mergekit_config import from_mergekit, is_mergekit, load_merge_config
from tests.merge_fixtures import assert_close, config, no_leftovers
from tests.pico_models import load_state

pytest_plugins = ["tests.merge_fixtures"]  # the pico models, built once per session


def _mk(pico, method: str, per_model: list[dict], parameters: dict | None = None, **top) -> dict:
    doc = {"merge_method": method, "base_model": str(pico["base"]),
           "models": [{"model": str(pico[f"ft{i + 1}"]), "parameters": dict(p)} for i, p in enumerate(per_model)]}
    if parameters is not None:
        doc["parameters"] = parameters
    return {**doc, "dtype": "float32", **top}


def _run_mergekit(doc: dict, out: Path) -> dict:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(doc), str(out), MergeOptions(write_model_card=False, quiet=True))
    return load_state(out)


# ---------------------------------------------------------------------------------------------
# the same tensors as mergekit

def _no_base(pico, *args):
    doc = _mk(pico, *args)
    del doc["base_model"]
    return doc


CASES = {
    "linear": (_no_base, "linear", [{"weight": 0.2}, {"weight": 0.5}, {"weight": 0.3}], {"normalize": True}),
    "linear_with_base": (_mk, "linear", [{"weight": 0.6}, {"weight": -0.2}, {"weight": 0.3}],
                         {"normalize": False, "weight": 0.25}),
    "task_arithmetic": (_mk, "task_arithmetic", [{"weight": 0.3}, {"weight": 0.5}, {"weight": -0.2}], None),
    "task_arithmetic_lambda_normalize": (_mk, "task_arithmetic", [{"weight": 0.3}, {"weight": 0.5}, {"weight": 0.7}],
                                         {"normalize": True, "lambda": 0.8}),
    "ties": (_mk, "ties", [{"weight": 1.0, "density": 0.5}] * 3, None),
    "ties_global_density": (_mk, "ties", [{"weight": 1}] * 3, {"density": 0.7, "int8_mask": True}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_mergekit_config_merges_to_mergekits_tensors(pico, tmp_path, case):
    build, method, per_model, params = CASES[case]
    doc = build(pico, method, per_model, params)
    theirs = _run_mergekit(doc, tmp_path / "mk")
    path = tmp_path / "mk.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["merge", str(path), "-o", str(tmp_path / "ours"), "--quiet"]) == 0
    assert_close(load_state(tmp_path / "ours"), theirs, atol=1e-6)
    written = yaml.safe_load((tmp_path / "ours" / "merge_config.yaml").read_text())
    assert written["method"] == method  # the folder records the merge in our format


def test_the_cli_says_it_read_a_mergekit_config_and_round_trips_the_export(pico, tmp_path, capsys):
    doc = _mk(pico, "task_arithmetic", [{"weight": 0.3}, {"weight": 0.5}, {"weight": -0.2}])
    path = tmp_path / "mk.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["merge", str(path), "--export-mergekit", str(tmp_path / "back.yaml")]) == 0
    assert "mergekit configuration, merged as consistbench task_arithmetic" in capsys.readouterr().out
    back = yaml.safe_load((tmp_path / "back.yaml").read_text())
    assert back["merge_method"] == "task_arithmetic"
    assert [m["parameters"]["weight"] for m in back["models"]] == [0.3, 0.5, -0.2]


def test_relative_paths_resolve_against_the_current_folder_like_mergekit(pico, tmp_path, monkeypatch):
    monkeypatch.chdir(pico["base"].parent)
    doc = {"merge_method": "task_arithmetic", "base_model": pico["base"].name,
           "models": [{"model": pico[m].name, "parameters": {"weight": 1.0}} for m in ("ft1", "ft2")]}
    cfg, _ = from_mergekit(doc)
    assert cfg.base == str(pico["base"].resolve())
    assert [m.path for m in cfg.models] == [str(pico["ft1"].resolve()), str(pico["ft2"].resolve())]


def test_the_mapping_folds_normalize_and_lambda_into_task_arithmetic_weights(pico):
    cfg, _ = from_mergekit(_mk(pico, "task_arithmetic", [{"weight": 1.0}, {"weight": 3.0}, {"weight": 0.0}],
                               {"normalize": True, "lambda": 2.0}))
    assert [m.weight for m in cfg.models] == pytest.approx([0.5, 1.5, 0.0])


def test_a_base_listed_among_the_models_is_the_base_for_task_arithmetic(pico):
    doc = _mk(pico, "task_arithmetic", [{"weight": 0.5}, {"weight": 0.5}])
    doc["models"].append({"model": str(pico["base"])})
    cfg, _ = from_mergekit(doc)
    assert [Path(m.path).name for m in cfg.models] == ["ft1", "ft2"]


def test_dare_is_mapped_with_a_note_that_the_numbers_differ(pico):
    cfg, notes = from_mergekit(_mk(pico, "dare_linear", [{"weight": 0.5, "density": 0.3}] * 3))
    assert cfg.method == "dare_linear" and cfg.parameters["density"] == 0.3
    assert any("not the same tensors" in n for n in notes)


def test_format_detection(pico, tmp_path):
    ours = config(pico, "linear")
    (tmp_path / "ours.yaml").write_text(ours.to_yaml())
    cfg, notes = load_merge_config(tmp_path / "ours.yaml")
    assert cfg.method == "linear" and notes == []
    assert is_mergekit({"merge_method": "linear"}) and not is_mergekit({"method": "linear"})


# ---------------------------------------------------------------------------------------------
# refusals: one line naming the key

REFUSALS = [
    ({"slices": [{"sources": []}]}, "slices: layer ranges"),
    ({"modules": {}}, "modules:"),
    ({"tokenizer_source": "union"}, "tokenizer_source: 'union'"),
    ({"tokenizer": {"source": "union"}}, "tokenizer: tokenizer merging"),
    ({"chat_template": "chatml"}, "chat_template:"),
    ({"merge_method": "slerp"}, "merge_method: 'slerp' is not a method consistbench has"),
    ({"parameters": {"gamma": 0.1}}, "parameters.gamma: not a parameter"),
    ({"parameters": {"density": [0.2, 0.8]}}, "parameters.density: a gradient"),
    ({"parameters": {"density": [{"filter": "mlp", "value": 0.5}]}}, "parameters.density: a gradient"),
    ({"parameters": {"normalize": "yes"}}, "parameters.normalize: expected true or false"),
    ({"models[0].weight": 0.5}, "models[0].parameters.weight: 0.5"),
    ({"models[1].density": 0.9}, "parameters.density: one density"),
    ({"models[0].normalize": True}, "models[0].parameters.normalize: a merge-wide parameter"),
    ({"models[0].lora": "x"}, "models[0].model: 'PATH+x': a LoRA reference"),
    ({"models[0].hub": True}, "models[0].model: 'org/model' is not a local folder"),
    ({"parameters": {"rescale": True}}, "parameters.rescale: ties with rescale"),
    ({"parameters": {"normalize": False}}, "parameters.normalize: ties without normalize"),
    ({"out_dtype": "int8"}, "out_dtype: 'int8'"),
    ({"frobnicate": 1}, "frobnicate: unknown mergekit key"),
]


@pytest.mark.parametrize("change,needle", REFUSALS, ids=[r[1].split(":")[0] for r in REFUSALS])
def test_unsupported_mergekit_configs_are_refused_naming_the_key(pico, tmp_path, capsys, change, needle):
    doc = _mk(pico, "ties", [{"weight": 1.0, "density": 0.5}] * 3)
    for key, value in change.items():
        if key.startswith("models[0].lora"):
            doc["models"][0]["model"] += "+x"
            needle = needle.replace("PATH", str(pico["ft1"]))
        elif key == "models[0].hub":
            doc["models"][0]["model"] = "org/model"
        elif key.startswith("models["):
            i, name = int(key[7]), key.split(".", 1)[1]
            doc["models"][i]["parameters"][name] = value
        else:
            doc[key] = value
    with pytest.raises(ConsistbenchError, match=None) as exc:
        from_mergekit(doc, where="mk.yaml")
    assert needle in str(exc.value) and "\n" not in str(exc.value)
    path = tmp_path / "mk.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["merge", str(path), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_task_arithmetic_without_a_base_model_is_refused(pico):
    doc = _mk(pico, "task_arithmetic", [{"weight": 1.0}] * 2)
    del doc["base_model"]
    with pytest.raises(ConsistbenchError, match="base_model: task_arithmetic needs a base_model"):
        from_mergekit(doc)


def test_a_missing_weight_is_refused(pico):
    with pytest.raises(ConsistbenchError, match=r"models\[1\].parameters.weight: missing"):
        from_mergekit(_no_base(pico, "linear", [{"weight": 1.0}, {}]))
    with pytest.raises(ConsistbenchError, match=r"base_model: mergekit's linear merges the base model too"):
        from_mergekit(_mk(pico, "linear", [{"weight": 1.0}] * 2))


# ---------------------------------------------------------------------------------------------
# a killed merge's temporary folder

def _fake_tmp(parent: Path, name: str, tag: str, owner: dict | None) -> Path:
    tmp = parent / f".{name}.{tag}.tmp"
    tmp.mkdir(parents=True)
    (tmp / "model.safetensors").write_bytes(b"partial")
    if owner is not None:
        (tmp / TMP_MARKER).write_text(json.dumps(owner))
    return tmp


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_merge_removes_a_killed_merges_tmp_folder_and_says_so(pico, tmp_path, capsys):
    me = {"host": socket.gethostname(), "command": MERGE_COMMAND}
    stale = _fake_tmp(tmp_path, "out", "dead", {**me, "pid": _dead_pid(), "start": None})
    live = _fake_tmp(tmp_path, "out", "live", {**me, "pid": os.getpid(), "start": None})
    unmarked = _fake_tmp(tmp_path, "out", "nomarker", None)
    other_host = _fake_tmp(tmp_path, "out", "elsewhere", {**me, "host": "not-" + me["host"], "pid": _dead_pid()})
    other_cmd = _fake_tmp(tmp_path, "out", "othercmd", {**me, "command": "something else", "pid": _dead_pid()})
    other_out = _fake_tmp(tmp_path, "out2", "dead", {**me, "pid": _dead_pid(), "start": None})
    path = tmp_path / "m.yaml"
    path.write_text(config(pico, "linear").to_yaml())
    assert main(["merge", str(path), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"removed {stale}, left by an interrupted merge" in out
    assert not stale.exists()
    for kept in (live, unmarked, other_host, other_cmd, other_out):
        assert kept.exists(), kept
    assert not (tmp_path / "out" / TMP_MARKER).exists()  # the marker never reaches the output


def test_a_reused_pid_with_another_start_time_counts_as_dead(pico, tmp_path):
    me = {"host": socket.gethostname(), "command": MERGE_COMMAND}
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        pytest.skip("needs /proc")
    reused = _fake_tmp(tmp_path, "out", "reused", {**me, "pid": os.getpid(), "start": "1"})
    summary = merge(config(pico, "linear"), tmp_path / "out")
    assert summary["removed_stale"] == [str(reused)] and not reused.exists()


def test_a_merge_in_progress_has_a_marker_and_a_failed_one_leaves_nothing(pico, tmp_path):
    cfg = MergeConfig.from_dict({**config(pico, "linear").model_dump(), "models": [
        {"path": str(pico["ft1"]), "weight": 1.0}, {"path": str(pico["ft2"]), "weight": -1.0}]})
    with pytest.raises(ConsistbenchError, match="sum to 0"):
        merge(cfg, tmp_path / "out")
    no_leftovers(tmp_path, "out")
    marker = mark_tmp_owner(tmp_path, MERGE_COMMAND)
    owner = json.loads(marker.read_text())
    assert owner["pid"] == os.getpid() and owner["command"] == MERGE_COMMAND


def test_dtypes_and_the_base_tokenizer_are_mapped(pico):
    cfg, notes = from_mergekit(_mk(pico, "task_arithmetic", [{"weight": 0.5}] * 3, dtype="bfloat16",
                                   tokenizer_source="base"))
    assert cfg.dtype == "bfloat16" and any("computed in float32 (mergekit computes in bfloat16)" in n for n in notes)
    cfg, notes = from_mergekit(_mk(pico, "task_arithmetic", [{"weight": 0.5}] * 3, out_dtype="float16"))
    assert cfg.dtype == "float16" and not any("computed in" in n for n in notes)
    doc = _mk(pico, "task_arithmetic", [{"weight": 0.5}] * 3)
    del doc["dtype"]
    assert from_mergekit(doc)[0].dtype == "auto"
