"""The pictures of a consistency-weights file: the layers x models heatmap and, beside it, why
(:func:`plot_heatmap`); the per-layer distances under two distance kinds side by side
(:func:`plot_distances`).

``consistbench ref weights`` and the reproduction write the heatmap next to the JSON (``weights.png``);
``ref weights --distances-chart paper,cka`` adds the side-by-side distances.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import atomic_path
from consistbench.reference_method.weights_file import rows_of


def plot_heatmap(doc: dict, path: str | Path) -> Path:
    """Two panels: the layers x models heatmap of the weights (embeddings at the top, final norm at the
    bottom), and beside it, on the same rows, each model's distance to the reference similarity and the
    base model's: weights differ across models only where those distances do."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(rows_of(doc["weights"]), dtype=np.float64)
    ylabels = ["embed"] + [f"layer {i}" for i in range(len(doc["weights"]["layers"]))] + ["final"]
    xlabels = [m["label"] for m in doc["models"]]
    fig, (ax, ax_d) = plt.subplots(1, 2, figsize=(5.2 + 1.3 * len(xlabels), 1.4 + 0.28 * len(ylabels)),
                                   gridspec_kw={"width_ratios": [1.3 * len(xlabels) + 1.0, 3.6]})
    im = ax.imshow(matrix, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(xlabels)), xlabels, rotation=30, ha="right")
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=7 if len(ylabels) > 20 else 9)
    if matrix.size <= 60 * 6:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < matrix.mean() else "k")
    o = doc["options"]
    ax.set_title(f"consistency weights ({_kind_label(o)}, {o['normalisation']}, total {o['total']:g})", fontsize=9)
    fig.colorbar(im, ax=ax, label="weight w_k^l")
    # the distances the weights come from (raw: before `compare: delta` subtracts the base's)
    dist = np.array(rows_of(doc.get("raw_distances") or doc["distances"]), dtype=np.float64)
    ys = np.arange(len(ylabels))
    for j, label in enumerate(xlabels):
        ax_d.plot(dist[:, j], ys, marker=".", linewidth=1, label=label)
    if doc.get("base_distances"):
        ax_d.plot(np.array(rows_of(doc["base_distances"]), dtype=np.float64), ys, "k--", linewidth=1, label="base")
    ax_d.set_ylim(len(ylabels) - 0.5, -0.5)  # the heatmap's row order
    ax_d.set_yticks(ys, [""] * len(ys))
    ax_d.set_xlabel(f"distance to the reference ({_kind_label(o)})", fontsize=8)
    ax_d.set_title("why: distance per layer", fontsize=9)
    ax_d.tick_params(axis="x", labelsize=7)
    ax_d.legend(fontsize=6, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def _kind_label(options: dict, kind: str | None = None) -> str:
    kind = kind or options["distance"]
    norm = options.get("norm", "mean_abs")
    return kind if kind == "cka" or norm == "mean_abs" else f"{kind}, {norm}"


def plot_distances(doc: dict, path: str | Path, kinds: tuple[str, str] = ("paper", "centered")) -> Path:
    """Two panels on the same rows (embeddings at the top): each model's and the base's distance to
    the reference under ``kinds[0]`` and under ``kinds[1]`` (from the file's ``all_distances``).
    Under ``paper`` the models' curves mostly trace the shared offset; where a kind separates the
    models, the weights it gives differ."""
    every = doc.get("all_distances") or {}
    missing = [k for k in kinds if k not in every]
    if missing:
        raise ConsistbenchError(f"the weights file has no {missing[0]!r} distances (it has: "
                                f"{', '.join(every) or 'none; written before version 2'})")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ylabels = ["embed"] + [f"layer {i}" for i in range(len(doc["weights"]["layers"]))] + ["final"]
    ys = np.arange(len(ylabels))
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds) + 1.0, 1.4 + 0.28 * len(ylabels)), sharey=True)
    for ax, kind in zip(np.atleast_1d(axes), kinds):
        dist = np.array(rows_of(every[kind]["models"]), dtype=np.float64)
        for j, m in enumerate(doc["models"]):
            ax.plot(dist[:, j], ys, marker=".", linewidth=1, label=m["label"])
        ax.plot(np.array(rows_of(every[kind]["base"]), dtype=np.float64), ys, "k--", linewidth=1, label="base")
        ax.set_title(f"distance: {_kind_label(doc['options'], kind)}"
                     + (" (weights)" if kind == doc["options"]["distance"] else ""), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=6, loc="best")
    first = np.atleast_1d(axes)[0]
    first.set_ylim(len(ylabels) - 0.5, -0.5)
    first.set_yticks(ys, ylabels, fontsize=7 if len(ylabels) > 20 else 9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)
