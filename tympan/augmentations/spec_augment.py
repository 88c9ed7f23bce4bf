"""SpecAugment (Park et al., 2019): time and frequency masking of one clip's features."""

from __future__ import annotations

import torch


class SpecAugment:
    """Mask `time_masks` bands of up to `time_width` frames and `freq_masks` of up to `freq_width` bins.

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
        # one draw for everything: a width and a start per mask
        draws = torch.rand(1 + 2 * (self.time_masks + self.freq_masks), generator=generator).tolist()
        if draws[0] >= self.p:
            return features
        out = features.clone()
        fill = float(features.mean())
        masks = [(0, self.time_width)] * self.time_masks + [(1, self.freq_width)] * self.freq_masks
        for k, (axis, max_width) in enumerate(masks):
            size = out.shape[axis]
            width = int(draws[1 + 2 * k] * (min(max_width, size) + 1))
            start = int(draws[2 + 2 * k] * (size - width + 1))
            out.narrow(axis, start, width).fill_(fill)
        return out
