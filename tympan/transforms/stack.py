"""Frame stacking: fewer, wider frames for sequence models (low frame rate features)."""

from __future__ import annotations

import math

import torch

from tympan.components import PositiveInt
from tympan.transforms.spec import Spec, Transform


class StackFrames(Transform):
    """Frames (T, F) -> frames (ceil(T / stride), k * F): row i is input frames i*stride ..
    i*stride + k - 1 side by side.

    The count rounds up, so every input frame is in some row and a clip shorter than `stride`
    still gives one; rows that run past the end repeat the last frame (not zeros, which would be a
    loud value in dB features). The frame rate becomes frame_rate / stride.
    """

    takes = ("frames",)

    def __init__(self, k: PositiveInt = 3, stride: PositiveInt = 3):
        super().__init__()
        self.k, self.stride = k, stride

    def rows(self, frames: int) -> int:
        return math.ceil(frames / self.stride)

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        length = None if spec.length is None else self.rows(spec.length)
        return spec.with_(frame_rate=spec.frame_rate / self.stride, size=spec.size * self.k, length=length)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape[0] == 0:
            raise ValueError("StackFrames needs at least one frame, got an empty clip")
        starts = torch.arange(self.rows(x.shape[0])) * self.stride
        index = (starts[:, None] + torch.arange(self.k)).clamp(max=x.shape[0] - 1)  # (rows, k)
        return x[index].reshape(len(starts), -1)
