"""Weighing and merging, the units of work several stages share: the similarity matrices of one
seed's specialised models (in this process or under the launcher, :mod:`.similarities`), their
consistency weights with given options, and the merge configs (the consistency merge and the null
merges it is read against).
"""

from __future__ import annotations

import json
from pathlib import Path

from consistbench.reference_method.consistency_weights import DEFAULT_DEV, compute_weights, write_weights
from consistbench.reference_method.merge.config import MergeConfig, null_merge_config
from consistbench.reference_method.reproduce import similarities as sims_mod
from consistbench.reference_method.reproduce.presets import SPECIALISED
from consistbench.reference_method.reproduce.run_folder import Run
from consistbench.reference_method.weights_file import WeightsOptions, options_from, spread_summary

SIMILARITIES_MODULE = "consistbench.reference_method.reproduce.similarities"


def similarities_argv(run: Run, seed: int, out: Path) -> list[str]:
    """The worker's arguments (after ``-m``) for one seed's specialised models."""
    argv = [SIMILARITIES_MODULE, "--base", str(run.base_model())]
    for m in run.specialised(seed):
        argv += ["--model", str(m)]
    options = {k: v for k, v in run.preset.weights.items() if k != "temperature"}
    argv += ["--dev", str(DEFAULT_DEV), "--options", json.dumps(options, sort_keys=True),
             "--dtype", run.preset.weights_dtype, "-o", str(out)]
    return argv + (["--device", run.preset.weights_device] if run.preset.weights_device else [])


def similarities(run: Run, seed: int | None = None) -> Path:
    """``weights/similarities.npz`` (``@sN`` per seed): the matrices every weights file of the seed is
    computed from (made once; a temperature or distance changes no forward pass)."""
    seed = run.preset.seeds[0] if seed is None else seed
    out = run.seed_file(run.similarities_file, seed)
    if out.is_file():
        return out
    argv = similarities_argv(run, seed, out)
    if run.launcher.active:
        run.timed(f"similarities{_suffix(run, seed)}", lambda: run.launch(argv, module=True))
    else:
        options = options_from(**{k: v for k, v in run.preset.weights.items() if k != "temperature"})
        run.timed(f"similarities{_suffix(run, seed)}",
                  lambda: sims_mod.collect(run.base_model(), run.specialised(seed), options, out,
                                           device=run.preset.weights_device, dtype=run.preset.weights_dtype,
                                           log=run.log))
    return out


def _suffix(run: Run, seed: int) -> str:
    return "" if seed == run.preset.seeds[0] else f"@s{seed}"


def weights_options(run: Run, **override) -> WeightsOptions:
    """The preset's weights options with ``override`` (a temperature, a distance)."""
    return options_from(**{**run.preset.weights, **override})


def specialised_weights(run: Run, options: WeightsOptions, out: Path, key: str, seed: int | None = None) -> dict:
    """The consistency weights of one seed's specialised models, from its similarity matrices, written to
    ``out`` (+ its heatmap)."""
    sims = similarities(run, seed)
    doc = compute_weights(run.base_model(), run.specialised(seed), DEFAULT_DEV, options, labels=list(SPECIALISED),
                          similarities_in=sims)
    write_weights(doc, out, out.with_suffix(".png"))
    run.log(f"[{key}] {spread_summary(doc)}")
    return doc


def merge_config(run: Run, weights_file: Path, seed: int | None = None):
    """The MergeConfig of the consistency merge of one seed's specialised models with ``weights_file``."""
    return MergeConfig.from_dict({
        "method": "consistency", "base": str(run.base_model()),
        "models": [{"path": str(p), "name": t} for p, t in zip(run.specialised(seed), SPECIALISED)],
        "parameters": {"weights_file": str(weights_file), **run.preset.merge},
    }, where=f"preset {run.preset.name} merge")


def null_config(run: Run, kind: str, seed: int | None = None, scale: float | None = None):
    """A null merge of one seed's specialised models: ``uniform`` (their average) or ``task_arithmetic``
    (``theta_base + scale * sum_k delta_k``)."""
    method = "linear" if kind == "uniform" else kind
    return null_merge_config(run.base_model(), run.specialised(seed), method, scale, names=list(SPECIALISED))
