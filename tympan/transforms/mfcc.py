"""Mel-frequency cepstral coefficients (torchaudio's MFCC), frame by frame, with their deltas."""

from __future__ import annotations

from typing import Annotated, Any

import annotated_types as at
import torch
import torchaudio

from tympan.components import NonNegativeFloat, PositiveFloat, PositiveInt
from tympan.transforms.mel import FFTSize, check_band, check_stft_sizes, fixed_frames, stft_frames
from tympan.transforms.spec import Spec, Transform
from tympan.transforms.waveform import check_rate


class MFCC(Transform):
    """Waveform (samples,) -> MFCCs (frames, n_mfcc * (1 + deltas)): torchaudio's MFCC with time first.

    DCT type II with orthonormal scaling of the dB (or, with `log_mels`, natural-log) Mel
    spectrogram; a centred STFT, so a clip gives samples // hop_length + 1 frames. With `deltas`
    1 or 2, the coefficients' deltas (and delta-deltas, the deltas of the deltas) along time
    follow them on the feature axis: torchaudio's compute_deltas over `delta_win_length` frames
    (odd, at least 3), the ends padded by repeating the first and last frame. The pipeline fills in
    `sample_rate`. Bounds: n_fft <= 65536, n_mels <= n_fft // 2 + 1, hop_length <= n_fft (`mel.check_stft_sizes`).
    """

    takes = ("waveform",)

    def __init__(
        self,
        n_mfcc: PositiveInt = 40,
        n_fft: FFTSize = 400,
        hop_length: PositiveInt = 160,
        n_mels: PositiveInt = 64,
        f_min: NonNegativeFloat = 0.0,
        f_max: PositiveFloat | None = None,
        log_mels: bool = False,
        deltas: Annotated[int, at.Ge(0), at.Le(2)] = 0,
        delta_win_length: Annotated[int, at.Ge(3)] = 5,
        sample_rate: PositiveInt = 16000,
    ):
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length = sample_rate, n_fft, hop_length
        self.n_mfcc, self.deltas, self.delta_win_length = n_mfcc, deltas, delta_win_length
        melkwargs = {"n_fft": n_fft, "hop_length": hop_length, "n_mels": n_mels, "f_min": f_min, "f_max": f_max}
        self.mfcc = torchaudio.transforms.MFCC(sample_rate, n_mfcc=n_mfcc, log_mels=log_mels, melkwargs=melkwargs)

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        """The sizes and the band against each other (the band with the input's real rate: the
        pipeline fills in `sample_rate`), and a delta window centred on its frame."""
        n_mfcc, n_mels, window = args["n_mfcc"], args["n_mels"], args["delta_win_length"]
        check_stft_sizes(args["n_fft"], args["hop_length"], n_mels)
        if n_mfcc > n_mels:
            raise ValueError(f"n_mfcc={n_mfcc} is more than n_mels={n_mels}; the DCT cannot give more coefficients")
        check_band(args["f_min"], args["f_max"], args["sample_rate"])
        if window % 2 == 0:
            raise ValueError(f"delta_win_length must be an odd number of frames, at least 3, got {window}")

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
