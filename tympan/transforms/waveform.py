"""The raw waveform as features, and the rate check every transform built for one rate shares."""

from __future__ import annotations

import torch

from tympan.transforms.spec import ShapeError, Spec, Transform


def check_rate(transform: Transform, sample_rate: int, spec: Spec) -> None:
    """Refuse an input at another rate than the one `transform` was built for (its filters depend on it)."""
    if spec.sample_rate != sample_rate:
        raise ShapeError(
            f"{type(transform).__name__} was built for {sample_rate} Hz, but its input is {spec.describe()}"
        )


class Waveform(Transform):
    """Passes the waveform through unchanged, so a raw-audio model trains from stored waveforms."""

    takes = ("waveform",)

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        return spec

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x
