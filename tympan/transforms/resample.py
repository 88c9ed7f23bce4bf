"""Resampling inside the chain: a waveform at its rate to a waveform at another one."""

from __future__ import annotations

from typing import Annotated, Any

import annotated_types as at
import torch
import torchaudio.functional as AF

from tympan import audio
from tympan.components import PositiveInt
from tympan.transforms import functional as F
from tympan.transforms.spec import Spec, Transform
from tympan.transforms.waveform import check_rate

Rate = Annotated[int, at.Gt(0), at.Le(audio.MAX_RATE)]  # in Hz, at most the highest rate tympan decodes to


class Resample(Transform):
    """Waveform at the input's rate -> waveform at `rate` (torchaudio's resampling, as decoding does).

    The output's `sample_rate` and `frame_rate` are `rate`, so the transforms after it are built for
    the new rate (the pipeline fills in `sample_rate` from its input, here as for every transform).
    """

    takes = ("waveform",)

    def __init__(self, rate: Rate = 16000, sample_rate: PositiveInt | None = None):
        super().__init__()
        self.rate = rate
        self.sample_rate = rate if sample_rate is None else sample_rate

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        """With the input's rate (the pipeline fills it in): whether cheap resampling connects the two."""
        if args["sample_rate"] is not None:
            audio.check_rates(args["sample_rate"], args["rate"])

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        check_rate(self, self.sample_rate, spec)
        length = None if spec.length is None else F.resampled_length(spec.length, self.sample_rate, self.rate)
        return spec.with_(sample_rate=self.rate, frame_rate=float(self.rate), length=length)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.sample_rate == self.rate:
            return x
        return AF.resample(x, self.sample_rate, self.rate)
