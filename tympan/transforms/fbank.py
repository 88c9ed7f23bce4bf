"""Kaldi's filter-bank features (torchaudio.compliance.kaldi.fbank), the input of many speech models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import annotated_types as at
import torch
from torchaudio.compliance import kaldi

from tympan import checks
from tympan.components import NonNegativeFloat, PositiveFloat, PositiveInt, Unit
from tympan.transforms.mel import MAX_FFT
from tympan.transforms.spec import ShapeError, Spec, Transform
from tympan.transforms.waveform import check_rate

Window = Literal["povey", "hamming", "hanning", "rectangular", "blackman"]


def samples(ms: float, sample_rate: int) -> int:
    """A duration in ms as Kaldi counts it in samples (truncated)."""
    return int(sample_rate * ms * 0.001)


class KaldiFbank(Transform):
    """Waveform (samples,) -> log Mel filter banks (frames, num_mel_bins [+ 1 with use_energy]).

    torchaudio's port of Kaldi's compute-fbank-feats, on the float samples as they are (Kaldi
    itself reads 16-bit integers, so its values are offset by log(32768^2) per bin). Frames of
    `frame_length` ms every `frame_shift` ms, only whole frames (Kaldi's snip_edges), so a clip of
    n samples gives 1 + (n - window) // shift frames and one shorter than a frame is an error;
    the frame rate is sample_rate / shift samples (1000 / frame_shift when that is whole).
    `high_freq` <= 0 counts down from the Nyquist frequency, as in Kaldi. `dither` must stay 0:
    Kaldi's dither draws from torch's global generator, not the run's seed, so features would
    change from run to run (add noise with an augmentation instead). The pipeline fills in
    `sample_rate`. Bounds: a frame of at most 65536 samples, frame_shift <= frame_length, and
    num_mel_bins at most the frame's frequency bins (half its length rounded up to a power of two).
    """

    takes = ("waveform",)

    def __init__(
        self,
        num_mel_bins: Annotated[int, at.Ge(4)] = 80,  # Kaldi's filter bank needs at least 4
        frame_length: PositiveFloat = 25.0,
        frame_shift: PositiveFloat = 10.0,
        low_freq: NonNegativeFloat = 20.0,
        high_freq: float = 0.0,
        window_type: Window = "povey",
        preemphasis_coefficient: Unit = 0.97,
        use_energy: bool = False,
        dither: float = 0.0,
        sample_rate: PositiveInt = 16000,
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.window = samples(frame_length, sample_rate)
        self.shift = samples(frame_shift, sample_rate)
        self.size = num_mel_bins + int(use_energy)
        self.options = {
            "num_mel_bins": num_mel_bins,
            "frame_length": float(frame_length),
            "frame_shift": float(frame_shift),
            "low_freq": float(low_freq),
            "high_freq": float(high_freq),
            "window_type": window_type,
            "preemphasis_coefficient": float(preemphasis_coefficient),
            "use_energy": use_energy,
            "dither": 0.0,
            "sample_frequency": float(sample_rate),
        }

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        """The frame in samples at the input's real rate (the pipeline fills in `sample_rate`), the
        bins it gives, the band, and dither: what kaldi.fbank would only assert when it first runs
        fails here, naming the value."""
        rate, length, shift = args["sample_rate"], args["frame_length"], args["frame_shift"]
        for name, ms in (("frame_length", length), ("frame_shift", shift)):
            if samples(ms, rate) < 1:
                raise ValueError(f"{name} must be a number of ms worth at least one sample at {rate} Hz, got {ms!r}")
        window = samples(length, rate)
        if window < 2:
            raise ValueError(f"frame_length={length} ms is less than 2 samples at {rate} Hz")
        checks.at_most("frame_length", length, MAX_FFT * 1000 / rate, f"{MAX_FFT} samples is the longest window")
        checks.at_most("frame_shift", shift, length, "a shift longer than the frame skips samples")
        bins = 1 << ((window - 1).bit_length() - 1)  # Kaldi pads the window to a power of two: half of it are bins
        checks.at_most("num_mel_bins", args["num_mel_bins"], bins, f"a {length} ms frame gives {bins} frequency bins")
        nyquist, low, high = rate / 2, args["low_freq"], args["high_freq"]
        if not low < (high + nyquist if high <= 0 else high) <= nyquist:
            raise ValueError(
                f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist:g} Hz; high_freq <= 0 counts down from it), "
                f"got low_freq={low!r}, high_freq={high!r}"
            )
        if args["dither"] != 0:
            raise ValueError(
                f"dither={args['dither']!r} is refused: Kaldi's dither draws from torch's global generator, not the "
                "run's seed, so features would differ per run; keep 0.0 and add noise with an augmentation"
            )

    def frames(self, n: int) -> int:
        """How many frames a clip of `n` samples gives; ValueError for one shorter than a frame."""
        if n < self.window:
            raise ValueError(
                f"KaldiFbank needs a clip of at least one frame ({self.window} samples at {self.sample_rate} Hz), "
                f"got {n} samples"
            )
        return 1 + (n - self.window) // self.shift

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        check_rate(self, self.sample_rate, spec)
        length = None
        if spec.length is not None:
            try:
                length = self.frames(spec.length)
            except ValueError as exc:
                raise ShapeError(f"{exc}: its input is {spec.describe()}") from None
        return Spec("frames", spec.sample_rate, self.sample_rate / self.shift, self.size, length=length)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        self.frames(x.shape[-1])
        return kaldi.fbank(x.unsqueeze(0), **self.options)
