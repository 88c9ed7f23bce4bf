"""Whisper's log-Mel frames of the clip's own length, for WhisperFFNN.

Whisper's feature extractor pads every clip to 30 s (HuggingFaceExtractor gives that). The same
extractor (transformers' WhisperFeatureExtractor with Whisper's settings: 16 kHz, 25 ms window,
10 ms hop) is run here without the padding, so a 1 s clip gives 100 frames, not 3000. Every
frame but the last equals the padded extraction's (the last one's window saw silence there, the
clip's reflection here); the log floor is the clip's maximum minus 8 in both.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from tympan.transforms.spec import ShapeError, Spec, Transform

RATE = 16000
HOP = 160  # 10 ms
SHORTEST = 201  # the STFT's centring reflects half its 400-sample window


class WhisperLogMel(Transform):
    """Waveform (samples,) at 16 kHz -> (samples // 160, n_mels) log-Mels at 100 frames/s:
    80 bins for Whisper up to large-v2, 128 for large-v3."""

    takes = ("waveform",)
    requires = ("transformers",)

    def __init__(self, n_mels: Literal[80, 128] = 80):
        super().__init__()
        from transformers import WhisperFeatureExtractor

        self.n_mels = n_mels
        self.extractor = WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=RATE, hop_length=HOP)

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        if spec.frame_rate != RATE:
            raise ShapeError(f"WhisperLogMel takes audio at {RATE} Hz, but its input is {spec.describe()}")
        return Spec("frames", spec.sample_rate, RATE / HOP, size=self.n_mels)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != 1:
            raise ValueError(f"WhisperLogMel takes one clip of shape (samples,), got shape {tuple(x.shape)}")
        if len(x) < SHORTEST:
            raise ValueError(f"WhisperLogMel needs at least {SHORTEST} samples, got {len(x)}")
        samples = x.detach().to("cpu", torch.float32).numpy()
        batch = self.extractor(samples, sampling_rate=RATE, padding="longest", truncation=False, return_tensors="np")
        values = batch["input_features"][0].T  # (mels, frames) -> time first
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(x.device)
