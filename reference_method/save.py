"""Writing a trained model: one helper for every training command (``ref train``, ``ref wrpo``,
``ref mrpo``), so each output folder has the same shape.

The folder is written to a temporary sibling and renamed when complete: weights (safetensors;
LoRA adapters folded in, so it loads as a plain model and can be merged), tokenizer, the
benchmark's evaluation generation config (greedy, the tasks' max_new_tokens, the tokenizer's
eos/pad), ``consistbench_train.json`` (every setting, data checksum, losses, versions; for the
triplet trainer also the triplet term's activity, :func:`activity_summary`) and a README model card.
"""

from __future__ import annotations

import importlib.metadata as md
import json
from pathlib import Path

from consistbench.benchmark.fileio import atomic_path
from consistbench.reference_method import doctor

CARD_NAME = "consistbench_train.json"


def save_trained_model(trainer, tokenizer, output_dir: str | Path, card: dict, readme: str, *,
                       model_dir: str | Path) -> Path:
    """Write ``trainer``'s model to ``output_dir`` atomically; ``model_dir`` is the model it started from."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):  # a peft model: fold the adapters into the weights
        model = model.merge_and_unload()
    base_gen = doctor.load_generation_config(model_dir)
    with atomic_path(output_dir, is_dir=True) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        doctor.eval_generation_config(tokenizer, base_gen).save_pretrained(str(tmp))
        (tmp / CARD_NAME).write_text(json.dumps(card, indent=2, default=str) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(readme, encoding="utf-8")
    return Path(output_dir)


def activity_summary(loss_history: list[dict]) -> dict:
    """The triplet term's activity at the first and last steps where it was measured (those with a
    gradient ratio; else those with the per-step share of active triplets): ``{}`` without a triplet term."""
    keys = ("step", "active", "d_ap", "d_an", "grad_ratio", "ce", "triplet")
    rows = [h for h in loss_history if h.get("active") is not None]
    measured = [h for h in rows if h.get("grad_ratio") is not None] or rows
    if not measured:
        return {}
    return {"first": {k: measured[0].get(k) for k in keys}, "last": {k: measured[-1].get(k) for k in keys},
            "measured_steps": len(measured)}


def library_versions(*packages: str) -> dict[str, str]:
    """Installed versions of ``packages`` (recorded in every model card)."""
    out = {}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
