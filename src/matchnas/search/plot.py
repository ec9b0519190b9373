"""The search's picture: accuracy (or score) against cost, with the evaluated configs, the Pareto
front and the picks. A score that is not an accuracy (the label-free score, a proxy, the selection
index) is drawn against a second axis on the right. Written as PNG with matplotlib's Agg backend
(no display needed)."""

from __future__ import annotations

from pathlib import Path

from matchnas.io import atomic_write


def plot_search(path: Path, result, picks_accuracy: dict, metric: str, unit: str, title: str) -> None:
    """``picks_accuracy`` maps a picked config to its test top-1 (fraction) when labels exist."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale, prefix = (1.0, "") if unit == "ms" else (1e6, "M")
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    is_accuracy = result.score_name.startswith("val")
    if result.evaluated and is_accuracy:
        ax.scatter([c / scale for _, c, _ in result.evaluated], [100 * s for *_, s in result.evaluated],
                   s=10, alpha=0.4, color="tab:gray", label=f"evaluated ({result.score_name})")
    if result.evaluated and not is_accuracy:
        right = ax.twinx()
        right.scatter([c / scale for _, c, _ in result.evaluated], [s for *_, s in result.evaluated],
                      s=10, alpha=0.4, color="tab:gray")
        right.set_ylabel(f"{result.score_name} (evaluated configs, grey)")
    if result.front:
        ax.plot([c / scale for _, c, _ in result.front], [100 * s for *_, s in result.front],
                "-o", ms=3, color="tab:blue", label="Pareto front (validation)")
    budgets_of: dict = {}
    for p in result.picks:
        if p.config in picks_accuracy:
            budgets_of.setdefault(p.config, (p.cost, []))[1].append(p.budget / scale)
        ax.axvline(p.budget / scale, color="tab:red", alpha=0.15, lw=1)
    if budgets_of:
        points = [(c / scale, 100 * picks_accuracy[cfg], b) for cfg, (c, b) in budgets_of.items()]
        ax.scatter([x for x, _, _ in points], [y for _, y, _ in points], marker="*", s=160, color="tab:red",
                   zorder=3, label="picks (test top-1)")
        for x, y, b in points:
            label = "budget " + ", ".join(f"{v:g}" for v in b)
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, -10), fontsize=7)
    ax.set_xlabel(f"{metric} ({prefix}{unit})")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
