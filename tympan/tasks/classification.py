"""Single-label classification: one class per clip from one target column."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from tympan.components import Probability
from tympan.errors import DataError
from tympan.fileio import write_csv
from tympan.tasks.base import Output, Targets, Task
from tympan.tasks.common import row_name, state_numbers, state_strings, state_value


class Classification(Task):
    """Cross-entropy over the label set of the train split; accuracy picks the best state.

    `class_weights="balanced"` weighs each class by n_clips / (n_classes * its clips) in train.
    """

    name = "classification"
    tracking_metric = "accuracy"
    direction = "max"
    headline = ("accuracy", "uar", "macro_f1", "weighted_f1")
    metric_names = ("accuracy", "uar", "balanced_accuracy", "macro_f1", "weighted_f1")
    item_metrics = ("f1",)

    def __init__(
        self,
        targets: Targets,
        label_smoothing: Probability = 0.0,
        class_weights: Literal["none", "balanced"] = "none",
    ):
        super().__init__(targets)
        self.label_smoothing = float(label_smoothing)
        self.class_weights = class_weights
        self.labels: list[str] = []
        self.weights: list[float] | None = None
        self._codes: dict[str, int] = {}

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        Task.check_together(args)
        if args.get("targets") is not None and len(args["targets"]) != 1:
            raise ValueError(f"this task reads exactly one target column, got {list(args['targets'])!r}")

    @property
    def target(self) -> str:
        return self.targets[0]

    # ---- fitting and state
    def fit(self, rows: list[dict[str, str]]) -> Classification:
        if not rows:
            raise DataError("train: no rows to fit the classification task on")
        values = self.column(rows, self.target, "train")
        for number, (row, value) in enumerate(zip(rows, values, strict=True)):
            if not value.strip():
                raise DataError(f"train, {row_name(row, number)}: empty label in column {self.target!r}")
        counts = Counter(values)
        if len(counts) < 2:
            raise DataError(f"train: column {self.target!r} needs at least two labels, found {sorted(counts)!r}")
        labels = sorted(counts)  # string sort, as the index's label list always was
        weights = [len(values) / (len(labels) * counts[label]) for label in labels]
        return self._set(labels, weights if self.class_weights == "balanced" else None)

    def state(self) -> dict:
        return {"labels": list(self.labels), "class_weights": self.weights}

    def load_state(self, state: dict) -> Classification:
        labels = state_strings(state, "labels")
        if len(labels) < 2:
            raise ValueError(f"task state 'labels' must name at least two classes, got {labels!r}")
        weights = None
        if state_value(state, "class_weights") is not None:
            weights = state_numbers(state, "class_weights", len(labels), low=0)
        return self._set(labels, weights)

    def _set(self, labels: list[str], weights: list[float] | None) -> Classification:
        self.labels, self.weights = labels, weights
        self._codes = {label: i for i, label in enumerate(labels)}
        return self

    def _fitted(self) -> list[str]:
        if not self.labels:
            raise RuntimeError("classification task is not fitted: call fit(train rows) or load_state(state) first")
        return self.labels

    @property
    def n_outputs(self) -> int:
        return len(self._fitted())

    def metric_items(self) -> list[str]:
        return list(self.labels)

    # ---- training
    def encode(self, rows: list[dict[str, str]], where: str = "index") -> np.ndarray:
        labels = self._fitted()
        values = self.column(rows, self.target, where)
        for number, (row, value) in enumerate(zip(rows, values, strict=True)):
            if value not in self._codes:
                raise DataError(
                    f"{where}, {row_name(row, number)}: label {value!r} in column {self.target!r} is not one of "
                    f"the labels of the train split: {', '.join(labels)}"
                )
        return np.array([self._codes[v] for v in values], dtype=np.int64)

    def soft(self, targets: torch.Tensor) -> torch.Tensor:
        if targets.dim() == 1:
            return F.one_hot(targets.long(), self.n_outputs).float()
        return targets.float()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, train: bool = True) -> torch.Tensor:
        """Cross-entropy against class indices or soft (batch, classes) targets.

        With class weights a batch is averaged over its clips' weights, for soft targets too (the
        weight of a mixed clip is the mix of its classes' weights), so one-hot soft targets give
        exactly the loss of their class indices.
        """
        smoothing = self.label_smoothing if train else 0.0
        weight = None if self.weights is None else outputs.new_tensor(self.weights)
        if targets.dim() == 1:
            return F.cross_entropy(outputs, targets.long(), weight=weight, label_smoothing=smoothing)
        soft = targets.to(outputs.dtype)
        if weight is None:
            return F.cross_entropy(outputs, soft, label_smoothing=smoothing)
        total = F.cross_entropy(outputs, soft, weight=weight, label_smoothing=smoothing, reduction="sum")
        return total / (soft @ weight).sum()

    # ---- predictions
    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(outputs, dim=1)

    def decode(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        scores = np.asarray(scores, dtype=np.float32)
        names = np.array(self.labels, dtype=str)
        return {"label": names[scores.argmax(axis=1)], "probabilities": scores}

    def outputs(self) -> list[Output]:
        return [
            Output("label", "BYTES"),
            Output("probabilities", "FP32", columns=tuple(self.labels), prefix="prob_"),
        ]

    # ---- evaluation
    def metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """Accuracy, unweighted average recall (over the classes present; `balanced_accuracy` is the
        same figure under its old name), macro and weighted F1, and F1 per class."""
        from sklearn.metrics import accuracy_score, f1_score, recall_score  # 1 s to import: not for every command

        predictions = np.asarray(scores).argmax(axis=1)
        targets = np.asarray(targets)
        classes = range(self.n_outputs)
        uar = float(recall_score(targets, predictions, labels=np.unique(targets), average="macro", zero_division=0))
        per_class = f1_score(targets, predictions, labels=classes, average=None, zero_division=0)
        return {
            "accuracy": float(accuracy_score(targets, predictions)),
            "uar": uar,
            "balanced_accuracy": uar,
            "macro_f1": float(f1_score(targets, predictions, labels=classes, average="macro", zero_division=0)),
            "weighted_f1": float(f1_score(targets, predictions, labels=classes, average="weighted", zero_division=0)),
            **{f"f1_{label}": float(f) for label, f in zip(self.labels, per_class, strict=True)},
        }

    def plots(self, scores: np.ndarray, targets: np.ndarray, directory: Path, split: str) -> None:
        """`confusion_<split>.png`, and its counts as `confusion_<split>.csv` (columns true, <labels>),
        which reports sum over seeds."""
        from sklearn.metrics import confusion_matrix

        from tympan import plots

        predictions = np.asarray(scores).argmax(axis=1)
        matrix = confusion_matrix(np.asarray(targets), predictions, labels=range(self.n_outputs))
        directory = Path(directory)
        plots.confusion_matrix(matrix, self.labels, directory / f"confusion_{split}.png")
        rows = [
            {"true": label, **dict(zip(self.labels, map(int, counts), strict=True))}
            for label, counts in zip(self.labels, matrix, strict=True)
        ]
        write_csv(directory / f"confusion_{split}.csv", rows, ["true", *self.labels])
