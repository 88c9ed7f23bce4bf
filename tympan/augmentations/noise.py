"""Additive noise on the waveform at a signal-to-noise ratio drawn from a range."""

from __future__ import annotations

import math
from typing import Any

import torch

from tympan import audio
from tympan.augmentations.base import Augmentation, Number, ordered
from tympan.augmentations.sources import DEFAULT_ROOT, AudioFiles, Split
from tympan.components import PositiveInt, Unit
from tympan.errors import AudioError


def mix_at_snr(signal: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """`signal` plus `noise` scaled so that their power ratio is `snr_db`. A silent signal or
    silent noise leaves the signal as it is (no level to measure the ratio against)."""
    signal_power = float(signal.double().square().mean())
    noise_power = float(noise.double().square().mean())
    if signal_power == 0 or noise_power == 0:
        return signal
    scale = math.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return signal + scale * noise


class SnrNoise(Augmentation):
    """What the noises share: place waveform and an SNR drawn uniformly from a range."""

    place = "waveform"
    takes = ("waveform",)

    def __init__(self, min_snr_db: Number, max_snr_db: Number, p: Unit):
        super().__init__(p)
        self.min_snr_db, self.max_snr_db = min_snr_db, max_snr_db

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        ordered(args, "min_snr_db", "max_snr_db")

    def snr(self, generator: torch.Generator) -> float:
        return self.min_snr_db + float(torch.rand(1, generator=generator)) * (self.max_snr_db - self.min_snr_db)


class GaussianNoise(SnrNoise):
    """White Gaussian noise at an SNR drawn from [min_snr_db, max_snr_db] (draws: p, SNR, noise)."""

    def __init__(self, min_snr_db: Number = 10.0, max_snr_db: Number = 30.0, p: Unit = 1.0):
        super().__init__(min_snr_db, max_snr_db, p)

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        snr = self.snr(generator)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return mix_at_snr(x, noise, snr)


class BackgroundNoise(SnrNoise):
    """Noise from audio files, mixed in at an SNR drawn from [min_snr_db, max_snr_db].

    The files are a `folder` of your own, or a `source` dataset's (any corpus, e.g. the generated
    `ColouredNoise` or a corpus of scenes), fetched below `root` when training prepares this,
    optionally only its `splits` and the rows whose target is in `labels`
    (`tympan.augmentations.sources`). Each application picks a file, an SNR and a start, in that
    order after p; the noise is read circularly from the start, so a file shorter than the clip
    repeats. Files are decoded with tympan.audio at the clip's `sample_rate` (filled in from the
    features) when first used, and the last few are kept in memory.
    """

    cache_size = 16

    def __init__(
        self,
        folder: str | None = None,
        min_snr_db: Number = 0.0,
        max_snr_db: Number = 20.0,
        source: dict | None = None,
        splits: list[Split] | None = None,
        labels: list[str] | None = None,
        root: str = DEFAULT_ROOT,
        sample_rate: PositiveInt | None = None,
        p: Unit = 1.0,
    ):
        super().__init__(min_snr_db, max_snr_db, p)
        self.files = AudioFiles("noise", folder, source, splits, labels, root)
        self.sample_rate = sample_rate
        self._cache: dict[int, torch.Tensor] = {}

    def prepare(self) -> None:
        """Fetch the source (once), so building this at config load writes nothing."""
        self.files.prepare()

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        """A non-empty SNR range; a folder that holds audio, or a source dataset (not fetched yet:
        loading a config writes nothing)."""
        SnrNoise.check_together(args)
        AudioFiles.check(args, "noise")

    def noise(self, index: int) -> torch.Tensor:
        """File `index`'s samples at the clip's rate."""
        if index not in self._cache:
            if self.sample_rate is None:
                raise ValueError(
                    "BackgroundNoise needs the clip's sample_rate (filled in from the features, or in args)"
                )
            samples, _ = audio.load(self.files[index], self.sample_rate)
            if len(samples) == 0:
                raise AudioError(self.files[index], "no samples")
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[index] = torch.from_numpy(samples)
        return self._cache[index]

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = self.noise(int(torch.randint(0, len(self.files), (1,), generator=generator)))
        snr = self.snr(generator)
        start = int(torch.randint(0, len(noise), (1,), generator=generator))
        positions = (start + torch.arange(len(x))) % len(noise)
        return mix_at_snr(x, noise[positions].to(x.dtype), snr)
