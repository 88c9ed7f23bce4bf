"""What a task means for training: how targets are encoded, the loss, the metrics, and which
metric picks the best state."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score


class Classification:
    """Single-label classification: one class per clip, cross-entropy, accuracy tracks the best state."""

    name = "classification"
    tracking_metric = "accuracy"
    higher_is_better = True

    def __init__(self, labels: list[str], label_smoothing: float = 0.0):
        self.labels = list(labels)
        self.label_smoothing = label_smoothing
        self._codes = {label: i for i, label in enumerate(self.labels)}

    @property
    def n_outputs(self) -> int:
        return len(self.labels)

    def encode(self, targets: list[str]) -> np.ndarray:
        return np.array([self._codes[t] for t in targets], dtype=np.int64)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, train: bool = True) -> torch.Tensor:
        smoothing = self.label_smoothing if train else 0.0
        return F.cross_entropy(outputs, targets, label_smoothing=smoothing)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(dim=1)

    def metrics(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return {
            "accuracy": float(accuracy_score(targets, predictions)),
            "balanced_accuracy": float(balanced_accuracy_score(targets, predictions)),
            "macro_f1": float(
                f1_score(targets, predictions, average="macro", labels=range(self.n_outputs), zero_division=0)
            ),
        }

    def confusion(self, predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return confusion_matrix(targets, predictions, labels=range(self.n_outputs))

    def is_better(self, value: float, best: float | None) -> bool:
        return best is None or (value > best if self.higher_is_better else value < best)
