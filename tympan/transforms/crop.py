"""Cropping and padding along a clip's length (the first axis of a waveform or of frames).

A length is given either in `seconds` or as `frames`, a count along the first axis: samples of a
waveform, frames of frames x bins. Seconds become a count with the input's frame rate (samples per
second for a waveform), which the pipeline fills in as `frame_rate` from its input, as it fills in
`sample_rate` elsewhere; `round(seconds * frame_rate)`, at least one.

A length is at most ten minutes (`MAX_SECONDS`; as `frames`, that many at the input's frame rate).

Padding always goes at a clip's end, by one of `functional.PadMode`: `silence` (zeros for a
waveform, the clip's minimum for frames: tympan's default), `constant` (`value`), `minimum`,
`reflect`, `replicate` (the last item) or `repeat` (the clip tiled). Each transform declares the
output's `Spec.length` where it is fixed: a crop that also pads gives exactly its length.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import annotated_types as at
import torch

from tympan import checks
from tympan.components import PositiveFloat, PositiveInt
from tympan.transforms import functional as F
from tympan.transforms.functional import PadMode
from tympan.transforms.spec import ShapeError, Spec, Transform

# A length is at most ten minutes: a longer clip is a recording to cut into windows, and padding or
# tiling to more allocates without bound. Where the frame rate is not known yet, the highest sample
# rate features may have (768 kHz) bounds `frames`.
MAX_SECONDS = 600
MAX_RATE = 768_000
Seconds = Annotated[float, at.Gt(0), at.Le(MAX_SECONDS)]
Anchor = Literal["start", "centre", "end"]


def _check_value(name: str, mode: str | None, value: float) -> None:
    """The constant `value` pads only by `<name>: constant`; anywhere else it would be ignored."""
    if value != 0 and mode != "constant":
        raise ValueError(f"value={value!r} is used only with {name}: constant, but {name} is {mode!r}")


class _Length(Transform):
    """A transform with a target length along the first axis (`frame_rate` is filled in by the pipeline)."""

    takes = ("waveform", "frames")

    def __init__(
        self, seconds: Seconds | None = None, frames: PositiveInt | None = None, frame_rate: PositiveFloat | None = None
    ):
        super().__init__()
        self.seconds, self.frame_rate = seconds, frame_rate
        self.length = frames if frames is not None else F.to_length(seconds, frame_rate)

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        seconds, frames, rate = args["seconds"], args["frames"], args["frame_rate"]
        if (seconds is None) == (frames is None):
            raise ValueError(f"give exactly one of seconds and frames, got seconds={seconds!r}, frames={frames!r}")
        if seconds is not None and rate is None:
            raise ValueError(f"seconds={seconds!r} needs the input's frame_rate to count frames")
        if frames is not None:
            rate = rate or MAX_RATE
            checks.at_most("frames", frames, MAX_SECONDS * rate, f"ten minutes at {rate:g} frames/s")

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        if self.seconds is not None and spec.frame_rate != self.frame_rate:
            raise ShapeError(
                f"{type(self).__name__}(seconds={self.seconds}) counts {self.frame_rate:g} frames/s, "
                f"but its input is {spec.describe()}"
            )
        return spec.with_(length=self.output_length(spec.length))

    def output_length(self, length: int | None) -> int | None:
        """The fixed length of the output for an input of fixed `length` (None: variable)."""
        raise NotImplementedError


class _Crop(_Length):
    """A crop that, with `pad` set, also pads shorter clips, so every output is exactly `length` long."""

    def __init__(
        self,
        seconds: Seconds | None = None,
        frames: PositiveInt | None = None,
        pad: PadMode | None = None,
        value: float = 0.0,
        frame_rate: PositiveFloat | None = None,
    ):
        super().__init__(seconds, frames, frame_rate)
        self.pad, self.value = pad, value

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        _Length.check_together(args)
        _check_value("pad", args["pad"], args["value"])

    def output_length(self, length):
        if self.pad is not None:
            return self.length
        return None if length is None else min(length, self.length)

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.pad is None else F.pad_to(x, self.length, self.pad, self.value)


class Crop(_Crop):
    """Keep at most `length` of the clip, at its start, centre or end (`anchor`). Shorter clips pass as
    they are, or with `pad: <mode>` are padded at their end to exactly `length`."""

    def __init__(
        self,
        seconds: Seconds | None = None,
        frames: PositiveInt | None = None,
        anchor: Anchor = "centre",
        pad: PadMode | None = None,
        value: float = 0.0,
        frame_rate: PositiveFloat | None = None,
    ):
        super().__init__(seconds, frames, pad, value, frame_rate)
        self.anchor = anchor

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]
        start = {"start": 0, "centre": F.centre_start(n, self.length), "end": max(0, n - self.length)}[self.anchor]
        return self._padded(F.crop(x, start, self.length))


class RandomCrop(_Crop):
    """Keep a window of at most `length` at a random place while training; the centre otherwise.
    With `pad: <mode>`, shorter clips are padded at their end to exactly `length`.

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
        return self._padded(F.crop(x, start, self.length))


class Pad(_Length):
    """Pad the clip at its end up to at least `length` by `mode`; longer clips pass as they are.

    The default, `silence`, pads a waveform with zeros and frames with the clip's own minimum (its
    quietest value, as batches have always been padded), not a loud zero.
    """

    def __init__(
        self,
        seconds: Seconds | None = None,
        frames: PositiveInt | None = None,
        mode: PadMode = "silence",
        value: float = 0.0,
        frame_rate: PositiveFloat | None = None,
    ):
        super().__init__(seconds, frames, frame_rate)
        self.mode, self.value = mode, value

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        _Length.check_together(args)
        _check_value("mode", args["mode"], args["value"])

    def output_length(self, length):
        return None if length is None else max(length, self.length)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return F.pad_to(x, self.length, self.mode, self.value)


class Repeat(_Length):
    """Tile the clip until it is `length` long, then cut it there: every output is exactly `length`
    (a longer clip keeps its first `length`)."""

    def output_length(self, length):
        return self.length

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return F.pad_to(x, self.length, "repeat")[: self.length]
