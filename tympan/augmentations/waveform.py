"""Waveform augmentations of one clip (samples,): time shift, gain, polarity inversion and pitch
shift. Each keeps the clip's length; WaveformSpeed (speed.py) is the one that changes it."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Annotated, Any

import annotated_types as at
import torch
import torchaudio.functional as AF

from tympan.augmentations import draws
from tympan.augmentations.base import Augmentation, Number, ordered
from tympan.components import PositiveFloat, PositiveInt, Unit

Fraction01 = Annotated[float, at.Gt(0), at.Le(1)]  # a share of the clip, all of it included
Semitones = Annotated[float, at.Ge(-24), at.Le(24)]  # within two octaves either way


def needs_rate(augmentation: Augmentation, sample_rate: int | None) -> int:
    """The clip's sample rate, which the features fill in (or args set)."""
    if sample_rate is None:
        name = type(augmentation).__name__
        raise ValueError(f"{name} needs the clip's sample_rate (filled in from the features, or in args)")
    return sample_rate


class WaveformAugmentation(Augmentation):
    """Acts on one clip's samples, before the features are computed."""

    place = "waveform"
    takes = ("waveform",)


class TimeShift(WaveformAugmentation):
    """Shift the clip in time by up to `max_seconds` or up to `max_fraction` of its length (give
    one), later (positive) or earlier (negative). What moves past an end comes back at the other
    (`rollover`) or is dropped, the gap filled with silence. After the p draw, one draw: the shift
    in samples, a uniform integer in [-most, most] other than 0 (most is below the clip's length)."""

    def __init__(
        self,
        max_seconds: PositiveFloat | None = None,
        max_fraction: Fraction01 | None = None,
        rollover: bool = False,
        sample_rate: PositiveInt | None = None,
        p: Unit = 1.0,
    ):
        super().__init__(p)
        self.max_seconds, self.max_fraction, self.rollover = max_seconds, max_fraction, rollover
        self.sample_rate = sample_rate

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        seconds, fraction = args["max_seconds"], args["max_fraction"]
        if (seconds is None) == (fraction is None):
            raise ValueError(f"give one of max_seconds or max_fraction, got {seconds!r} and {fraction!r}")

    def most(self, length: int) -> int:
        """The largest shift, in samples, for a clip of `length`."""
        if self.max_fraction is not None:
            most = int(self.max_fraction * length)
        else:
            most = round(self.max_seconds * needs_rate(self, self.sample_rate))
        return min(most, length - 1)

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        most = self.most(len(x))
        if most < 1:
            return x  # one sample, or a fraction too small to move it
        return shift(x, draws.nonzero(most, generator), self.rollover)


def shift(x: torch.Tensor, samples: int, rollover: bool) -> torch.Tensor:
    """`x` moved later by `samples` (earlier when negative), rolled round or filled with silence."""
    if rollover:
        return torch.roll(x, samples)
    out = torch.zeros_like(x)
    if samples > 0:
        out[samples:] = x[:-samples]
    else:
        out[:samples] = x[-samples:]
    return out


class Gain(WaveformAugmentation):
    """Multiply the clip by a gain drawn uniformly in [min_db, max_db] decibels (one draw after p).
    Nothing is clipped: a float waveform may leave [-1, 1]."""

    def __init__(self, min_db: Number = -6.0, max_db: Number = 6.0, p: Unit = 1.0):
        super().__init__(p)
        self.min_db, self.max_db = min_db, max_db

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        ordered(args, "min_db", "max_db")

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x * 10 ** (draws.uniform(self.min_db, self.max_db, generator) / 20)


class PolarityInversion(WaveformAugmentation):
    """Negate the samples (it sounds the same; the model should not care). Draws only p."""

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return -x


class PitchShift(WaveformAugmentation):
    """Raise or lower the pitch by a number of semitones drawn uniformly in [min_semitones,
    max_semitones] (one draw after p), keeping the length and the tempo.

    Like torchaudio.functional.pitch_shift, the clip is stretched in time by the pitch factor
    (phase vocoder, 512-point STFT, hop 128) and resampled back to its length, with two changes.
    The factor 2 ** (semitones / 12) is rounded to a multiple of 1/200 (within 5 cents), so the
    resampling ratio has small terms: torchaudio resamples by sample_rate / rate as drawn (e.g.
    17959 to 16000 Hz), which takes seconds per clip; this takes milliseconds. And the STFT pads
    the ends with zeros, not by reflection: a reflected first frame starts the vocoder's phases
    out of step between bins, which cancels much of the sound (a 440 Hz tone raised 2 semitones
    kept 37% of its energy that way, 83% this way). As with any plain phase vocoder, the level
    may drop (FSDD speech 2 semitones up or down: by 1 to 4 dB). Both ratios are in samples, so
    no sample rate is needed. A clip of 256 samples or fewer is left as it is.
    """

    n_fft = 512
    steps = 200  # the factor is a multiple of 1 / steps

    def __init__(self, min_semitones: Semitones = -2.0, max_semitones: Semitones = 2.0, p: Unit = 1.0):
        super().__init__(p)
        self.min_semitones, self.max_semitones = min_semitones, max_semitones

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        ordered(args, "min_semitones", "max_semitones")

    def factor(self, semitones: float) -> Fraction:
        """The pitch factor for `semitones`, as a fraction with a small denominator."""
        return Fraction(round(2 ** (semitones / 12) * self.steps), self.steps)

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        factor = self.factor(draws.uniform(self.min_semitones, self.max_semitones, generator))
        if len(x) <= self.n_fft // 2:
            return x
        return pitch_shift(x, factor, self.n_fft)


def pitch_shift(x: torch.Tensor, factor: Fraction, n_fft: int = 512) -> torch.Tensor:
    """`x` with every frequency times `factor`, as long as it was: stretched `factor` times longer
    (phase vocoder), then resampled by 1 / `factor`."""
    hop = n_fft // 4
    window = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)
    spectrum = torch.stft(x, n_fft, hop, window=window, pad_mode="constant", return_complex=True)
    advance = torch.linspace(0, math.pi * hop, spectrum.shape[-2], dtype=x.dtype, device=x.device)[..., None]
    stretched = AF.phase_vocoder(spectrum, float(1 / factor), advance)
    longer = torch.istft(stretched, n_fft, hop, window=window, length=round(len(x) * factor))
    out = AF.resample(longer, factor.numerator, factor.denominator)
    return torch.nn.functional.pad(out[: len(x)], (0, max(0, len(x) - len(out))))
