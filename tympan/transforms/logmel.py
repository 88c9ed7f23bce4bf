"""The PANN log-Mel front end (torchlibrosa), the features PANN models were trained on."""

from __future__ import annotations

import torch
from torchlibrosa.stft import LogmelFilterBank, Spectrogram

from tympan import checks
from tympan.transforms.spec import ShapeError, Spec, Transform
from tympan.transforms.waveform import check_rate


class PannLogMel(Transform):
    """Waveform (samples,) -> log-Mel (frames, n_mels) in dB; a batch (B, samples) gives (B, frames, n_mels).

    Defaults are the PANN 16 kHz pipeline: Hann window 512, hop 160, 64 bins, 50-8000 Hz. The
    pipeline fills in `sample_rate` from its input. `expected_rate`, where set (the per-rate
    presets set it), is the input rate these sizes are for: another is a ShapeError at load, not a
    front end with other frame rate and bands.
    """

    takes = ("waveform",)

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        hop_length: int = 160,
        n_mels: int = 64,
        fmin: float = 50.0,
        fmax: float = 8000.0,
        expected_rate: int | None = None,
    ):
        super().__init__()
        self.validate_args(sample_rate, n_fft, hop_length, n_mels, fmin, fmax, expected_rate)
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.spectrogram = Spectrogram(n_fft=n_fft, hop_length=hop_length, win_length=n_fft)
        self.logmel = LogmelFilterBank(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, top_db=None)

    @staticmethod
    def validate_args(sample_rate, n_fft, hop_length, n_mels, fmin, fmax, expected_rate=None, **_) -> None:
        """Config load calls this too, so a bad value fails before any audio is read."""
        if expected_rate is not None:
            checks.positive_int("expected_rate", expected_rate)
            if expected_rate != sample_rate:
                raise ShapeError(
                    f"PannLogMel(expected_rate={expected_rate}) is for {expected_rate} Hz audio, "
                    f"but its input is waveform at {sample_rate} Hz"
                )
        sizes = {"sample_rate": sample_rate, "n_fft": n_fft, "hop_length": hop_length, "n_mels": n_mels}
        for name, value in sizes.items():
            checks.positive_int(name, value)
        checks.frequency_range(fmin, fmax, sample_rate)

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        check_rate(self, self.sample_rate, spec)
        return Spec("frames", spec.sample_rate, frame_rate=self.sample_rate / self.hop_length, size=self.n_mels)

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch = waveform if waveform.dim() == 2 else waveform.unsqueeze(0)
        # torchlibrosa returns (batch, 1, frames, n_mels)
        features = self.logmel(self.spectrogram(batch)).squeeze(1)
        return features if waveform.dim() == 2 else features[0]
