"""A feed-forward network for fixed-length vectors, such as openSMILE functionals."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import nn

from tympan.components import PositiveInt, Probability, Says
from tympan.models.base import AudioModel

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class FFNN(AudioModel):
    """Per hidden layer: linear, normalisation, activation, dropout; then a linear head.

    `hidden=[]` gives a linear model on the input (the embedding is the input itself). Batch
    normalisation needs more than one clip per training batch.
    """

    accepts = ("vector",)
    head_modules = ("out",)

    def __init__(
        self,
        input_dim: PositiveInt = 88,
        n_outputs: PositiveInt = 10,
        hidden: Annotated[list[PositiveInt], Says("a list of positive integers (empty for a linear model)")] = (
            256,
            128,
        ),
        dropout: Probability = 0.2,
        activation: Literal["relu", "gelu", "tanh"] = "relu",
        norm: Literal["batch", "layer", "none"] = "batch",
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for size in hidden:
            # a bias before batch norm would be cancelled by its mean
            layers.append(nn.Linear(width, size, bias=norm != "batch"))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(size))
            elif norm == "layer":
                layers.append(nn.LayerNorm(size))
            layers += [ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = size
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(width, n_outputs)

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, input_dim) -> (batch, last hidden size); vectors have no padding, so no lengths."""
        return self.body(x)

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.out(embedding)
