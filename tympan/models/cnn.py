"""A small CNN for short clips and little data, where PANN-sized models overfit."""

from __future__ import annotations

import torch
from torch import nn

from tympan.components import PositiveInt, Probability, Widths
from tympan.models.base import AudioModel, global_pool


class SmallCNN(AudioModel):
    """Single 3x3 conv + batch-norm + ReLU per stage, 2x2 max pooling between stages.

    With the default widths it has 0.24 M parameters: enough for keyword-sized vocabularies,
    small enough to train in a minute on a laptop CPU.
    """

    head_modules = ("out",)

    def __init__(
        self,
        n_mels: PositiveInt = 64,
        n_outputs: PositiveInt = 10,
        channels: Widths = (32, 64, 128, 128),
        dropout: Probability = 0.3,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for i, width in enumerate(channels):
            layers += [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(in_channels, n_outputs)
        self.min_frames = 2 ** (len(channels) - 1)

    def embed(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, frames, bins) -> (batch, channels); `lengths` is ignored (padding is the clip's minimum)."""
        return global_pool(self.features(features.unsqueeze(1)))

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(embedding))
