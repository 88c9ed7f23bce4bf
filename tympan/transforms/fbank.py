"""Kaldi's filter-bank features (torchaudio.compliance.kaldi.fbank), the input of many speech models."""

from __future__ import annotations

import torch
from torchaudio.compliance import kaldi

from tympan import checks
from tympan.checks import _is_number
from tympan.transforms.mel import MAX_FFT
from tympan.transforms.spec import ShapeError, Spec, Transform
from tympan.transforms.waveform import check_rate

WINDOWS = ("povey", "hamming", "hanning", "rectangular", "blackman")


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
        num_mel_bins: int = 80,
        frame_length: float = 25.0,
        frame_shift: float = 10.0,
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        window_type: str = "povey",
        preemphasis_coefficient: float = 0.97,
        use_energy: bool = False,
        dither: float = 0.0,
        sample_rate: int = 16000,
    ):
        super().__init__()
        self.validate_args(
            num_mel_bins,
            frame_length,
            frame_shift,
            low_freq,
            high_freq,
            window_type,
            preemphasis_coefficient,
            use_energy,
            dither,
            sample_rate,
        )
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
    def validate_args(
        num_mel_bins,
        frame_length,
        frame_shift,
        low_freq,
        high_freq,
        window_type,
        preemphasis_coefficient,
        use_energy,
        dither,
        sample_rate=16000,
        **_,
    ) -> None:
        """Config load calls this too (through the pipeline, with the input's real rate); what
        kaldi.fbank would only assert when it first runs fails here, naming the value."""
        checks.positive_int("sample_rate", sample_rate)
        checks.positive_int("num_mel_bins", num_mel_bins)
        if num_mel_bins < 4:
            raise ValueError(f"num_mel_bins must be at least 4 (Kaldi's filter bank), got {num_mel_bins}")
        for name, ms in (("frame_length", frame_length), ("frame_shift", frame_shift)):
            if not _is_number(ms) or samples(ms, sample_rate) < 1:
                raise ValueError(
                    f"{name} must be a number of ms worth at least one sample at {sample_rate} Hz, got {ms!r}"
                )
        if samples(frame_length, sample_rate) < 2:
            raise ValueError(f"frame_length={frame_length} ms is less than 2 samples at {sample_rate} Hz")
        window = samples(frame_length, sample_rate)
        checks.at_most(
            "frame_length", frame_length, MAX_FFT * 1000 / sample_rate, f"{MAX_FFT} samples is the longest window"
        )
        checks.at_most("frame_shift", frame_shift, frame_length, "a shift longer than the frame skips samples")
        bins = 1 << ((window - 1).bit_length() - 1)  # Kaldi pads the window to a power of two: half of it are bins
        checks.at_most("num_mel_bins", num_mel_bins, bins, f"a {frame_length} ms frame gives {bins} frequency bins")
        nyquist = sample_rate / 2
        if not (_is_number(low_freq) and _is_number(high_freq)):
            raise ValueError(f"low_freq and high_freq must be numbers, got {low_freq!r}, {high_freq!r}")
        high = high_freq + nyquist if high_freq <= 0 else high_freq
        if not 0 <= low_freq < high <= nyquist:
            raise ValueError(
                f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist:g} Hz; high_freq <= 0 counts down from it), "
                f"got low_freq={low_freq!r}, high_freq={high_freq!r}"
            )
        if window_type not in WINDOWS:
            raise ValueError(f"unknown window_type {window_type!r}; expected one of {', '.join(WINDOWS)}")
        if not _is_number(preemphasis_coefficient) or not 0 <= preemphasis_coefficient <= 1:
            raise ValueError(f"preemphasis_coefficient must be a number in [0, 1], got {preemphasis_coefficient!r}")
        if not isinstance(use_energy, bool):
            raise ValueError(f"use_energy must be true or false, got {use_energy!r}")
        if dither != 0:
            raise ValueError(
                f"dither={dither!r} is refused: Kaldi's dither draws from torch's global generator, not the "
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
