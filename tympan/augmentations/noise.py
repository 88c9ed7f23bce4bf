"""Additive noise on the waveform at a signal-to-noise ratio drawn from a range."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from tympan import audio
from tympan.augmentations.base import Augmentation, Number, ordered
from tympan.components import PositiveInt, Unit
from tympan.datasets.noise import build_source
from tympan.errors import AudioError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")


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


def noise_files(folder, what: str = "noise", first: bool = False) -> list[Path]:
    """The audio files under `folder` (recursively, sorted so picks are reproducible); errors call
    it a `what` folder. With `first`, just the first found: enough to check a folder cheaply."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{what} folder {root}: {'not a directory' if root.exists() else 'no such directory'}")
    found = (p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    files = [file for file in [next(found, None)] if file] if first else sorted(found)
    if not files:
        raise ValueError(f"{what} folder {root} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return files


class BackgroundNoise(SnrNoise):
    """Noise from a folder of audio files, mixed in at an SNR drawn from [min_snr_db, max_snr_db].

    Each application picks a file, an SNR and a start, in that order after p; the noise is read
    circularly from the start, so a file shorter than the clip repeats. Files are decoded with
    tympan.audio at the clip's `sample_rate` (filled in from the features) when first used, and the
    last few are kept in memory.

    `source` (a noise corpus, `{target: tympan.datasets.noise:ColouredNoise, args: {...}}`) fills
    `folder` when training prepares it (`prepare`), unless the folder already holds that corpus:
    an experiment that names one needs no folder made by hand, wherever it trains.
    """

    cache_size = 16

    def __init__(
        self,
        folder: str,
        min_snr_db: Number = 0.0,
        max_snr_db: Number = 20.0,
        source: dict | None = None,
        sample_rate: PositiveInt | None = None,
        p: Unit = 1.0,
    ):
        super().__init__(min_snr_db, max_snr_db, p)
        self.folder, self.source = folder, build_source(source) if source is not None else None
        self._files = None if self.source else noise_files(folder)
        self.sample_rate = sample_rate
        self._cache: dict[int, torch.Tensor] = {}

    def prepare(self) -> None:
        """Fetch the source into the folder (once), so building this at config load writes nothing."""
        if self._files is None:
            self.source.fetch(self.folder)
            self._files = noise_files(self.folder)

    @property
    def files(self) -> list[Path]:
        self.prepare()
        return self._files

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        """The folder holds audio, or a source will fill it (not made yet: loading a config writes nothing)."""
        SnrNoise.check_together(args)
        if args["source"] is None:
            noise_files(args["folder"], first=True)
        else:
            build_source(args["source"])

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
