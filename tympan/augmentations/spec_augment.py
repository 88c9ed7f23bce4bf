"""SpecAugment (Park et al., 2019): time and frequency masking of one clip's features."""

from __future__ import annotations

import torch


class SpecAugment:
    """Zero `time_masks` bands of up to `time_width` frames and `freq_masks` of up to `freq_width` bins.

    Masks are set to the clip's mean so that they carry no level information.
    """

    def __init__(
        self,
        time_masks: int = 2,
        time_width: int = 8,
        freq_masks: int = 2,
        freq_width: int = 8,
        p: float = 1.0,
    ):
        self.time_masks, self.time_width = time_masks, time_width
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.p = p

    def __call__(self, features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if float(torch.rand(1, generator=generator)) >= self.p:
            return features
        out = features.clone()
        fill = features.mean()
        for axis, count, width in ((0, self.time_masks, self.time_width), (1, self.freq_masks, self.freq_width)):
            size = out.shape[axis]
            for _ in range(count):
                w = int(torch.randint(0, min(width, size) + 1, (1,), generator=generator))
                start = int(torch.randint(0, size - w + 1, (1,), generator=generator))
                out.narrow(axis, start, w).fill_(fill)
        return out
