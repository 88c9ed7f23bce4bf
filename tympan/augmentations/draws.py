"""The random numbers several augmentations draw, each from the run's torch.Generator only (never a
global RNG), so a run's augmentations are a function of its seed and a resumed run replays them."""

from __future__ import annotations

import torch


def uniform(low: float, high: float, generator: torch.Generator) -> float:
    """A uniform number in [low, high): one draw."""
    return low + float(torch.rand(1, generator=generator)) * (high - low)


def integer(low: int, high: int, generator: torch.Generator) -> int:
    """A uniform integer in [low, high], both ends included: one draw."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def nonzero(bound: int, generator: torch.Generator) -> int:
    """A uniform integer in [-bound, bound] other than 0 (`bound` >= 1), so a shift always moves: one draw."""
    k = integer(0, 2 * bound - 1, generator)
    return k - bound if k < bound else k - bound + 1
