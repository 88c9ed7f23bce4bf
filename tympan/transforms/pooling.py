"""Statistics pooling: a clip's frames summed up in one vector, for vector models (FFNN) on
frame features, the classic baseline beside sequence models and frozen-embedding heads."""

from __future__ import annotations

from typing import Literal

import torch

from tympan.transforms.spec import Spec, Transform

STATISTICS = ("mean", "std", "min", "max")


class Statistics(Transform):
    """Frames (T, F) -> vector (len(stats) * F): the chosen statistics of each bin over the clip's
    frames, side by side in the order given. `std` is the population standard deviation (0 for a
    one-frame clip), so a clip of any length gives a finite vector."""

    takes = ("frames",)

    def __init__(self, stats: list[Literal["mean", "std", "min", "max"]] = ("mean", "std")):
        super().__init__()
        self.stats = list(stats)

    @staticmethod
    def check_together(args: dict) -> None:
        stats = list(args["stats"])
        if not stats or len(set(stats)) != len(stats):
            raise ValueError(
                f"stats must name each of {', '.join(STATISTICS)} at most once, and one at least, got {stats}"
            )

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        return Spec("vector", spec.sample_rate, size=spec.size * len(self.stats))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape[0] == 0:
            raise ValueError("Statistics needs at least one frame, got an empty clip")
        parts = {
            "mean": lambda: x.mean(dim=0),
            "std": lambda: x.std(dim=0, correction=0),
            "min": lambda: x.min(dim=0).values,
            "max": lambda: x.max(dim=0).values,
        }
        return torch.cat([parts[name]() for name in self.stats])
