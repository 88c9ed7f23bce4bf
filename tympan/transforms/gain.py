"""Gain normalisation: every clip at the same level, whatever its recording level."""

from __future__ import annotations

from typing import Annotated, Literal

import annotated_types as at
import torch

from tympan.transforms import functional as F
from tympan.transforms.spec import Spec, Transform

Dbfs = Annotated[float, at.Ge(-120), at.Le(0)]  # below -120 dBFS a clip counts as silence (F.SILENCE)


class GainNormalize(Transform):
    """Scale a waveform so that its peak (largest absolute sample) or RMS is `target_db` dBFS
    (0 dBFS = an amplitude of 1.0). A silent clip (below -120 dBFS) stays as it is; nothing clips,
    so an RMS target may leave peaks above full scale."""

    takes = ("waveform",)

    def __init__(self, mode: Literal["peak", "rms"] = "peak", target_db: Dbfs = -1.0):
        super().__init__()
        self.mode, self.target_db = mode, float(target_db)

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        return spec

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return F.gain_to(x, self.mode, self.target_db)
