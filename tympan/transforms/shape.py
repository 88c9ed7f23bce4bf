"""Shape utilities between frames and images, for image-style backbones.

An image made from frames has frequency as its height and time as its width, with row 0 the
lowest bin: a plain transpose, so `Squeeze` gives back exactly the frames `Unsqueeze` took (flip
the rows yourself for a picture with low frequencies at the bottom). The image keeps the frame
rate of its columns, which `Squeeze` needs to give frames again.
"""

from __future__ import annotations

import torch

from tympan.components import PositiveInt
from tympan.transforms import functional as F
from tympan.transforms.spec import ShapeError, Spec, Transform


class Unsqueeze(Transform):
    """Frames (T, F) of a fixed length T -> a one-channel image (1, F, T).

    An image has a fixed size, so the frames must have one: crop or pad them to a fixed length
    first (`Crop` with `pad:`, `Repeat`), else config load refuses the chain.
    """

    takes = ("frames",)

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        if spec.length is None:
            raise ShapeError(
                f"Unsqueeze makes an image of a fixed size, but its input is {spec.describe()} of any length; "
                "crop or pad the frames to a fixed length first (e.g. Crop with pad: silence, or Repeat)"
            )
        return Spec("image", spec.sample_rate, frame_rate=spec.frame_rate, shape=(1, spec.size, spec.length))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return F.frames_to_image(x)


class Squeeze(Transform):
    """A one-channel image (1, H, W) made by `Unsqueeze` -> frames (W, H), W frames long: its inverse."""

    takes = ("image",)

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        channels, height, width = spec.shape
        if channels != 1:
            raise ShapeError(f"Squeeze takes a one-channel image, but its input is {spec.describe()}")
        if spec.frame_rate is None:
            raise ShapeError(
                f"Squeeze gives frames, which need a frame rate, but its input is {spec.describe()} with no time "
                "axis rate (only an image from Unsqueeze has one)"
            )
        return Spec("frames", spec.sample_rate, frame_rate=spec.frame_rate, size=height, length=width)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x[0].transpose(0, 1).contiguous()


class ExpandChannels(Transform):
    """A one-channel image (1, H, W) -> (channels, H, W) by copying it into every channel (an RGB
    backbone's input from a spectrogram)."""

    takes = ("image",)

    def __init__(self, channels: PositiveInt = 3):
        super().__init__()
        self.channels = channels

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        if spec.shape[0] != 1:
            raise ShapeError(f"ExpandChannels takes a one-channel image, but its input is {spec.describe()}")
        return spec.with_(shape=(self.channels, *spec.shape[1:]))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x.repeat(self.channels, 1, 1)
