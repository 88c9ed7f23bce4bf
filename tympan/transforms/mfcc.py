"""Mel-frequency cepstral coefficients (torchaudio's MFCC), frame by frame, with their deltas."""

from __future__ import annotations

import torch
import torchaudio

from tympan import checks
from tympan.transforms.mel import check_band, check_stft_sizes, fixed_frames, stft_frames
from tympan.transforms.spec import Spec, Transform
from tympan.transforms.waveform import check_rate


class MFCC(Transform):
    """Waveform (samples,) -> MFCCs (frames, n_mfcc * (1 + deltas)): torchaudio's MFCC with time first.

    DCT type II with orthonormal scaling of the dB (or, with `log_mels`, natural-log) Mel
    spectrogram; a centred STFT, so a clip gives samples // hop_length + 1 frames. With `deltas`
    1 or 2, the coefficients' deltas (and delta-deltas, the deltas of the deltas) along time
    follow them on the feature axis: torchaudio's compute_deltas over `delta_win_length` frames,
    the ends padded by repeating the first and last frame. The pipeline fills in `sample_rate`.
    Bounds: n_fft <= 65536, n_mels <= n_fft // 2 + 1, hop_length <= n_fft (`mel.check_stft_sizes`).
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
        deltas: int = 0,
        delta_win_length: int = 5,
        sample_rate: int = 16000,
    ):
        super().__init__()
        self.validate_args(
            n_mfcc, n_fft, hop_length, n_mels, f_min, f_max, log_mels, deltas, delta_win_length, sample_rate
        )
        self.sample_rate, self.n_fft, self.hop_length = sample_rate, n_fft, hop_length
        self.n_mfcc, self.deltas, self.delta_win_length = n_mfcc, deltas, delta_win_length
        melkwargs = {"n_fft": n_fft, "hop_length": hop_length, "n_mels": n_mels, "f_min": f_min, "f_max": f_max}
        self.mfcc = torchaudio.transforms.MFCC(sample_rate, n_mfcc=n_mfcc, log_mels=log_mels, melkwargs=melkwargs)

    @staticmethod
    def validate_args(
        n_mfcc, n_fft, hop_length, n_mels, f_min, f_max, log_mels, deltas=0, delta_win_length=5, sample_rate=16000, **_
    ) -> None:
        """Config load calls this too (through the pipeline, with the input's real rate)."""
        sizes = {"n_mfcc": n_mfcc, "n_fft": n_fft, "hop_length": hop_length, "n_mels": n_mels}
        for name, value in {**sizes, "sample_rate": sample_rate}.items():
            checks.positive_int(name, value)
        check_stft_sizes(n_fft, hop_length, n_mels)
        if n_mfcc > n_mels:
            raise ValueError(f"n_mfcc={n_mfcc} is more than n_mels={n_mels}; the DCT cannot give more coefficients")
        if not isinstance(log_mels, bool):
            raise ValueError(f"log_mels must be true or false, got {log_mels!r}")
        check_band(f_min, f_max, sample_rate)
        if type(deltas) is not int or deltas not in (0, 1, 2):
            raise ValueError(f"deltas must be 0, 1 (deltas) or 2 (deltas and delta-deltas), got {deltas!r}")
        checks.positive_int("delta_win_length", delta_win_length)
        if delta_win_length < 3 or delta_win_length % 2 == 0:
            raise ValueError(f"delta_win_length must be an odd number of frames, at least 3, got {delta_win_length}")

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        check_rate(self, self.sample_rate, spec)
        return Spec(
            "frames",
            spec.sample_rate,
            frame_rate=self.sample_rate / self.hop_length,
            size=self.n_mfcc * (1 + self.deltas),
            length=fixed_frames(self, spec, self.n_fft, self.hop_length),
        )

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        stft_frames(self, x.shape[-1], self.n_fft, self.hop_length)
        coefficients = [self.mfcc(x)]  # (n_mfcc, frames)
        for _ in range(self.deltas):
            coefficients.append(torchaudio.functional.compute_deltas(coefficients[-1], self.delta_win_length))
        return torch.cat(coefficients, dim=-2).transpose(-1, -2)
