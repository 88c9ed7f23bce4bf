"""What flows between transforms: a declared kind with its sizes and rates.

Every transform declares the kinds it takes (`takes`) and what it gives for a given input
(`output(spec)`), so a chain of mismatched transforms fails when the config is loaded, with a
message that names both sides, and a model learns its input sizes from the chain's output.

Kinds, and the shape of one clip of each (no batch dimension):
  waveform   (samples,)               mono float samples at `sample_rate`
  frames     (frames, size)           e.g. log-Mel: `size` bins at `frame_rate` frames a second
  vector     (size,)                  fixed length, e.g. openSMILE functionals
  image      (channels, height, width) fixed size, e.g. a spectrogram image for a vision backbone
Waveforms and frames have a variable length (their first axis), unless `length` fixes it (e.g. a
Whisper feature extractor always gives 3000 frames); vectors and images do not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from tympan.components import Checked

Kind = Literal["waveform", "frames", "vector", "image"]
KINDS: tuple[str, ...] = ("waveform", "frames", "vector", "image")
VARIABLE_LENGTH = ("waveform", "frames")


@dataclass(frozen=True)
class Spec:
    """A declared kind. `sample_rate` is the rate of the audio the data comes from (kept through
    the chain); `frame_rate` the rate of the first axis of waveforms (= sample_rate) and frames;
    `size` the bins of frames or the length of a vector; `shape` the (C, H, W) of an image;
    `length`, where set, the exact first-axis length of every waveform or frames clip."""

    kind: Kind
    sample_rate: int
    frame_rate: float | None = None
    size: int | None = None
    shape: tuple[int, int, int] | None = None
    length: int | None = None

    def describe(self) -> str:
        fixed = f", always {self.length} long" if self.length is not None else ""
        if self.kind == "waveform":
            return f"waveform at {self.sample_rate} Hz{fixed}"
        if self.kind == "frames":
            return f"frames x {self.size} bins at {self.frame_rate:g} frames/s{fixed}"
        if self.kind == "vector":
            return f"vector of {self.size}"
        return f"image {'x'.join(map(str, self.shape or ()))}"

    def with_(self, **changes) -> Spec:
        return replace(self, **changes)

    @property
    def variable_length(self) -> bool:
        return self.kind in VARIABLE_LENGTH


def waveform(sample_rate: int) -> Spec:
    return Spec("waveform", sample_rate, frame_rate=float(sample_rate))


class ShapeError(ValueError):
    """Two neighbours in a chain do not fit: the message names both sides."""


class Transform(Checked, nn.Module):
    """A feature transform on one clip (no batch dimension).

    Subclasses set `takes` and implement `output(spec)` and `forward(x)`. A transform whose
    result is random (random crop) sets `random = True` and takes `generator=` in forward; it is
    applied only online, and in eval mode it must be deterministic. A transform with statistics
    from the train split sets `fits = True`, implements `fit(clips)` and keeps its statistics in
    buffers (so they are saved with the run and in the bundle); it runs online.
    """

    takes: tuple[str, ...] = ("waveform",)
    random: bool = False
    fits: bool = False
    normalizes: bool = False  # feature augmentations run before the first normalising transform

    def __init__(self) -> None:
        # one without arguments of its own takes none (not nn.Module's *args, **kwargs), so the
        # factory names an argument given to it as unknown
        super().__init__()

    def check(self, spec: Spec) -> None:
        """Refuse an input kind this transform does not take, naming both sides."""
        if spec.kind not in self.takes:
            raise ShapeError(
                f"{type(self).__name__} takes {' or '.join(self.takes)}, but its input is {spec.describe()}"
            )

    def output(self, spec: Spec) -> Spec:
        """The spec of the output for input `spec` (after `check`)."""
        raise NotImplementedError

    @classmethod
    def content_args(cls, args: dict) -> dict:
        """`args` as the feature store's key sees them: a transform that reads a local file replaces
        its path with a digest of the file, so an edited file makes a new store instead of reusing
        the features of the old content. Cheap: no instance is built."""
        return args

    def recorded_args(self, args: dict) -> dict:
        """The arguments that rebuild this transform anywhere (the bundle records these): `args`,
        unless the transform reads a local file whose content must travel with it (a Hugging Face
        feature extractor's directory), which it then returns inline."""
        return args

    def fit(self, clips) -> None:  # noqa: B027 (optional hook)
        """Fit statistics on an iterable of the train split's clips (as this transform receives them)."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError
