"""Gain normalisation: every clip at the same level, whatever its recording level."""

from __future__ import annotations

import torch

from tympan.transforms import functional as F
from tympan.transforms.spec import Spec, Transform

MODES = ("peak", "rms")


class GainNormalize(Transform):
    """Scale a waveform so that its peak (largest absolute sample) or RMS is `target_db` dBFS
    (0 dBFS = an amplitude of 1.0). A silent clip (below -120 dBFS) stays as it is; nothing clips,
    so an RMS target may leave peaks above full scale."""

    takes = ("waveform",)

    def __init__(self, mode: str = "peak", target_db: float = -1.0):
        super().__init__()
        self.validate_args(mode, target_db)
        self.mode, self.target_db = mode, float(target_db)

    @staticmethod
    def validate_args(mode="peak", target_db=-1.0, **_) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown gain mode {mode!r}; expected one of {', '.join(MODES)}")
        if isinstance(target_db, bool) or not isinstance(target_db, int | float) or not -120 <= target_db <= 0:
            raise ValueError(f"target_db must be a number of dBFS in [-120, 0], got {target_db!r}")

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        return spec

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return F.gain_to(x, self.mode, self.target_db)
