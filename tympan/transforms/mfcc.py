"""Mel-frequency cepstral coefficients (torchaudio's MFCC), frame by frame."""

from __future__ import annotations

import torch
import torchaudio

from tympan import checks
from tympan.transforms.spec import Spec, Transform
from tympan.transforms.waveform import check_rate


class MFCC(Transform):
    """Waveform (samples,) -> MFCCs (frames, n_mfcc): torchaudio's MFCC with time first.

    DCT type II with orthonormal scaling of the dB (or, with `log_mels`, natural-log) Mel
    spectrogram; a centred STFT, so a clip gives samples // hop_length + 1 frames. The pipeline
    fills in `sample_rate` from its input.
    """

    takes = ("waveform",)

    def __init__(
        self,
        n_mfcc: int = 40,
        n_fft: int = 400,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        log_mels: bool = False,
        sample_rate: int = 16000,
    ):
        super().__init__()
        self.validate_args(n_mfcc, n_fft, hop_length, n_mels, f_min, f_max, log_mels, sample_rate)
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.n_mfcc = n_mfcc
        melkwargs = {"n_fft": n_fft, "hop_length": hop_length, "n_mels": n_mels, "f_min": f_min, "f_max": f_max}
        self.mfcc = torchaudio.transforms.MFCC(sample_rate, n_mfcc=n_mfcc, log_mels=log_mels, melkwargs=melkwargs)

    @staticmethod
    def validate_args(n_mfcc, n_fft, hop_length, n_mels, f_min, f_max, log_mels, sample_rate=16000, **_) -> None:
        """Config load calls this too, so a bad value fails before any audio is read."""
        sizes = {"n_mfcc": n_mfcc, "n_fft": n_fft, "hop_length": hop_length, "n_mels": n_mels}
        for name, value in {**sizes, "sample_rate": sample_rate}.items():
            checks.positive_int(name, value)
        if n_mfcc > n_mels:
            raise ValueError(f"n_mfcc={n_mfcc} is more than n_mels={n_mels}; the DCT cannot give more coefficients")
        if not isinstance(log_mels, bool):
            raise ValueError(f"log_mels must be true or false, got {log_mels!r}")
        top = sample_rate / 2 if f_max is None else f_max
        if (
            not all(isinstance(f, int | float) and not isinstance(f, bool) for f in (f_min, top))
            or not 0 <= f_min < top
        ):
            raise ValueError(
                f"f_min and f_max must be numbers with 0 <= f_min < f_max, got f_min={f_min!r}, f_max={f_max!r}"
            )
        if top > sample_rate / 2:
            raise ValueError(f"f_max={f_max} is above the Nyquist frequency of {sample_rate} Hz")

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        check_rate(self, self.sample_rate, spec)
        return Spec("frames", spec.sample_rate, frame_rate=self.sample_rate / self.hop_length, size=self.n_mfcc)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mfcc(x).transpose(-1, -2)
