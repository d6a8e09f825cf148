"""The pictures of a reproduction: the dev search's scores per setting (``search/search.png``), a dev
curve over one ordered setting (``search/checkpoints.png``) and the results table as grouped bars
(``results/results.png``)."""

from __future__ import annotations

from pathlib import Path

from consistbench.benchmark.fileio import atomic_path
from consistbench.reference_method.reproduce.table import TABLE_METRICS, fmt


def search_chart(records: list[dict], best: dict, path: Path) -> Path:
    """The dev curves of the search: EM and RS of each setting (the chosen one marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(records)), 4.2), constrained_layout=True)
    xs = list(range(len(records)))
    ax.plot(xs, [r["em"] for r in records], "o-", label="EM")
    ax.plot(xs, [r["rs"] for r in records], "s-", label="RS")
    i = next(j for j, r in enumerate(records) if r["id"] == best["id"])
    ax.axvline(i, color="grey", linestyle=":", label=f"chosen ({best['id']})")
    short = {"learning_rate": "lr", "max_steps": "steps", "num_train_epochs": "ep", "alpha": "a", "margin": "m",
             "pooling_layer": "L"}
    ax.set_xticks(xs, [r["id"] + "\n" + "\n".join(f"{short.get(k, k)} {fmt(v)}" for k, v in r["setting"].items())
                       for r in records], fontsize=7)
    ax.set_ylabel(f"score on {records[0]['task']}")
    ax.set_title("search on dev: SFT + triplet (all data) per setting")
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def curve_chart(records: list[dict], best: dict, path: Path, title: str, x: str = "fraction") -> Path:
    """EM and RS on dev against one ordered setting (``x`` of each record), the chosen point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = sorted(records, key=lambda r: r[x])
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    xs = [r[x] for r in records]
    ax.plot(xs, [r["em"] for r in records], "o-", label="EM")
    ax.plot(xs, [r["rs"] for r in records], "s-", label="RS")
    ax.axvline(best[x], color="grey", linestyle=":", label=f"chosen ({best[x]:g})")
    ax.set_xlabel(x)
    ax.set_ylabel(f"score on {records[0]['task']}")
    ax.set_title(title)
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def bar_chart(doc: dict, path: Path) -> Path:
    """Grouped bars: metrics on the x axis, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(TABLE_METRICS) * len(rows) / 4), 4.5), constrained_layout=True)
    width = 0.85 / len(rows)
    for j, r in enumerate(rows):
        xs = [i + (j - (len(rows) - 1) / 2) * width for i in range(len(TABLE_METRICS))]
        ax.bar(xs, [r["metrics"].get(k, float("nan")) for k, _ in TABLE_METRICS], width, label=r["label"])
    ax.set_xticks(range(len(TABLE_METRICS)), [label for _, label in TABLE_METRICS])
    ax.set_ylim(0, 1.0)
    ax.set_title(f"consistbench reproduction: {doc['preset']} on {doc['task']}")
    ax.legend(fontsize=7, ncol=2)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
