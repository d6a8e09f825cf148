"""The training curves of a trained model: per-step CE and triplet loss, and the share of active
triplets (:func:`plot_loss_curves`), from the model's card (``loss_history``: every micro-batch) or
from Trainer's log history (``trainer_state.json`` of a checkpoint: every logging step).

A flat triplet curve at zero with no active triplets says the term never acted; a CE curve that
falls while the triplet term stays where it started says the model learned the answers, not the
consistency the term asks for.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import atomic_path
from consistbench.reference_method.save import CARD_NAME

STATE_NAME = "trainer_state.json"  # Trainer's state in each checkpoint, with its log history


def step_means(loss_history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Per optimizer step, the mean of ``key`` over that step's micro-batches (steps where it is recorded)."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for h in loss_history:
        if h.get(key) is not None:
            by_step[int(h["step"])].append(float(h[key]))
    steps = sorted(by_step)
    return steps, [sum(by_step[s]) / len(by_step[s]) for s in steps]


def history_from_log(log_history: list[dict]) -> list[dict]:
    """``loss_history``-like records from Trainer's log history (what :class:`ConsistencyTrainer` logs:
    the training logs' mean ``ce`` / ``triplet`` / ``triplet_active``, and the activity entries of
    step 0 and every logging step with their ``grad_ratio``). The curves take the training logs;
    an activity entry adds its ``grad_ratio``, and its one micro-batch's values only at a step that
    has no training log (step 0 unless ``logging_first_step``)."""
    logged = {int(h["step"]) for h in log_history if "loss" in h and "ce" in h}
    out = []
    for h in log_history:
        if "ce" not in h or "step" not in h:
            continue
        step, training = int(h["step"]), "loss" in h
        own = training or step not in logged
        out.append({"step": step, "ce": h["ce"] if own else None, "triplet": h.get("triplet") if own else None,
                    "active": h.get("triplet_active") if own else None,
                    "grad_ratio": None if training else h.get("grad_ratio")})
    return out


def plot_loss_curves(model: str | Path | dict, output: str | Path, *, title: str | None = None) -> Path:
    """Draw a trained model's per-step CE and triplet loss (left and right axes of the top panel)
    and, below, the share of active triplets and the gradient ratio where measured, into a PNG.

    ``model``: the model folder or its card (``consistbench_train.json``), a checkpoint folder or
    its ``trainer_state.json``, or either file's content as a dict.
    """
    card = model if isinstance(model, dict) else _read_card(Path(model))
    history = card.get("loss_history") or history_from_log(card.get("log_history") or [])
    ce_steps, ce = step_means(history, "ce")
    if not ce_steps:
        raise ConsistbenchError(f"{model if not isinstance(model, dict) else 'card'}: no per-step losses to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr_steps, triplet = step_means(history, "triplet")
    act_steps, active = step_means(history, "active")
    ratio_steps, ratio = step_means(history, "grad_ratio")
    panels = 2 if act_steps else 1
    fig, axes = plt.subplots(panels, 1, figsize=(7.0, 2.6 * panels + 0.6), sharex=True, squeeze=False)
    ax = axes[0][0]
    ax.plot(ce_steps, ce, color="tab:blue", linewidth=1.2, label="CE")
    ax.set_ylabel("CE", color="tab:blue")
    if tr_steps:
        ax_t = ax.twinx()
        ax_t.plot(tr_steps, triplet, color="tab:red", linewidth=1.2, label="triplet")
        ax_t.set_ylabel("triplet (hinge mean)", color="tab:red")
        ax_t.set_ylim(bottom=0)
    t = card.get("training", {})
    ax.set_title(title or (f"{card.get('variant_type', '')}: alpha {t.get('alpha')}, margin {t.get('margin')}, "
                           f"{t.get('pooled_positions', 'question')} pooled at layer {t.get('pooling_layer')}"),
                 fontsize=9)
    if act_steps:
        ax_a = axes[1][0]
        ax_a.plot(act_steps, active, color="tab:green", linewidth=1.2, label="active triplets")
        ax_a.set_ylim(-0.02, 1.02)
        ax_a.set_ylabel("share active", color="tab:green")
        if ratio_steps:
            ax_r = ax_a.twinx()
            ax_r.plot(ratio_steps, ratio, "o--", color="tab:purple", markersize=3, linewidth=0.8)
            ax_r.set_ylabel("alpha |grad triplet| / |grad CE|", color="tab:purple", fontsize=8)
            ax_r.set_ylim(bottom=0)
    axes[-1][0].set_xlabel("optimizer step")
    fig.tight_layout()
    output = Path(output)
    with atomic_path(output) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return output


def _read_card(path: Path) -> dict:
    file = path
    if path.is_dir():
        file = path / CARD_NAME if (path / CARD_NAME).is_file() or not (path / STATE_NAME).is_file() \
            else path / STATE_NAME
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConsistbenchError(f"{file}: cannot read the training card ({type(exc).__name__}: {exc})") from None
