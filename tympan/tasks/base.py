"""The task contract: everything that knows what a target is lives behind it.

Training, the bundle, the registry, serving, inference, postprocess and the pipeline call a
`Task` and never look at labels, thresholds or target units themselves. A task:

- owns its target columns (`targets`, the index columns it reads);
- is fitted on the train split's index rows (`fit`), giving a JSON-able `state()` (label set,
  thresholds, target scaling) that is saved in the run and the bundle and restored with
  `from_state`;
- encodes index rows into training targets (`encode`), and any targets into the float
  (batch, n_outputs) form that MixUp/CutMix mix (`soft`);
- has a loss that takes encoded or soft targets;
- turns raw model outputs into `scores` (probabilities, or values in original units), which are
  what sliding windows average, what metrics read and what `decode` turns into named outputs;
- declares its tracking metric and its direction, written into summary.json, and which metrics it
  gives and which of them are lower-is-better, so `task.tracking` can choose another one (its
  direction known) and `task.stratify`'s worst groups are the worst in each metric's direction;
- declares its `outputs` (the schema the MLflow signature, KServe outputs and metadata and the
  inference rows are built from), and makes its report plots.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
import numpy as np
import torch

from tympan.components import Checked, Says
from tympan.errors import DataError
from tympan.results import WORST, better

Direction = Literal["max", "min"]
Targets = Annotated[list[Annotated[str, at.MinLen(1)]], at.MinLen(1), Says("a non-empty list of column names")]


@dataclass(frozen=True)
class Output:
    """One named output of a task.

    `datatype` is the KServe V2 type ("BYTES" for strings, "FP32" for numbers). `columns` names
    the columns of a (batch, n) output (e.g. class names); an output without columns is one value
    per clip. In table form (CLI inference rows, the MLflow signature) an output with columns
    becomes one column `<prefix><column>` each; one without becomes the column `<name>`.
    """

    name: str
    datatype: Literal["BYTES", "FP32"]
    columns: tuple[str, ...] | None = None
    prefix: str = ""


class Task(Checked, abc.ABC):
    """Base class of the tasks; see the module docstring for the contract."""

    name: str
    tracking_metric: str
    direction: Direction = "max"
    headline: tuple[str, ...] = ()  # the metrics a terminal summary shows (all when empty)
    # what `metrics` gives, so `task.tracking` can be checked before training (empty: only tracking_metric)
    metric_names: tuple[str, ...] = ()
    item_metrics: tuple[str, ...] = ()  # given per class or target too, as <metric>_<item> (f1_<label>)
    lower_is_better: tuple[str, ...] = ()  # metrics (their per-item forms too) where lower is better

    def __init__(self, targets: Targets):
        self.targets = list(targets)

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        """Distinct target columns (config load checks before the dataset fills them in: none yet)."""
        targets = args.get("targets")
        if targets is not None and len(set(targets)) != len(targets):
            raise ValueError(f"targets must be distinct, got {list(targets)!r}")

    # ---- fitting on the train split, and the state saved with the run and the bundle
    @abc.abstractmethod
    def fit(self, rows: list[dict[str, str]]) -> Task:
        """Fit the task's state on the train split's index rows; returns self."""

    @abc.abstractmethod
    def state(self) -> dict:
        """The fitted state as JSON-able data."""

    @abc.abstractmethod
    def load_state(self, state: dict) -> Task:
        """Restore a fitted state (from `state()`); a malformed one is a ValueError. Returns self."""

    @property
    @abc.abstractmethod
    def n_outputs(self) -> int:
        """The model's output width."""

    # ---- training
    @abc.abstractmethod
    def encode(self, rows: list[dict[str, str]], where: str = "index") -> np.ndarray:
        """Training targets of index rows: int64 (n,) class indices, or float32 (n, n_outputs).
        A value the fitted state cannot encode is a DataError naming `where`, the row and column."""

    def soft(self, targets: torch.Tensor) -> torch.Tensor:
        """Targets as float (batch, n_outputs), the form batch augmentations mix."""
        return targets.float()

    @abc.abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, train: bool = True) -> torch.Tensor:
        """Loss of raw outputs against encoded or soft targets (`train` enables e.g. smoothing)."""

    # ---- predictions
    @abc.abstractmethod
    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """Raw outputs -> (batch, n_outputs) scores: probabilities, or values in original units."""

    @abc.abstractmethod
    def decode(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        """Scores (batch, n_outputs) -> one array per declared output, each with the batch first."""

    @abc.abstractmethod
    def outputs(self) -> list[Output]:
        """The declared outputs, in order."""

    # ---- evaluation
    @abc.abstractmethod
    def metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """Metrics of scores against encoded targets; includes `tracking_metric`."""

    @abc.abstractmethod
    def plots(self, scores: np.ndarray, targets: np.ndarray, directory: Path, split: str) -> None:
        """The task's report plots (and their data as CSV) for one split into `directory`."""

    def tune(self, scores: np.ndarray, targets: np.ndarray) -> Task:
        """Adjust the fitted decision state on the best model's dev scores (multi-label thresholds);
        training calls it before the final dev and test evaluation. Most tasks have nothing to tune."""
        return self

    def is_better(self, value: float, best: float | None) -> bool:
        return better(value, best, self.direction)

    # ---- the tracking metric's choice (`task.tracking`)
    @classmethod
    def metric_forms(cls) -> list[str] | None:
        """The metrics `task.tracking` may name, known before fitting: per-item ones as `f1_<item>`,
        and `loss`. None where the class declares none (then they are checked once it is fitted)."""
        own = getattr(cls, "tracking_metric", None)
        names = list(cls.metric_names) or ([own] if isinstance(own, str) else [])
        if not names:
            return None
        return [*names, *(f"{m}_<item>" for m in cls.item_metrics), "loss"]

    def metric_items(self) -> list[str]:
        """What per-item metrics are named after once fitted (class labels, target columns)."""
        return []

    def known_metrics(self) -> list[str]:
        """Every metric the fitted task gives, and `loss`: what `task.tracking` may name."""
        names = list(self.metric_names) or [self._own_tracking()[0]]
        return [*names, *(f"{m}_{item}" for m in self.item_metrics for item in self.metric_items()), "loss"]

    def metric_direction(self, name: str) -> Direction:
        """Lower or higher is better for one of the task's metrics (a worst group's: its metric's)."""
        base = name.rpartition(WORST)[0] or name
        lower = self.lower_is_better
        if base == "loss" or base in lower or any(base.startswith(f"{m}_") for m in lower):
            return "min"
        own, direction = self._own_tracking()
        return direction if base == own else "max"

    def track(self, metric: str) -> None:
        """Pick the best state on `metric` (a name of `known_metrics`, or a worst group's), in its direction."""
        self._own = self._own_tracking()  # the class's choice: its direction is known for a task that lists none
        self.tracking_metric, self.direction = metric, self.metric_direction(metric)

    def _own_tracking(self) -> tuple[str, Direction]:
        return getattr(self, "_own", None) or (self.tracking_metric, self.direction)

    def rows(self, decoded: dict[str, np.ndarray]) -> list[dict]:
        """Decoded outputs in table form: one dict per clip (see `Output`)."""
        n = len(next(iter(decoded.values())))
        out: list[dict] = [{} for _ in range(n)]
        for spec in self.outputs():
            values = decoded[spec.name]
            for i in range(n):
                if spec.columns is None:
                    out[i][spec.name] = values[i].item() if hasattr(values[i], "item") else values[i]
                else:
                    out[i].update({f"{spec.prefix}{c}": float(v) for c, v in zip(spec.columns, values[i], strict=True)})
        return out

    def summary(self) -> dict:
        """What summary.json records about the task, for every consumer that ranks runs."""
        return {
            "name": self.name,
            "tracking_metric": self.tracking_metric,
            "direction": self.direction,
            "headline": list(self.headline),
        }

    def column(self, rows: list[dict[str, str]], column: str, where: str) -> list[str]:
        """The values of one target column, a DataError naming `where` when it is missing."""
        if rows and column not in rows[0]:
            raise DataError(f"{where}: no target column {column!r} (columns: {', '.join(rows[0])})")
        return [row[column] for row in rows]
