"""The PANN log-Mel front end (torchlibrosa), the features PANN models were trained on."""

from __future__ import annotations

import torch
from torch import nn
from torchlibrosa.stft import LogmelFilterBank, Spectrogram

from tympan import checks


class PannLogMel(nn.Module):
    """Waveform (batch, samples) at `sample_rate` -> log-Mel (batch, frames, n_mels) in dB.

    Defaults are the PANN 16 kHz pipeline: Hann window 512, hop 160, 64 bins, 50-8000 Hz.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        hop_length: int = 160,
        n_mels: int = 64,
        fmin: float = 50.0,
        fmax: float = 8000.0,
    ):
        super().__init__()
        self.validate_args(sample_rate, n_fft, hop_length, n_mels, fmin, fmax)
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.spectrogram = Spectrogram(n_fft=n_fft, hop_length=hop_length, win_length=n_fft)
        self.logmel = LogmelFilterBank(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, top_db=None)

    @staticmethod
    def validate_args(sample_rate, n_fft, hop_length, n_mels, fmin, fmax, **_) -> None:
        """Config load calls this too, so a bad value fails before any audio is read."""
        sizes = {"sample_rate": sample_rate, "n_fft": n_fft, "hop_length": hop_length, "n_mels": n_mels}
        for name, value in sizes.items():
            checks.positive_int(name, value)
        checks.frequency_range(fmin, fmax, sample_rate)

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        # torchlibrosa returns (batch, 1, frames, n_mels)
        return self.logmel(self.spectrogram(waveform)).squeeze(1)
