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


def overlaid_curves(series: dict[str, tuple[list, list]], ylabel: str, path: Path, xlabel: str = "epoch") -> None:
    """One line per run (label -> (x values, values)), for comparing a grid at a glance."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, (epochs, values) in series.items():
        ax.plot(epochs, values, label=label, alpha=0.8)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if 0 < len(series) <= 12:
        ax.legend(fontsize=7)
    _save(fig, path)
