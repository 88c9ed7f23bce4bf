"""Run plots as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tympan.fileio import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def training_curves(history: list[dict], path: Path, metric: str, x: str = "epoch") -> None:
    """Train and dev loss, and the dev tracking metric, per epoch (or per step)."""
    evaluated = [r for r in history if "dev_loss" in r]  # with eval_every > 1 not every row has dev results
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot([r[x] for r in history], [r["train_loss"] for r in history], label="train")
    left.plot([r[x] for r in evaluated], [r["dev_loss"] for r in evaluated], label="dev", marker=".")
    left.set(xlabel=x, ylabel="loss", title="loss")
    left.legend()
    right.plot([r[x] for r in evaluated], [r[f"dev_{metric}"] for r in evaluated], color="tab:green", marker=".")
    right.set(xlabel=x, ylabel=metric, title=f"dev {metric}")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    _save(fig, path)


def confusion_matrix(matrix: np.ndarray, labels: list[str], path: Path, title: str | None = None) -> None:
    """Counts in each cell; the colour is the share of the true class, so classes of different
    sizes (or matrices summed over runs) read alike."""
    size = max(4, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels)
    ax.set(xlabel="predicted", ylabel="true")
    if title:
        ax.set_title(title, fontsize=9)
    for (i, j), count in np.ndenumerate(matrix):
        color = "white" if shares[i, j] > 0.5 else "black"
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=color)
    _save(fig, path)


def overlaid_curves(
    lines: list[tuple[str, list, list]], ylabel: str, path: Path, xlabel: str = "epoch", legend_entries: int = 12
) -> None:
    """One line per run, given as (label, x values, values); lines with the same label (a group's
    runs) share a colour and a legend entry. The legend sits below the plot, in as many columns as
    fit the figure's width, with at most `legend_entries` entries, so however many runs or however
    long their labels, the plot keeps the figure's width."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colours = {label: f"C{n % 10}" for n, label in enumerate(dict.fromkeys(label for label, _, _ in lines))}
    for label, xs, values in lines:
        ax.plot(xs, values, color=colours[label], alpha=0.8, marker="." if len(xs) < 30 else None)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=c, label=label) for label, c in colours.items()]
    if len(handles) > legend_entries:
        more = len(handles) - legend_entries + 1
        handles = handles[: legend_entries - 1] + [plt.Line2D([], [], color="none", label=f"... {more} more")]
    if handles:
        _legend_below(fig, ax, handles)
    _save(fig, path)


def _legend_below(fig, ax, handles: list) -> None:
    """A legend under the axes with the most columns (up to 4) whose width fits the figure."""
    renderer = fig.canvas.get_renderer()
    for columns in range(min(4, len(handles)), 0, -1):
        legend = ax.legend(
            handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=columns, fontsize=8, frameon=False
        )
        if legend.get_window_extent(renderer).width <= fig.bbox.width or columns == 1:
            return
        legend.remove()


def average_precision(classes: list[str], values: list[float], path: Path, title: str | None = None) -> None:
    """Average precision per class as horizontal bars, one row a class (a missing value, a class
    without positives, is left blank and marked n/a)."""
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(classes) + 1)))
    known = [0.0 if np.isnan(v) else v for v in values]
    ax.barh(range(len(classes)), known, color="tab:blue")
    for row, value in enumerate(values):
        ax.text(known[row] + 0.01, row, "n/a" if np.isnan(value) else f"{value:.2f}", va="center", fontsize=7)
    ax.set(yticks=range(len(classes)), yticklabels=classes, xlim=(0, 1.08), xlabel="average precision")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path)


def predicted_vs_true(true: dict[str, np.ndarray], predicted: dict[str, np.ndarray], path: Path) -> None:
    """One scatter panel per target, predictions against true values in the same units, with the
    identity line that perfect predictions would lie on."""
    fig, axes = plt.subplots(1, len(true), figsize=(4 * len(true), 4), squeeze=False)
    for ax, name in zip(axes[0], true, strict=True):
        ax.scatter(true[name], predicted[name], s=8, alpha=0.6)
        values = np.concatenate([true[name], predicted[name]])
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        ax.plot([low, high], [low, high], color="grey", linewidth=1, linestyle="--")
        ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title=name)
        ax.grid(alpha=0.3)
    _save(fig, path)


def group_bars(
    panels: dict[str, dict[str, dict[str, tuple[float, float]]]], metric: str, column: str, path: Path
) -> None:
    """A metric per group of an index column (speaker, device), one panel per split: for each
    group value a bar per set of runs, its height the mean and its whisker the standard deviation
    over the runs. `panels` maps split -> set of runs -> group value -> (mean, std)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.8), squeeze=False)
    for ax, (split, sets) in zip(axes[0], panels.items(), strict=True):
        values = sorted({value for bars in sets.values() for value in bars})
        width = 0.8 / max(1, len(sets))
        for n, (label, bars) in enumerate(sets.items()):
            xs = [i + (n - (len(sets) - 1) / 2) * width for i, value in enumerate(values) if value in bars]
            found = [bars[value] for value in values if value in bars]
            ax.bar(xs, [m for m, _ in found], width, yerr=[s for _, s in found], label=label, color=f"C{n % 10}")
        tilted = len(values) > 6  # many names side by side overlap
        ax.set_xticks(range(len(values)), values, rotation=45 if tilted else 0, ha="right" if tilted else "center")
        ax.set(xlabel=column, ylabel=metric, title=f"{split} {metric} per {column}")
        ax.grid(axis="y", alpha=0.3)
    handles, _ = axes[0][0].get_legend_handles_labels()
    if 1 < len(handles) <= 12:
        axes[0][0].legend(fontsize=8)
    _save(fig, path)
