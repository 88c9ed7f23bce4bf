"""CRNN on the raw waveform, End2You style: 1-D convolution blocks (conv, batch norm, activation,
max pooling) turn samples into frames, a recurrent layer (`recurrent.Recurrent`) reads them.

The two published front ends:
- `emo18` (Tzirakis et al., ICASSP 2018): 64, 128, 256 filters of 8, 6, 6 taps, pooled by
  10, 8, 8 (a frame every 640 samples: 40 ms at 16 kHz), leaky ReLU;
- `zhao19` (Zhao et al., BSPC 2019, the 1-D CNN-LSTM): 64, 64, 128, 128 filters of 3 taps, each
  pooled by 4 (a frame every 256 samples), ELU.

End2You cuts the waveform into fixed chunks first; here the convolutions run over the whole
clip, which gives the same frames without a chunk size to choose. Padding is ignored: after
each block the frames past a clip's length are zeroed, as the next convolution's own zero
padding would be for the clip alone, and the recurrence is packed by the frame counts.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tympan.components import PositiveInt, Probability
from tympan.models.base import AudioModel, length_mask
from tympan.models.recurrent import Cell, HiddenSize, Layers, Pooling, Recurrent

# filters, taps, pooling per block, and the activation
VARIANTS = {
    "emo18": {"blocks": [(64, 8, 10), (128, 6, 8), (256, 6, 8)], "activation": nn.LeakyReLU},
    "zhao19": {"blocks": [(64, 3, 4), (64, 3, 4), (128, 3, 4), (128, 3, 4)], "activation": nn.ELU},
}


class CRNN(AudioModel):
    """(batch, samples) -> conv blocks -> frames -> LSTM/GRU -> pooled embedding -> linear head."""

    accepts = ("waveform",)
    head_modules = ("out",)

    def __init__(
        self,
        n_outputs: PositiveInt = 10,
        variant: Literal["emo18", "zhao19"] = "emo18",
        cell: Cell = "lstm",
        hidden_size: HiddenSize = 256,
        layers: Layers = 2,
        bidirectional: bool = False,
        dropout: Probability = 0.5,
        pooling: Pooling = "mean",
    ):
        super().__init__()
        spec = VARIANTS[variant]
        self.blocks = nn.ModuleList()
        channels = 1
        for filters, taps, _ in spec["blocks"]:
            conv = nn.Conv1d(channels, filters, taps, padding=(taps - 1) // 2)
            self.blocks.append(nn.Sequential(conv, nn.BatchNorm1d(filters), spec["activation"]()))
            channels = filters
        self.geometry = [(taps, (taps - 1) // 2, pool) for _, taps, pool in spec["blocks"]]
        self.recurrent = Recurrent(channels, cell, hidden_size, layers, bidirectional, dropout, pooling)
        self.out = nn.Linear(self.recurrent.size, n_outputs)
        self.min_frames = self._shortest()  # samples (the input is a waveform) that give one frame

    def frames(self, samples: torch.Tensor) -> torch.Tensor:
        """How many valid frames `samples` give after every block (convolution, then pooling)."""
        for taps, padding, pool in self.geometry:
            samples = (samples + 2 * padding - taps + 1) // pool
        return samples

    def _shortest(self) -> int:
        """The fewest samples that leave one frame: `frames` inverted, block by block from the last."""
        length = 1
        for taps, padding, pool in reversed(self.geometry):
            length = length * pool - 2 * padding + taps - 1
        return length

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, samples) -> (batch, hidden size, twice that if bidirectional); `lengths` in
        samples (clips shorter than `min_frames` count as `min_frames` long, their padding included)."""
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        valid = lengths.clamp(self.min_frames, x.shape[1])
        h = x.unsqueeze(1)
        for block, (taps, padding, pool) in zip(self.blocks, self.geometry, strict=True):
            h = F.max_pool1d(block(h), pool)
            valid = (valid + 2 * padding - taps + 1) // pool
            h = h * length_mask(valid, h.shape[2]).unsqueeze(1).to(h.dtype)
        return self.recurrent(h.transpose(1, 2), valid)

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.out(embedding)
