"""Evaluation, the unit of work several stages share: one model on one task through lm-eval, in this
process (:func:`consistbench.benchmark.evaluate.run_eval`) or as ``consistbench eval`` under the
launcher (data parallel: each process generates part of the rows, lm-eval gathers them).

Which lm-eval model runs it is the preset's ``eval_model``: ``default`` is consistbench's float32
transformers model (the canonical numerics of every CPU study); ``auto`` is lm-eval's ``vllm``
model when vllm is installed (one process: vLLM manages its GPUs itself), else lm-eval's ``hf``
model, in ``eval_dtype`` (bf16 in the ``paper`` preset). An evaluation whose results exist is not
run again. ``eval_groups`` scores a fixed, stratified subset of whole test groups (in this process).
"""

from __future__ import annotations

import importlib.util
import random
from collections import defaultdict
from pathlib import Path

from consistbench.benchmark import evaluate
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.taskdata import task_records
from consistbench.reference_method.reproduce.launch import executable
from consistbench.reference_method.reproduce.run_folder import Run, results_file

SUBSET_TASKS = ("consistency",)  # the tasks eval_groups may subset (the whole test split)


def eval_model(run: Run) -> str | None:
    """The lm-eval model name of the preset's ``eval_model`` (None: consistbench's default)."""
    if run.preset.eval_model == "default":
        return None
    if run.preset.eval_model != "auto":
        raise ConsistbenchError(f"preset {run.preset.name}: eval_model {run.preset.eval_model!r} "
                                "(expected default or auto)")
    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


def eval_options(run: Run, path: Path, folder: Path, task: str) -> evaluate.EvalOptions:
    """The options of one evaluation (the test task gets the preset's subset, a dev task never does)."""
    model = eval_model(run)
    samples = test_samples(run, task) if task == run.preset.task else None
    device = None if model == "vllm" else run.eval_device()
    return evaluate.EvalOptions(model=model, model_args=f"pretrained={path},dtype={run.preset.eval_dtype}",
                                tasks=(task,), output_path=str(folder), batch_size=run.preset.eval_batch_size,
                                device=device, samples=samples)


def eval_argv(opts: evaluate.EvalOptions) -> list[str]:
    """``consistbench eval ...`` with the same options (what runs under the launcher)."""
    argv = [executable("consistbench"), "eval", "--model-args", opts.model_args, "--tasks", ",".join(opts.tasks),
            "-o", opts.output_path, "--batch-size", str(opts.batch_size)]
    if opts.model:
        argv += ["--model", opts.model]
    return argv + (["--device", opts.device] if opts.device else [])


def launched(run: Run, opts: evaluate.EvalOptions) -> bool:
    """Whether this evaluation runs under the launcher (data parallel): not vLLM's, not a subset."""
    return run.launcher.active and opts.model != "vllm" and not opts.samples


def evaluate_model(run: Run, key: str, path: Path, folder: Path, task: str) -> None:
    """One model on one task (skipped when its results exist)."""
    if results_file(folder):
        run.log(f"[{key}] {folder} exists: skipped")
        return
    opts = eval_options(run, path, folder, task)
    run.log(f"[{key}] {path} on {task}")
    if launched(run, opts):
        run.timed(key, lambda: run.launch(eval_argv(opts)))
    else:
        run.timed(key, lambda: evaluate.run_eval(opts))
    if not results_file(folder):
        raise ConsistbenchError(f"[{key}] no results written under {folder}")


def test_samples(run: Run, task: str) -> dict[str, list[int]] | None:
    """lm-eval's ``samples`` for the preset's ``eval_groups`` (None: the whole task)."""
    n = run.preset.eval_groups
    if n is None:
        return None
    if task not in SUBSET_TASKS:
        raise ConsistbenchError(f"preset {run.preset.name}: eval_groups subsets the whole test split "
                                f"({', '.join(SUBSET_TASKS)}), not {task}")
    records = task_records(subset="all", split="test")
    groups = stratified_groups(records, n, seed=0)
    return {task: [i for i, r in enumerate(records) if r["group_id"] in groups]}


def stratified_groups(records: list[dict], n: int, seed: int = 0) -> set[str]:
    """``n`` whole groups, drawn with ``seed`` within strata of groups that have the same variant types,
    each stratum in proportion to its size (largest remainders)."""
    types: dict[str, set[str]] = defaultdict(set)
    for r in records:
        types[r["group_id"]].add(r["variant_type"])
    if n > len(types):
        raise ConsistbenchError(f"eval_groups {n}: the task has {len(types)} groups")
    strata: dict[tuple, list[str]] = defaultdict(list)
    for g in sorted(types):
        strata[tuple(sorted(types[g]))].append(g)
    quota = {k: n * len(v) / len(types) for k, v in strata.items()}
    take = {k: int(q) for k, q in quota.items()}
    for k in sorted(quota, key=lambda k: (take[k] - quota[k], k))[:n - sum(take.values())]:
        take[k] += 1
    rng = random.Random(seed)
    return {g for k in sorted(strata) for g in rng.sample(strata[k], take[k])}
