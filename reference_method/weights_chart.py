"""The picture of a consistency-weights file: the layers x models heatmap and, beside it, why.

``consistbench ref weights`` and the reproduction write it next to the JSON (``weights.png``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
    ax.set_title(f"consistency weights ({o['distance']}, {o['normalisation']}, total {o['total']:g})", fontsize=9)
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
    ax_d.set_xlabel(f"distance to the reference ({o['distance']})", fontsize=8)
    ax_d.set_title("why: distance per layer", fontsize=9)
    ax_d.tick_params(axis="x", labelsize=7)
    ax_d.legend(fontsize=6, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)
