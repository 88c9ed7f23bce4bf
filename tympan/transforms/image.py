"""Spectrogram -> image for image backbones, DeepSpectrum style.

Both take frames of any length and give a fixed-size image: each clip is min-max scaled to [0, 1]
on its own (its quietest value black, its loudest white or the colour map's top), laid out with
frequency as height and time as width (row 0 the lowest bin, as `shape.Unsqueeze` does), and
resized bilinearly (antialiased where it shrinks). matplotlib is imported only by ColourMapImage.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tympan.components import PositiveInt
from tympan.transforms import functional as F
from tympan.transforms.spec import Spec, Transform

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics of RGB in [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
SUGGESTED_CMAPS = ("viridis", "magma", "inferno", "plasma", "cividis", "gray", "jet", "turbo")
Size = tuple[PositiveInt, PositiveInt]  # [height, width]


def check_cmap(cmap: str) -> None:
    """A colour map matplotlib has (importing matplotlib), else a ValueError naming some it has."""
    import matplotlib

    if cmap not in matplotlib.colormaps:
        known = ", ".join(SUGGESTED_CMAPS)
        raise ValueError(f"unknown colour map {cmap!r}; known ones include {known} (any of matplotlib.colormaps)")


def _image(x: torch.Tensor) -> torch.Tensor:
    """Frames (T, F) min-max scaled and laid out as (1, F, T)."""
    return F.frames_to_image(F.min_max(x))


class SpectrogramImage(Transform):
    """Frames (T, F) of any length -> an image (channels, H, W): min-max scaled to [0, 1], resized to
    `size` = [H, W], and the one channel copied into `channels` (3 for an RGB backbone)."""

    takes = ("frames",)

    def __init__(self, size: Size = (64, 64), channels: PositiveInt = 3):
        super().__init__()
        self.size, self.channels = tuple(size), channels

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        return Spec("image", spec.sample_rate, shape=(self.channels, *self.size))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return F.resize(_image(x), self.size).repeat(self.channels, 1, 1)


def colour_table(cmap: str) -> torch.Tensor:
    """The RGB lookup table (N, 3) of the matplotlib colour map `cmap` (no figure is rendered)."""
    check_cmap(cmap)
    import matplotlib

    colours = matplotlib.colormaps[cmap]
    return torch.tensor(colours(np.arange(colours.N))[:, :3], dtype=torch.float32)


class ColourMapImage(Transform):
    """Frames (T, F) of any length -> an RGB image (3, H, W), as DeepSpectrum renders spectrograms:
    min-max scaled to [0, 1], coloured by the matplotlib colour map `cmap` (a lookup table, exactly
    the colours matplotlib gives), resized to `size` = [H, W], and, with `imagenet`, standardised per
    channel with ImageNet's mean and standard deviation (what ImageNet-pretrained backbones expect)."""

    takes = ("frames",)
    requires = ("matplotlib",)

    def __init__(self, cmap: str = "viridis", size: Size = (224, 224), imagenet: bool = True):
        super().__init__()
        self.size, self.imagenet = tuple(size), imagenet
        self.register_buffer("table", colour_table(cmap), persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[:, None, None], persistent=False)

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        check_cmap(args["cmap"])  # a string already: whether matplotlib has it is no type

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        return Spec("image", spec.sample_rate, shape=(3, *self.size))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        rgb = F.resize(F.colour_map(_image(x)[0], self.table), self.size)
        return F.standardize(rgb, self.mean, self.std, eps=0.0) if self.imagenet else rgb
