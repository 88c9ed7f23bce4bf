"""Multi-label classification: any number of classes per clip, one 0/1 target column per class."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
import numpy as np
import torch
import torch.nn.functional as F

from tympan.errors import DataError
from tympan.fileio import write_csv
from tympan.tasks.base import Output, Targets, Task
from tympan.tasks.common import row_name, state_numbers, state_strings

FLAGS = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0}


class MultiLabel(Task):
    """Binary cross-entropy per class; a class is predicted where its probability is at or above
    its threshold; mAP picks the best state.

    The class names are the target column names. Thresholds start at `threshold`; with
    `tune_thresholds`, `tune(dev scores, dev targets)` sets each class's to the one that gives it
    the best F1 there (the trainer calls it before the test split is evaluated).
    """

    name = "multilabel"
    tracking_metric = "mAP"
    direction = "max"
    headline = ("mAP", "micro_f1", "macro_f1")
    metric_names = ("mAP", "micro_f1", "macro_f1")

    def __init__(
        self,
        targets: Targets,
        threshold: Annotated[float, at.Gt(0), at.Lt(1)] = 0.5,
        tune_thresholds: bool = False,
    ):
        super().__init__(targets)
        self.threshold = float(threshold)
        self.tune_thresholds = tune_thresholds
        self.thresholds = [self.threshold] * len(self.targets)

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        Task.check_together(args)
        joined = [t for t in args.get("targets") or () if ";" in t]
        if joined:
            raise ValueError(f"targets: class names must not contain ';' (it joins predicted labels), got {joined!r}")

    @property
    def classes(self) -> list[str]:
        return self.targets

    # ---- fitting and state
    def fit(self, rows: list[dict[str, str]]) -> MultiLabel:
        """Checks the train split's columns; the thresholds start at `threshold`."""
        if not rows:
            raise DataError("train: no rows to fit the multi-label task on")
        self.encode(rows, "train")
        self.thresholds = [self.threshold] * len(self.classes)
        return self

    def state(self) -> dict:
        return {"classes": list(self.classes), "thresholds": list(self.thresholds)}

    def load_state(self, state: dict) -> MultiLabel:
        classes = state_strings(state, "classes")
        if classes != self.classes:
            raise ValueError(f"task state 'classes' {classes!r} are not this task's target columns {self.classes!r}")
        self.thresholds = state_numbers(state, "thresholds", len(classes), low=0, high=1)
        return self

    @property
    def n_outputs(self) -> int:
        return len(self.classes)

    # ---- training
    def encode(self, rows: list[dict[str, str]], where: str = "index") -> np.ndarray:
        """(n, classes) float32 of 0 and 1; a value other than 0/1, or a row with no class, is a DataError."""
        columns = [self.column(rows, c, where) for c in self.classes]
        out = np.zeros((len(rows), len(self.classes)), dtype=np.float32)
        for number, row in enumerate(rows):
            for j, name in enumerate(self.classes):
                value = columns[j][number].strip()
                if value not in FLAGS:
                    raise DataError(
                        f"{where}, {row_name(row, number)}: column {name!r} holds {columns[j][number]!r}, not 0 or 1"
                    )
                out[number, j] = FLAGS[value]
            if not out[number].any():
                raise DataError(
                    f"{where}, {row_name(row, number)}: no label set; one of the columns "
                    f"{', '.join(self.classes)} must be 1"
                )
        return out

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, train: bool = True) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs, targets.to(outputs.dtype))

    # ---- predictions
    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(outputs)

    def predicted(self, scores: np.ndarray) -> np.ndarray:
        """(batch, classes) booleans: each class at or above its threshold."""
        return np.asarray(scores) >= np.array(self.thresholds, dtype=np.float32)

    def decode(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        scores = np.asarray(scores, dtype=np.float32)
        names = [";".join(c for c, on in zip(self.classes, row, strict=True) if on) for row in self.predicted(scores)]
        return {"labels": np.array(names, dtype=str), "probabilities": scores}

    def outputs(self) -> list[Output]:
        return [
            Output("labels", "BYTES"),
            Output("probabilities", "FP32", columns=tuple(self.classes), prefix="prob_"),
        ]

    # ---- evaluation
    def tune(self, scores: np.ndarray, targets: np.ndarray) -> MultiLabel:
        """With `tune_thresholds`, each class's threshold becomes the score that gives it the best F1
        on these (dev) scores; classes without positives there keep theirs. Otherwise does nothing."""
        from sklearn.metrics import precision_recall_curve  # 1 s to import: not for every command

        if not self.tune_thresholds:
            return self
        truth = np.asarray(targets) >= 0.5
        for j in range(len(self.classes)):
            if truth[:, j].any():
                precision, recall, cuts = precision_recall_curve(truth[:, j], np.asarray(scores)[:, j])
                f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
                self.thresholds[j] = float(np.clip(cuts[int(f1.argmax())], 1e-6, 1 - 1e-6))
        return self

    def average_precisions(self, scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """AP per class; NaN for a class without positives, where AP is undefined."""
        from sklearn.metrics import average_precision_score

        truth = np.asarray(targets) >= 0.5
        return np.array(
            [
                average_precision_score(truth[:, j], np.asarray(scores)[:, j]) if truth[:, j].any() else np.nan
                for j in range(len(self.classes))
            ]
        )

    def metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """mAP over the classes with positives (macro AP); micro and macro F1 at the thresholds."""
        from sklearn.metrics import f1_score

        ap = self.average_precisions(scores, targets)
        truth = np.asarray(targets) >= 0.5
        predicted = self.predicted(scores)
        return {
            "mAP": float(np.nanmean(ap)) if not np.isnan(ap).all() else 0.0,
            "micro_f1": float(f1_score(truth, predicted, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        }

    def plots(self, scores: np.ndarray, targets: np.ndarray, directory: Path, split: str) -> None:
        """`ap_<split>.png`, and `ap_<split>.csv` (class, ap, positives; ap blank without positives)."""
        from tympan import plots

        ap = self.average_precisions(scores, targets)
        positives = (np.asarray(targets) >= 0.5).sum(axis=0)
        directory = Path(directory)
        plots.average_precision(self.classes, list(ap), directory / f"ap_{split}.png", title=f"AP per class ({split})")
        rows = [
            {"class": c, "ap": "" if np.isnan(v) else float(v), "positives": int(n)}
            for c, v, n in zip(self.classes, ap, positives, strict=True)
        ]
        write_csv(directory / f"ap_{split}.csv", rows, ["class", "ap", "positives"])
