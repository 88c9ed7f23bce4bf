"""Decibel scaling of a spectrogram (torchaudio's AmplitudeToDB, for one clip of frames)."""

from __future__ import annotations

from typing import Literal

import torch
import torchaudio

from tympan.components import PositiveFloat
from tympan.transforms.spec import Spec, Transform

# how many decibels one decade of each kind of value is
MULTIPLIERS = {"power": 10.0, "magnitude": 20.0}


class AmplitudeToDB(Transform):
    """Frames of power (or magnitude) values -> the same frames in decibels.

    `10 * log10(max(x, floor))` for `stype: power`, `20 * log10(...)` for `magnitude` (reference 1);
    with `top_db`, every value is raised to at least the clip's maximum minus `top_db`, so a silent
    stretch cannot reach far below the loudest one. The floor keeps log10 finite on zeros.
    """

    takes = ("frames",)

    def __init__(
        self,
        stype: Literal["power", "magnitude"] = "power",
        top_db: PositiveFloat | None = None,
        floor: PositiveFloat = 1e-10,
    ):
        super().__init__()
        self.multiplier = MULTIPLIERS[stype]
        self.top_db = None if top_db is None else float(top_db)
        self.floor = float(floor)

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        return spec

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # for one 2-D clip torchaudio takes the maximum over the whole clip, as documented above
        return torchaudio.functional.amplitude_to_DB(x, self.multiplier, self.floor, 0.0, self.top_db)
