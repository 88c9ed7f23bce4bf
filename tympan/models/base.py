"""The contract every tympan model keeps."""

from __future__ import annotations

import torch
from torch import nn


class AudioModel(nn.Module):
    """Features (batch, frames, bins) -> embedding (batch, dim) -> outputs (batch, n_outputs).

    `min_frames` is the shortest input the architecture accepts; shorter batches are padded.
    """

    min_frames: int = 1

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(features))


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """(batch, channels, frames, bins) -> (batch, channels): mean over bins, then max + mean over
    frames, the PANN pooling that keeps the loudest event and the overall level."""
    x = x.mean(dim=3)
    return x.max(dim=2).values + x.mean(dim=2)
