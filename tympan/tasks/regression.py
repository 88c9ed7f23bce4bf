"""Regression: one or more numeric targets per clip, trained scaled and reported in original units."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from tympan.errors import DataError
from tympan.fileio import write_csv
from tympan.tasks.base import Output, Targets, Task
from tympan.tasks.common import row_name, state_numbers, state_strings

METRICS = ("mse", "mae", "pearson", "ccc")
# predictions leave the model as float32 (up to 3.4e38): a center or scale past this makes them infinite
LIMIT = 1e30


class Regression(Task):
    """Values scaled per target with statistics of the train split (`zscore`: mean and standard
    deviation; `minmax`: to [0, 1]; `none`), so targets in any units train alike; predictions and
    metrics are in the original units.

    The tracking metric follows the loss: `ccc` (higher is better) with the CCC loss, else `mae`
    (lower is better).
    """

    headline = ("mse", "mae", "pearson", "ccc")  # averaged over the targets
    metric_names = item_metrics = METRICS
    lower_is_better = ("mse", "mae")

    name = "regression"

    def __init__(
        self,
        targets: Targets,
        loss: Literal["mse", "mae", "ccc"] = "mse",
        scaling: Literal["zscore", "minmax", "none"] = "zscore",
    ):
        super().__init__(targets)
        self.loss_name, self.scaling = loss, scaling
        self.tracking_metric, self.direction = ("ccc", "max") if loss == "ccc" else ("mae", "min")
        self.center: list[float] = []
        self.scale: list[float] = []

    # ---- fitting and state
    def fit(self, rows: list[dict[str, str]]) -> Regression:
        if not rows:
            raise DataError("train: no rows to fit the regression task on")
        values = self._values(rows, "train")
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below, naming its column
            if self.scaling == "zscore":
                center, scale = values.mean(axis=0), values.std(axis=0)
            elif self.scaling == "minmax":
                center, scale = values.min(axis=0), values.max(axis=0) - values.min(axis=0)
            else:
                center, scale = np.zeros(len(self.targets)), np.ones(len(self.targets))
        for name, c, s in zip(self.targets, center, scale, strict=True):
            if not (abs(c) <= LIMIT and s <= LIMIT):  # NaN fails too
                raise DataError(
                    f"train split: column {name!r}: its {self.scaling} scaling (center {c:g}, scale {s:g}) is "
                    f"not finite within ±{LIMIT:g}, as the bundle and float32 predictions need"
                )
        scale = np.where(scale > 0, scale, 1.0)  # a constant target is only shifted
        self.center, self.scale = [float(c) for c in center], [float(s) for s in scale]
        return self

    def state(self) -> dict:
        return {"targets": list(self.targets), "center": list(self.center), "scale": list(self.scale)}

    def load_state(self, state: dict) -> Regression:
        targets = state_strings(state, "targets")
        if targets != self.targets:
            raise ValueError(f"task state 'targets' {targets!r} are not this task's target columns {self.targets!r}")
        center = state_numbers(state, "center", len(targets), low=-LIMIT, high=LIMIT)
        self.scale = state_numbers(state, "scale", len(targets), low=0, high=LIMIT)
        self.center = center
        return self

    def _fitted(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.scale:
            raise RuntimeError("regression task is not fitted: call fit(train rows) or load_state(state) first")
        return np.array(self.center), np.array(self.scale)

    @property
    def n_outputs(self) -> int:
        return len(self.targets)

    def metric_items(self) -> list[str]:
        return list(self.targets)

    # ---- training
    def _values(self, rows: list[dict[str, str]], where: str) -> np.ndarray:
        """(n, targets) float64 in original units; a value that is not a number, or past ±LIMIT (which
        float32 predictions could not reach, and whose scaling would overflow), is a DataError."""
        columns = [self.column(rows, t, where) for t in self.targets]
        out = np.zeros((len(rows), len(self.targets)))
        for j, (name, column) in enumerate(zip(self.targets, columns, strict=True)):
            for number, (row, text) in enumerate(zip(rows, column, strict=True)):
                try:
                    value = float(text)
                except ValueError:
                    value = math.nan
                if not math.isfinite(value):
                    raise DataError(f"{where}, {row_name(row, number)}: column {name!r} holds {text!r}, not a number")
                if abs(value) > LIMIT:
                    raise DataError(
                        f"{where}, {row_name(row, number)}: column {name!r} holds {text!r}, beyond ±{LIMIT:g}: "
                        "too large to scale and predict in float32"
                    )
                out[number, j] = value
        return out

    def encode(self, rows: list[dict[str, str]], where: str = "index") -> np.ndarray:
        """(n, targets) float32, scaled."""
        center, scale = self._fitted()
        return ((self._values(rows, where) - center) / scale).astype(np.float32)

    def unscale(self, values: np.ndarray) -> np.ndarray:
        """Scaled (n, targets) values in original units (float64)."""
        center, scale = self._fitted()
        return np.asarray(values, dtype=np.float64) * scale + center

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, train: bool = True) -> torch.Tensor:
        """On scaled values: mean squared or absolute error, or 1 - CCC averaged over the targets."""
        targets = targets.to(outputs.dtype)
        if self.loss_name == "mse":
            return F.mse_loss(outputs, targets)
        if self.loss_name == "mae":
            return F.l1_loss(outputs, targets)
        return 1 - _ccc_torch(outputs, targets).mean()

    # ---- predictions
    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """Model outputs in original units, computed in float64 and returned in at least float32 (half
        precision cannot hold values in the hundreds to 1e-4)."""
        center, scale = (outputs.new_tensor(v, dtype=torch.float64) for v in self._fitted())
        return (outputs.double() * scale + center).to(torch.promote_types(outputs.dtype, torch.float32))

    def decode(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        scores = np.asarray(scores, dtype=np.float32)
        return {name: scores[:, j] for j, name in enumerate(self.targets)}

    def outputs(self) -> list[Output]:
        return [Output(name, "FP32") for name in self.targets]

    # ---- evaluation
    def metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """MSE, MAE, Pearson's r and CCC per target (`<metric>_<target>`) and their mean over the
        targets (`<metric>`), in original units: `scores` are in them, encoded `targets` are scaled back."""
        from sklearn.metrics import mean_absolute_error, mean_squared_error  # 1 s to import: not for every command

        predicted = np.asarray(scores, dtype=np.float64)
        true = self.unscale(targets)
        out: dict[str, float] = {}
        for j, name in enumerate(self.targets):
            y, p = true[:, j], predicted[:, j]
            out[f"mse_{name}"] = float(mean_squared_error(y, p))
            out[f"mae_{name}"] = float(mean_absolute_error(y, p))
            out[f"pearson_{name}"] = _pearson(y, p)
            out[f"ccc_{name}"] = _ccc(y, p)
        for metric in METRICS:
            out[metric] = float(np.mean([out[f"{metric}_{name}"] for name in self.targets]))
        return out

    def plots(self, scores: np.ndarray, targets: np.ndarray, directory: Path, split: str) -> None:
        """`predicted_<split>.png` (predicted against true, a panel per target) and its data as
        `predicted_<split>.csv` (true_<target>, predicted_<target>), in original units."""
        from tympan import plots

        predicted = np.asarray(scores, dtype=np.float64)
        true = self.unscale(targets)
        directory = Path(directory)
        plots.predicted_vs_true(
            {name: true[:, j] for j, name in enumerate(self.targets)},
            {name: predicted[:, j] for j, name in enumerate(self.targets)},
            directory / f"predicted_{split}.png",
        )
        columns = [f"{kind}_{name}" for name in self.targets for kind in ("true", "predicted")]
        pairs = (("true", true), ("predicted", predicted))
        rows = [
            {f"{kind}_{name}": float(values[i, j]) for j, name in enumerate(self.targets) for kind, values in pairs}
            for i in range(len(true))
        ]
        write_csv(directory / f"predicted_{split}.csv", rows, columns)


def _pearson(y: np.ndarray, p: np.ndarray) -> float:
    """Pearson's r; 0 where it is undefined (fewer than two values, or a constant side)."""
    from scipy.stats import pearsonr

    if len(y) < 2 or np.ptp(y) == 0 or np.ptp(p) == 0:
        return 0.0
    return float(pearsonr(y, p).statistic)


def _ccc(y: np.ndarray, p: np.ndarray) -> float:
    """Lin's concordance correlation coefficient; 0 where it is undefined (both sides one constant)."""
    denominator = y.var() + p.var() + (y.mean() - p.mean()) ** 2
    if denominator == 0:
        return 0.0
    return float(2 * np.mean((y - y.mean()) * (p - p.mean())) / denominator)


def _ccc_torch(outputs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """CCC per target (column) of a batch; `eps` keeps a batch of one clip finite."""
    mean_o, mean_t = outputs.mean(dim=0), targets.mean(dim=0)
    var_o, var_t = outputs.var(dim=0, unbiased=False), targets.var(dim=0, unbiased=False)
    covariance = ((outputs - mean_o) * (targets - mean_t)).mean(dim=0)
    return 2 * covariance / (var_o + var_t + (mean_o - mean_t) ** 2 + eps)
