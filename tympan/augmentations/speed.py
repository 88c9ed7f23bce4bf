"""Speed perturbation done on log-Mel features, so it works on offline features."""

from __future__ import annotations

import librosa
import numpy as np
import torch
import torch.nn.functional as F


class SpeedPerturb:
    """Play a clip `rate` times faster: shorter in time and higher in pitch, like resampling.

    A waveform sped up by `rate` has its frames squeezed by `rate` and every frequency
    multiplied by `rate`. On a Mel axis the second is a non-linear warp, applied here by
    reading each output bin at the fractional input bin of frequency f / rate.
    """

    def __init__(
        self,
        min_rate: float = 0.85,
        max_rate: float = 1.15,
        p: float = 1.0,
        n_mels: int = 64,
        fmin: float = 50.0,
        fmax: float = 8000.0,
    ):
        if not 0 < min_rate <= max_rate:
            raise ValueError(f"need 0 < min_rate <= max_rate, got {min_rate}, {max_rate}")
        self.min_rate, self.max_rate, self.p = min_rate, max_rate, p
        centers = librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax)[1:-1]
        self._centers = centers
        self._mel_centers = librosa.hz_to_mel(centers)

    def _source_bins(self, rate: float) -> torch.Tensor:
        source_mel = librosa.hz_to_mel(self._centers / rate)
        bins = np.interp(source_mel, self._mel_centers, np.arange(len(self._centers)))
        return torch.from_numpy(bins.astype(np.float32))

    def __call__(self, features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        draw = torch.rand(2, generator=generator)
        if draw[0] >= self.p:
            return features
        rate = self.min_rate + float(draw[1]) * (self.max_rate - self.min_rate)
        frames = max(1, round(features.shape[0] / rate))
        stretched = F.interpolate(features.T.unsqueeze(0), size=frames, mode="linear", align_corners=False)[0].T
        bins = self._source_bins(rate).clamp(0, features.shape[1] - 1)
        low = bins.floor().long()
        high = (low + 1).clamp(max=features.shape[1] - 1)
        weight = bins - low
        return stretched[:, low] * (1 - weight) + stretched[:, high] * weight
