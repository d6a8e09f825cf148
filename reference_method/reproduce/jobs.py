"""The units of work that several stages share: configure and train one model, evaluate one
model on one task, compute one weights file, configure the consistency merge.

Each is resumable like the stages: training continues from the model's last checkpoint, an
evaluation whose results exist is not run again.
"""

from __future__ import annotations

from pathlib import Path

from consistbench.benchmark import evaluate
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.consistency_weights import DEFAULT_DEV, compute_weights, write_weights
from consistbench.reference_method.merge.config import MergeConfig
from consistbench.reference_method.reproduce.presets import SPECIALISED, TRIPLET_ONLY_KEYS
from consistbench.reference_method.reproduce.run_folder import Run, results_file, trained
from consistbench.reference_method.triplets import MiningConfig
from consistbench.reference_method.weights_file import WeightsOptions, spread_summary


def train_config(run: Run, alpha: float, extra: dict | None = None):
    """A ConsistencyConfig from the preset's ``train`` fields, ``extra`` and ``alpha``."""
    from consistbench.reference_method.consistency_config import ConsistencyConfig

    fields = dict(run.preset.train, **(extra or {}))
    fields.update(alpha=alpha, disable_tqdm=not run.progress)
    try:
        return ConsistencyConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise ConsistbenchError(f"preset {run.preset.name}: bad training setting ({exc})") from None


def run_config(run: Run, name: str, alpha: float, setting: dict | None = None):
    """The ConsistencyConfig of one training run: the preset's ``train``, then the search's chosen
    ``setting`` (its alpha only for SFT + triplet models), then the ``sft`` row's own fields."""
    setting = dict(setting or {})
    chosen_alpha = setting.pop("alpha", None)
    if alpha > 0 and chosen_alpha is not None:
        alpha = chosen_alpha
    if alpha == 0:  # no triplet term: its margin and pooling layer change nothing, so they are not set
        for key in TRIPLET_ONLY_KEYS:
            setting.pop(key, None)
    extra = dict(setting)
    if name == "sft":
        extra.update(examples=run.preset.sft_examples, **run.preset.sft_train)
    return train_config(run, alpha, extra)


def train_model(run: Run, key: str, out: Path, vtype: str, config) -> None:
    """Train one model into ``out`` (resuming from its checkpoints when there are some)."""
    from consistbench.reference_method import train as train_mod

    ckpts = out.with_name(out.name + ".checkpoints")
    resume = train_mod.latest_checkpoint(ckpts) is not None
    run.log(f"[{key}] variant type {vtype}, alpha {config.alpha}, {config.examples}"
            + (" (resuming)" if resume else ""))
    data = run.train_all_file if vtype == "all" else run.train_file
    run.timed(key, lambda: train_mod.train(run.base_model(), data, vtype, out, config,
                                           MiningConfig(**run.preset.mining), resume=resume, log=run.log))
    if not trained(out):
        raise ConsistbenchError(f"[{key}] stopped before the end; run again to resume")


def evaluate_model(run: Run, key: str, path: Path, folder: Path, task: str) -> None:
    """lm-eval on one task through the default generation backend (skipped when results exist)."""
    if results_file(folder):
        run.log(f"[{key}] {folder} exists: skipped")
        return
    opts = evaluate.EvalOptions(model_args=f"pretrained={path},dtype=float32", tasks=(task,),
                                output_path=str(folder), batch_size=run.preset.eval_batch_size,
                                device=run.eval_device())
    run.log(f"[{key}] {path} on {task}")
    run.timed(key, lambda: evaluate.run_eval(opts))


def specialised_weights(run: Run, options: WeightsOptions, out: Path, key: str, **kwargs) -> dict:
    """The consistency weights of the specialised models on the dev queries, written to ``out``
    (+ its heatmap); ``kwargs`` go to :func:`~consistbench.reference_method.consistency_weights.compute_weights`."""
    doc = compute_weights(run.base_model(), run.specialised(), DEFAULT_DEV, options, labels=list(SPECIALISED), **kwargs)
    write_weights(doc, out, out.with_suffix(".png"))
    run.log(f"[{key}] {spread_summary(doc)}")
    return doc


def merge_config(run: Run, weights_file: Path):
    """The MergeConfig of the consistency merge of the specialised models with ``weights_file``."""
    return MergeConfig.from_dict({
        "method": "consistency", "base": str(run.base_model()),
        "models": [{"path": str(p), "name": t} for p, t in zip(run.specialised(), SPECIALISED)],
        "parameters": {"weights_file": str(weights_file), **run.preset.merge},
    }, where=f"preset {run.preset.name} merge")
