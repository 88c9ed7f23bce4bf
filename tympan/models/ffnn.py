"""A feed-forward network for fixed-length vectors, such as openSMILE functionals."""

from __future__ import annotations

import torch
from torch import nn

from tympan import checks
from tympan.models.base import AudioModel

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
NORMS = ("batch", "layer", "none")


class FFNN(AudioModel):
    """Per hidden layer: linear, normalisation, activation, dropout; then a linear head.

    `hidden=[]` gives a linear model on the input (the embedding is the input itself). Batch
    normalisation needs more than one clip per training batch.
    """

    accepts = ("vector",)

    def __init__(
        self,
        input_dim: int = 88,
        n_outputs: int = 10,
        hidden: tuple[int, ...] | list[int] = (256, 128),
        dropout: float = 0.2,
        activation: str = "relu",
        norm: str = "batch",
    ):
        super().__init__()
        self.validate_args(input_dim, n_outputs, hidden, dropout, activation, norm)
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

    @staticmethod
    def validate_args(input_dim, n_outputs, hidden, dropout, activation, norm, **_) -> None:
        """Config load calls this too: a misspelt activation would otherwise fail at build time."""
        checks.positive_int("input_dim", input_dim)
        checks.positive_int("n_outputs", n_outputs)
        if not isinstance(hidden, list | tuple) or not all(type(h) is int and h > 0 for h in hidden):
            raise ValueError(f"hidden must be a list of positive integers (empty for a linear model), got {hidden!r}")
        checks.probability("dropout", dropout)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, input_dim) -> (batch, last hidden size); vectors have no padding, so no lengths."""
        return self.body(x)

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.out(embedding)
