"""Recurrent models over frame sequences: an LSTM or GRU that never sees padding, pooled to one
vector per clip, then a feed-forward head (SeqFFNN). `Recurrent` is also the back end of CRNN.

Sequences are packed by their lengths, so the recurrence stops at each clip's last frame and a
clip gives the same embedding alone as in a padded batch (eval mode). Pooling reads only valid
frames: `last` (the final state; both directions' for a bidirectional network), `mean`, or
`attention` (a learnt score per frame, softmax over the valid ones).
"""

from __future__ import annotations

from typing import Annotated, Literal

import annotated_types as at
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from tympan.components import PositiveInt, Probability
from tympan.models.base import AudioModel, length_mask
from tympan.models.ffnn import FFNN

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}
Cell = Literal["lstm", "gru"]
Pooling = Literal["last", "mean", "attention"]
HiddenSize = Annotated[int, at.Gt(0), at.Le(8192)]  # larger is no recurrent layer for one machine
Layers = Annotated[int, at.Gt(0), at.Le(64)]  # deeper recurrences do not train


class Recurrent(nn.Module):
    """(batch, time, features) + lengths -> (batch, `size`), padding never reaching the cell.
    `dropout` acts between stacked layers (as torch's does), so it needs `layers` > 1 to matter."""

    def __init__(
        self,
        input_size: int,
        cell: Cell,
        hidden_size: int,
        layers: int,
        bidirectional: bool,
        dropout: float,
        pooling: Pooling,
    ):
        super().__init__()
        self.rnn = CELLS[cell](
            input_size, hidden_size, num_layers=layers, batch_first=True, bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )  # fmt: skip
        self.pooling = pooling
        self.size = hidden_size * (2 if bidirectional else 1)
        self.score = nn.Linear(self.size, 1) if pooling == "attention" else None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed)
        if self.pooling == "last":
            final = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c)
            if self.rnn.bidirectional:
                return torch.cat([final[-2], final[-1]], dim=1)  # the top layer, forward and backward
            return final[-1]
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        valid = length_mask(lengths.to(out.device), out.shape[1]).unsqueeze(2)
        if self.pooling == "mean":
            return (out * valid).sum(dim=1) / lengths.to(out.device).unsqueeze(1)
        scores = self.score(out).masked_fill(~valid, float("-inf"))
        return (torch.softmax(scores, dim=1) * out).sum(dim=1)


class SeqFFNN(AudioModel):
    """An LSTM or GRU over frames (log-Mels, MFCCs, openSMILE low-level descriptors, stored
    embeddings), pooled to one vector, then an FFNN (its hidden layers give the embedding)."""

    accepts = ("frames",)
    head_modules = ("ffnn.out",)

    def __init__(
        self,
        n_bins: PositiveInt = 64,
        n_outputs: PositiveInt = 10,
        cell: Cell = "lstm",
        hidden_size: HiddenSize = 128,
        layers: Layers = 2,
        bidirectional: bool = False,
        dropout: Probability = 0.2,
        pooling: Pooling = "mean",
        hidden: list[PositiveInt] = (128,),
        head_dropout: Probability = 0.2,
    ):
        super().__init__()
        self.recurrent = Recurrent(n_bins, cell, hidden_size, layers, bidirectional, dropout, pooling)
        self.ffnn = FFNN(self.recurrent.size, n_outputs, hidden, head_dropout, norm="layer")

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, frames, n_bins) -> (batch, last hidden size of the FFNN)."""
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        return self.ffnn.embed(self.recurrent(x, lengths.clamp(1, x.shape[1])))

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.ffnn.head(embedding)
