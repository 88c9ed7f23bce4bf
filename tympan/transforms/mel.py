"""Mel spectrograms (torchaudio's MelSpectrogram), time first, optionally in decibels; and the
checks every centred-STFT transform shares (its band, its sizes' bounds, the shortest clip it can take)."""

from __future__ import annotations

from typing import Annotated, Any

import annotated_types as at
import torch
import torchaudio

from tympan import checks
from tympan.components import NonNegativeFloat, PositiveFloat, PositiveInt
from tympan.transforms.db import AmplitudeToDB
from tympan.transforms.spec import ShapeError, Spec, Transform
from tympan.transforms.waveform import check_rate

MAX_FFT = 1 << 16  # samples of one STFT window at most: 4 s at 16 kHz, far past any spectrogram's
FFTSize = Annotated[int, at.Gt(0), at.Le(MAX_FFT)]  # longer is no spectrogram (and allocates without bound)


def check_stft_sizes(n_fft: int, hop_length: int, n_mels: int, window: int | None = None) -> None:
    """Bounds of a Mel STFT's sizes that relate them (all positive integers already): at most one
    Mel band per frequency bin (n_fft // 2 + 1; more gives all-zero bands), and a hop no longer
    than the window (`window`, default n_fft), so that every sample lies in some frame."""
    bins = n_fft // 2 + 1
    checks.at_most("n_mels", n_mels, bins, f"n_fft={n_fft} gives {bins} frequency bins, and each Mel band needs one")
    frame = window or n_fft
    checks.at_most("hop_length", hop_length, frame, f"a hop longer than the window ({frame}) skips samples")


def check_band(
    f_min: float, f_max: float | None, sample_rate: int, names: tuple[str, str] = ("f_min", "f_max")
) -> None:
    """0 <= f_min < f_max <= Nyquist, where f_max None means the Nyquist frequency (each a number
    already); `names` are the arguments' names in the messages."""
    low, high = names
    top = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < top:
        raise ValueError(
            f"{low} and {high} must be numbers with 0 <= {low} < {high}, got {low}={f_min!r}, {high}={f_max!r}"
        )
    if top > sample_rate / 2:
        raise ValueError(f"{high}={f_max} is above the Nyquist frequency of {sample_rate} Hz")


def stft_frames(transform: Transform, samples: int, n_fft: int, hop_length: int) -> int:
    """How many frames a centred STFT gives for `samples`: its reflect padding of n_fft // 2 on
    each side needs more samples than that, so a shorter clip is a ValueError naming its length."""
    if samples <= n_fft // 2:
        raise ValueError(
            f"{type(transform).__name__} needs a clip longer than n_fft // 2 = {n_fft // 2} samples "
            f"(its centred STFT pads by that much), got {samples}"
        )
    return samples // hop_length + 1


def fixed_frames(transform: Transform, spec: Spec, n_fft: int, hop_length: int) -> int | None:
    """The frames of every clip when the input waveform has a fixed length; a ShapeError if it is too short."""
    if spec.length is None:
        return None
    try:
        return stft_frames(transform, spec.length, n_fft, hop_length)
    except ValueError as exc:
        raise ShapeError(f"{exc}: its input is {spec.describe()}") from None


class MelSpectrogram(Transform):
    """Waveform (samples,) -> Mel spectrogram (frames, n_mels): torchaudio's MelSpectrogram, transposed.

    A centred STFT (reflect padding, Hann window of `win_length`, default n_fft), so a clip of n
    samples gives n // hop_length + 1 frames; torchaudio's HTK Mel scale without filter norm.
    `power` 2 gives power, 1 magnitude. With `db`, AmplitudeToDB turns it into decibels (power or
    magnitude as `power` says; `top_db` below the clip's maximum at most, when set). The pipeline
    fills in `sample_rate` from its input. Bounds: n_fft <= 65536, and (`check_stft_sizes`) n_mels <=
    n_fft // 2 + 1, hop_length <= win_length (default n_fft).
    """

    takes = ("waveform",)

    def __init__(
        self,
        n_fft: FFTSize = 400,
        win_length: PositiveInt | None = None,
        hop_length: PositiveInt = 160,
        n_mels: PositiveInt = 64,
        f_min: NonNegativeFloat = 0.0,
        f_max: PositiveFloat | None = None,
        power: PositiveFloat = 2.0,
        db: bool = False,
        top_db: PositiveFloat | None = None,
        sample_rate: PositiveInt = 16000,
    ):
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            power=power,
        )
        self.db = AmplitudeToDB("power" if power == 2 else "magnitude", top_db) if db else None

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        """The sizes, the band and the decibel settings against each other (the band with the input's
        real rate: the pipeline fills in `sample_rate`)."""
        n_fft, win_length, power = args["n_fft"], args["win_length"], args["power"]
        if win_length is not None and win_length > n_fft:
            raise ValueError(f"win_length={win_length} is longer than n_fft={n_fft}")
        check_stft_sizes(n_fft, args["hop_length"], args["n_mels"], win_length)
        check_band(args["f_min"], args["f_max"], args["sample_rate"])
        if args["db"] and power not in (1, 2):
            raise ValueError(f"db: true needs power 1 (magnitude) or 2 (power), got power={power!r}")
        if args["top_db"] is not None and not args["db"]:
            raise ValueError(f"top_db={args['top_db']!r} limits decibels: it needs db: true")

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        check_rate(self, self.sample_rate, spec)
        length = fixed_frames(self, spec, self.n_fft, self.hop_length)
        return Spec("frames", spec.sample_rate, self.sample_rate / self.hop_length, self.n_mels, length=length)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        stft_frames(self, x.shape[-1], self.n_fft, self.hop_length)
        mel = self.mel(x).transpose(-1, -2)
        return mel if self.db is None else self.db(mel)
