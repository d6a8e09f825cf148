"""The package as users install it: one ``consistbench`` namespace, everything the tasks need inside
the wheel, imports in one direction, and private library APIs only behind version checks."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SITE = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_benchmark_is_the_core_and_imports_no_other_package():
    for path in sorted((ROOT / "benchmark").rglob("*.py")):
        bad = {m for m in _imports(path) if m.startswith(("consistbench.tasks", "consistbench.leaderboard",
                                                            "consistbench.reference_method"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_only_the_lm_eval_glue_imports_the_tasks_package():
    for folder in ("leaderboard", "reference_method"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            bad = {m for m in _imports(path) if m.startswith("consistbench.tasks")}
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: share it through benchmark/"


def test_no_module_uses_the_old_top_level_names():
    for folder in ("benchmark", "tasks", "reference_method", "leaderboard", "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            bad = {m for m in _imports(path) if m.split(".")[0] in ("benchmark", "tasks", "reference_method",
                                                                    "leaderboard")}
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_merge_registry_imports_none_of_the_methods():
    registry = _imports(ROOT / "reference_method" / "merge" / "registry.py")
    methods = {"consistbench.reference_method.merge." + m for m in ("methods", "consistency", "catalog")}
    assert not registry & methods
    init = _imports(ROOT / "reference_method" / "merge" / "__init__.py")
    assert not {m for m in init if m.startswith("consistbench.reference_method")}


def test_private_api_bounds_match_pyproject():
    from packaging.requirements import Requirement

    from consistbench.benchmark.compat import SUPPORTED

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = {Requirement(d).name.replace("_", "-").lower(): Requirement(d) for d in deps}
    for dist, (spec, _) in SUPPORTED.items():
        assert dist in reqs, dist
        assert str(reqs[dist].specifier) == str(type(reqs[dist].specifier)(spec)), (dist, reqs[dist].specifier, spec)
        assert any(s.operator == "<" for s in reqs[dist].specifier), f"{dist} needs an upper bound"


def test_unsupported_library_version_fails_with_one_clear_line(monkeypatch):
    from consistbench.benchmark import compat
    from consistbench.benchmark.errors import ConsistbenchError

    compat.require.cache_clear()
    monkeypatch.setattr(compat.metadata, "version", lambda dist: "9.9.9")
    try:
        with pytest.raises(ConsistbenchError, match=r"trl 9\.9\.9 is installed, but consistbench supports trl>=1\.16"):
            compat.require("trl")
        with pytest.raises(ConsistbenchError, match="rouge-score 9.9.9"):
            compat.rouge_lcs(["a"], ["a"])
    finally:
        monkeypatch.undo()
        compat.require.cache_clear()
    assert compat.rouge_lcs(["a", "b"], ["a", "b"]).fmeasure == 1.0


@pytest.mark.slow
def test_wheel_installs_alone_and_runs(tmp_path):
    """Build the wheel from the tracked files, install it into a fresh virtualenv that cannot see the
    source tree, and run the CLI, lm-eval's validator and the scorer there."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    src = tmp_path / "src"
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(src)], check=True, capture_output=True, timeout=600)
    wheel = next(wheels.glob("consistbench-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # the new venv borrows the dependencies (not consistbench) from this one: a .pth line adds the
    # site-packages folder, whose own .pth files (the editable install's finder) are not processed
    new_site = next((venv / "lib").glob("python3*/site-packages"))
    (new_site / "_deps.pth").write_text(SITE + "\n")
    vbin = venv / "bin"
    subprocess.run([str(vbin / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PATH=f"{vbin}{os.pathsep}{env.get('PATH', '')}")

    def run(*cmd, **kw):
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900, **kw)
        assert proc.returncode == 0, (cmd, proc.stdout[-2000:], proc.stderr[-3000:])
        return proc.stdout

    where = run(str(vbin / "python"), "-c", "import consistbench.benchmark as b; print(b.__file__)").strip()
    assert where.startswith(str(venv)), where
    for name in ("tasks", "benchmark", "leaderboard", "reference_method"):
        proc = subprocess.run([str(vbin / "python"), "-c", f"import {name}"], cwd=work, env=env,
                              capture_output=True, text=True)
        assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr, name
    assert "leaderboard" in run(str(vbin / "consistbench"), "--help")
    tasks = run(str(vbin / "consistbench"), "tasks-path").strip()
    assert tasks.startswith(str(venv))
    for needed in ("consistency/_default_template_yaml", "consistency/_all_metrics_yaml", "consistency/data/mini_groups.txt",
                   "consistency/data/LICENSE-PSF.txt", "consistency/data/retrieval/manifest.json"):
        assert (Path(tasks) / needed).is_file(), needed
    assert list((Path(tasks) / "consistency/data/retrieval").glob("*.jsonl.gz"))
    out = run(str(vbin / "python"), "-m", "lm_eval", "validate", "--tasks", "consistency_mini", "--include_path", tasks)
    assert "All tasks found" in out
    example = Path(tasks) / "consistency/examples/responses_smollm2_mini.jsonl"
    run(str(vbin / "consistbench"), "score", str(example), "--json", "result.json", "--n-resamples", "100")
    result = json.loads((work / "result.json").read_text())
    assert {"metrics", "intervals", "settings", "counts", "data_version"} <= set(result)
    assert {"rougeL", "bleu", "em", "rs", "bs", "em_how_to"} <= set(result["metrics"])
    assert result["settings"]["rs_threshold"] == 0.8 and result["settings"]["bootstrap"]["n_resamples"] == 100
