"""SpecAugment (Park et al., 2019): time and frequency masking of one clip's features."""

from __future__ import annotations

import torch

from tympan.augmentations.base import Augmentation
from tympan.augmentations.masking import band, masked
from tympan.components import NonNegativeInt, Unit


class SpecAugment(Augmentation):
    """Mask `time_masks` bands of up to `time_width` frames and `freq_masks` of up to `freq_width` bins.

    Masks are set to the clip's mean so that they carry no level information. After the p draw,
    one draw of two numbers per mask (its width, uniform in [0, the max], then its start), time
    masks first. TimeMask and FrequencyMask (masking.py) are its parts, with widths from 1.
    """

    place = "features"
    takes = ("frames",)

    def __init__(
        self,
        time_masks: NonNegativeInt = 2,
        time_width: NonNegativeInt = 8,
        freq_masks: NonNegativeInt = 2,
        freq_width: NonNegativeInt = 8,
        p: Unit = 1.0,
    ):
        super().__init__(p)
        self.time_masks, self.time_width = time_masks, time_width
        self.freq_masks, self.freq_width = freq_masks, freq_width

    def masks(self, shape: tuple[int, int], generator: torch.Generator) -> list[tuple[int, int, int]]:
        """The masks for features of `shape` (frames, bins), as (axis, start, width)."""
        u = torch.rand(2 * (self.time_masks + self.freq_masks), generator=generator).tolist()
        widths = [(0, self.time_width)] * self.time_masks + [(1, self.freq_width)] * self.freq_masks
        return [(axis, *band(u[2 * k], u[2 * k + 1], shape[axis], most)) for k, (axis, most) in enumerate(widths)]

    def apply(self, features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return masked(features, self.masks(features.shape, generator), float(features.mean()))
