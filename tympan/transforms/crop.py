"""Cropping and padding along a clip's length (the first axis of a waveform or of frames).

A length is given either in `seconds` or as `frames`, a count along the first axis: samples of a
waveform, frames of frames x bins. Seconds become a count with the input's frame rate (samples per
second for a waveform), which the pipeline fills in as `frame_rate` from its input, as it fills in
`sample_rate` elsewhere; `round(seconds * frame_rate)`, at least one.
"""

from __future__ import annotations

import torch

from tympan import checks
from tympan.transforms import functional as F
from tympan.transforms.spec import ShapeError, Spec, Transform

ANCHORS = ("start", "centre", "end")


def _positive_number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _check_anchor(anchor) -> None:
    if anchor not in ANCHORS:
        raise ValueError(f"unknown anchor {anchor!r}; expected one of {', '.join(ANCHORS)}")


class _Length(Transform):
    """A transform with a target length along the first axis."""

    takes = ("waveform", "frames")

    def __init__(self, seconds: float | None = None, frames: int | None = None, frame_rate: float | None = None):
        super().__init__()
        _Length.validate_args(seconds=seconds, frames=frames, frame_rate=frame_rate)
        if seconds is not None and frame_rate is None:
            raise ValueError(f"{type(self).__name__}(seconds={seconds}) needs the input's frame_rate to count frames")
        self.seconds, self.frame_rate = seconds, frame_rate
        self.length = frames if frames is not None else F.to_length(seconds, frame_rate)

    @staticmethod
    def validate_args(seconds=None, frames=None, frame_rate=None, **_) -> None:
        if (seconds is None) == (frames is None):
            raise ValueError(f"give exactly one of seconds and frames, got seconds={seconds!r}, frames={frames!r}")
        if seconds is not None:
            _positive_number("seconds", seconds)
        if frames is not None:
            checks.positive_int("frames", frames)
        if frame_rate is not None:
            _positive_number("frame_rate", frame_rate)

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        if self.seconds is not None and spec.frame_rate != self.frame_rate:
            raise ShapeError(
                f"{type(self).__name__}(seconds={self.seconds}) counts {self.frame_rate:g} frames/s, "
                f"but its input is {spec.describe()}"
            )
        return spec


class Crop(_Length):
    """Keep at most `length` of the clip, at its start, centre or end (`anchor`); shorter clips pass as they are."""

    def __init__(self, seconds=None, frames=None, anchor: str = "centre", frame_rate=None):
        super().__init__(seconds, frames, frame_rate)
        _check_anchor(anchor)
        self.anchor = anchor

    @staticmethod
    def validate_args(seconds=None, frames=None, anchor="centre", frame_rate=None, **_) -> None:
        _Length.validate_args(seconds=seconds, frames=frames, frame_rate=frame_rate)
        _check_anchor(anchor)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]
        start = {"start": 0, "centre": F.centre_start(n, self.length), "end": max(0, n - self.length)}[self.anchor]
        return F.crop(x, start, self.length)


class RandomCrop(_Length):
    """Keep a window of at most `length` at a random place while training; the centre otherwise.

    The pipeline passes a generator only when training, and the start is drawn from it (so a
    resumed run draws the same); without one it crops the centre, so inference is deterministic.
    """

    random = True

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]
        if generator is not None:
            start = F.random_start(n, self.length, generator)
        else:
            start = F.centre_start(n, self.length)
        return F.crop(x, start, self.length)


class Pad(_Length):
    """Pad the clip at its end up to at least `length`: a waveform with zeros (silence), frames with
    the clip's own minimum (its quietest value, as batches have always been padded), not a loud zero."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape[0] >= self.length:
            return x
        if x.dim() == 1:
            return F.pad_end(x, self.length, 0.0)
        if x.numel() == 0:
            raise ValueError("Pad cannot pad an empty clip of frames: it has no minimum to pad with")
        return F.pad_end(x, self.length, float(x.min()))
