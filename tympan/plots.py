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


def training_curves(history: list[dict], path: Path, metric: str) -> None:
    """Train and dev loss, and the dev tracking metric, per epoch."""
    evaluated = [r for r in history if "dev_loss" in r]  # with eval_every > 1 not every epoch has dev results
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot([r["epoch"] for r in history], [r["train_loss"] for r in history], label="train")
    left.plot([r["epoch"] for r in evaluated], [r["dev_loss"] for r in evaluated], label="dev", marker=".")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend()
    right.plot([r["epoch"] for r in evaluated], [r[f"dev_{metric}"] for r in evaluated], color="tab:green", marker=".")
    right.set(xlabel="epoch", ylabel=metric, title=f"dev {metric}")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    _save(fig, path)


def confusion_matrix(matrix: np.ndarray, labels: list[str], path: Path) -> None:
    size = max(4, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels)
    ax.set(xlabel="predicted", ylabel="true")
    for (i, j), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=color)
    _save(fig, path)


def overlaid_curves(series: dict[str, tuple[list, list]], ylabel: str, path: Path) -> None:
    """One line per run (label -> (epochs, values)), for comparing a grid at a glance."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, (epochs, values) in series.items():
        ax.plot(epochs, values, label=label, alpha=0.8)
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.grid(alpha=0.3)
    if 0 < len(series) <= 12:
        ax.legend(fontsize=7)
    _save(fig, path)
