"""Speed perturbation done on log-Mel features, so it works on offline features."""

from __future__ import annotations

from typing import Any

import librosa
import numpy as np
import torch

from tympan.augmentations.base import Augmentation, ordered
from tympan.components import NonNegativeFloat, PositiveFloat, PositiveInt, Unit
from tympan.transforms.spec import ShapeError, Spec


def interpolation_matrix(positions: np.ndarray, size: int) -> np.ndarray:
    """A (len(positions), size) matrix whose product with a (size, ...) array reads it
    by linear interpolation at the fractional `positions` (clamped to the ends)."""
    positions = np.clip(positions, 0, size - 1)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    weight = (positions - low).astype(np.float32)
    matrix = np.zeros((len(positions), size), np.float32)
    rows = np.arange(len(positions))
    np.add.at(matrix, (rows, low), 1 - weight)
    np.add.at(matrix, (rows, high), weight)
    return matrix


class SpeedPerturb(Augmentation):
    """Play a clip `rate` times faster: shorter in time and higher in pitch, like resampling.

    A waveform sped up by `rate` has its frames squeezed by `rate` and every frequency
    multiplied by `rate`. On a Mel axis the second is a non-linear warp, applied here by
    reading each output bin at the fractional input bin of frequency f / rate. Both are
    linear interpolations, so the whole perturbation is two small matrix products.
    The Mel scale (`n_mels`, `fmin`, `fmax`) is taken from the features config. After the p
    draw, one draw gives the rate.
    """

    place = "features"
    takes = ("frames",)

    def __init__(
        self,
        min_rate: PositiveFloat = 0.85,
        max_rate: PositiveFloat = 1.15,
        p: Unit = 1.0,
        n_mels: PositiveInt = 64,
        fmin: NonNegativeFloat = 50.0,
        fmax: PositiveFloat = 8000.0,
    ):
        super().__init__(p)
        self.min_rate, self.max_rate = min_rate, max_rate
        self._centers = librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax)[1:-1]
        self._mel_centers = librosa.hz_to_mel(self._centers)

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        ordered(args, "min_rate", "max_rate")
        if args["fmin"] >= args["fmax"]:
            raise ValueError(f"need fmin < fmax, got {args['fmin']!r}, {args['fmax']!r}")

    def check(self, spec: Spec) -> None:
        """Frames with as many bins as the Mel scale this was built for."""
        super().check(spec)
        if spec.size != len(self._centers):
            raise ShapeError(f"SpeedPerturb is built for {len(self._centers)} Mel bins, but gets {spec.describe()}")

    def _frequency_matrix(self, rate: float) -> np.ndarray:
        source_mel = librosa.hz_to_mel(self._centers / rate)
        bins = np.interp(source_mel, self._mel_centers, np.arange(len(self._centers)))
        return interpolation_matrix(bins, len(self._centers))

    def apply(self, features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        rate = self.min_rate + float(torch.rand(1, generator=generator)) * (self.max_rate - self.min_rate)
        length = features.shape[0]
        frames = max(1, round(length / rate))
        # frame centres of the output, in input frames (half-pixel convention)
        positions = (np.arange(frames) + 0.5) * (length / frames) - 0.5
        in_time = torch.from_numpy(interpolation_matrix(positions, length))
        in_frequency = torch.from_numpy(self._frequency_matrix(rate).T.copy())
        return in_time @ features @ in_frequency


class WaveformSpeed(Augmentation):
    """Play a waveform `rate` times faster (shorter and higher, as a tape played fast): the clip is
    read at `rate`-spaced positions by linear interpolation. Draws: p, then the rate."""

    place = "waveform"
    takes = ("waveform",)

    def __init__(self, min_rate: PositiveFloat = 0.85, max_rate: PositiveFloat = 1.15, p: Unit = 1.0):
        super().__init__(p)
        self.min_rate, self.max_rate = min_rate, max_rate

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        ordered(args, "min_rate", "max_rate")

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        rate = self.min_rate + float(torch.rand(1, generator=generator)) * (self.max_rate - self.min_rate)
        length = max(1, round(len(x) / rate))
        return torch.nn.functional.interpolate(x[None, None], size=length, mode="linear", align_corners=False)[0, 0]
