"""SpecAugment's parts as augmentations of their own (Park et al., 2019): time masks, frequency
masks and time warping of one clip's features (frames, bins), e.g. a log-Mel.

Feature augmentations run before the first normalising transform, so a mask filled with the
clip's mean ("mean", the default) carries no level information once the features are normalised;
a number fills it with that value (0.0 zeroes the band).
"""

from __future__ import annotations

from typing import Literal

import torch

from tympan.augmentations import draws
from tympan.augmentations.base import Augmentation, Number
from tympan.components import PositiveInt, Unit

MEAN = "mean"


def band(width_draw: float, start_draw: float, size: int, max_width: int, least: int = 0) -> tuple[int, int]:
    """(start, width) of a band on an axis of `size`, from two uniform draws in [0, 1): the width
    uniform in [least, min(max_width, size)], then the start uniform over the places it fits."""
    most = min(max_width, size)
    least = min(least, most)
    width = least + int(width_draw * (most - least + 1))
    start = int(start_draw * (size - width + 1))
    return start, width


def masked(features: torch.Tensor, bands: list[tuple[int, int, int]], value: float) -> torch.Tensor:
    """A copy of `features` with each band (axis, start, width) set to `value`."""
    out = features.clone()
    for axis, start, width in bands:
        out.narrow(axis, start, width).fill_(value)
    return out


def fill_value(features: torch.Tensor, fill: float | str) -> float:
    return float(features.mean()) if fill == MEAN else float(fill)


class Mask(Augmentation):
    """What TimeMask and FrequencyMask share: `masks` bands of 1 to `max_width` rows along `axis`,
    each filled with `fill`. After the p draw, one draw of two numbers per mask: its width
    (uniform in [1, max_width], at most the axis), then its start (uniform where it fits)."""

    place = "features"
    takes = ("frames",)
    axis = 0

    def __init__(
        self, max_width: PositiveInt, masks: PositiveInt = 1, fill: Number | Literal["mean"] = MEAN, p: Unit = 1.0
    ):
        super().__init__(p)
        self.max_width, self.masks, self.fill = max_width, masks, fill

    def bands(self, shape: torch.Size, generator: torch.Generator) -> list[tuple[int, int, int]]:
        """The masks for features of `shape`, as (axis, start, width)."""
        u = torch.rand(2 * self.masks, generator=generator).tolist()
        size = shape[self.axis]
        return [(self.axis, *band(u[2 * k], u[2 * k + 1], size, self.max_width, least=1)) for k in range(self.masks)]

    def apply(self, features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        value = fill_value(features, self.fill)  # the clip's own mean, before any mask
        return masked(features, self.bands(features.shape, generator), value)


class TimeMask(Mask):
    """Mask `masks` spans of 1 to `max_width` frames (all bins), filled with `fill`."""

    axis = 0


class FrequencyMask(Mask):
    """Mask `masks` bands of 1 to `max_width` bins (all frames), filled with `fill`."""

    axis = 1


class TimeWarp(Augmentation):
    """Warp time about a centre frame (SpecAugment's time warping), keeping the length.

    The frame at `centre` moves to `centre + shift`: the frames before it are stretched (or
    squeezed) linearly onto [0, centre + shift], those after it onto the rest, both read by linear
    interpolation along time. With W = min(max_warp, (frames - 3) // 2), the draws after p are the
    centre (a uniform integer in [W + 1, frames - 2 - W]), then the shift (a uniform integer in
    [-W, W], never 0), so both parts keep a frame. A clip of under 5 frames is left as it is.
    """

    place = "features"
    takes = ("frames",)

    def __init__(self, max_warp: PositiveInt = 5, p: Unit = 1.0):
        super().__init__(p)
        self.max_warp = max_warp

    def warp(self, frames: int, generator: torch.Generator) -> tuple[int, int] | None:
        """(centre, shift) for a clip of `frames`, or None when it is too short to warp."""
        limit = min(self.max_warp, (frames - 3) // 2)
        if limit < 1:
            return None
        centre = draws.integer(limit + 1, frames - 2 - limit, generator)
        return centre, draws.nonzero(limit, generator)

    def apply(self, features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        frames = features.shape[0]
        drawn = self.warp(frames, generator)
        if drawn is None:
            return features
        centre, shift = drawn
        return read_at(features, warp_positions(frames, centre, centre + shift))


def warp_positions(frames: int, centre: int, target: int) -> torch.Tensor:
    """Where each output frame reads its input when input frame `centre` lands on `target`: the
    two parts either side map linearly, the first and last frames stay."""
    t = torch.arange(frames, dtype=torch.float64)
    last = frames - 1
    before = t * centre / target
    after = centre + (t - target) * (last - centre) / (last - target)
    return torch.where(t <= target, before, after)


def read_at(features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rows of `features` read at fractional `positions` by linear interpolation."""
    last = features.shape[0] - 1
    low = positions.floor().long().clamp(0, last)
    high = (low + 1).clamp(max=last)
    weight = (positions - low).clamp(0, 1).to(features.dtype).unsqueeze(-1)
    return features[low] * (1 - weight) + features[high] * weight
