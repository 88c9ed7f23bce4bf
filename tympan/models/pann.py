"""PANN CNNs (Kong et al., 2020, "PANNs: Large-Scale Pretrained Audio Neural Networks").

Same layer layout as the paper's Cnn10 and Cnn14 so that their published weights map onto
these modules (`pretrained=` a checkpoint, read through PANN_KEYS); the log-Mel front end lives
in tympan.transforms, not in the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tympan.components import PositiveInt, Probability, WeightsPath
from tympan.models.base import AudioModel, global_pool
from tympan.models.weights import load_weights

# PANN checkpoints ({"model": state_dict}) name the blocks conv_block1.. and the AudioSet head
# fc_audioset, and carry their STFT and Mel filters, which tympan keeps in its transforms
PANN_KEYS: dict[str, str | None] = {
    **{f"conv_block{i + 1}.": f"blocks.{i}." for i in range(6)},
    "fc_audioset.": "fc_out.",
    "spectrogram_extractor.": None,
    "logmel_extractor.": None,
}


class ConvBlock(nn.Module):
    """Two 3x3 conv + batch-norm + ReLU layers, then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int, pool: tuple[int, int] = (2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, self.pool)


class _PannCNN(AudioModel):
    channels: tuple[int, ...] = ()
    head_modules = ("fc_out",)
    weights_from = "a PANN checkpoint file, or a PANN release by name (Cnn10_mAP=0.380, Cnn14_mAP=0.431)"

    def __init__(
        self,
        n_mels: PositiveInt = 64,
        n_outputs: PositiveInt = 527,
        dropout: Probability = 0.2,
        head_dropout: Probability = 0.5,
        pretrained: WeightsPath | None = None,
    ):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(n_mels)
        widths = (1, *self.channels)
        # PANN halves time and frequency after each of the first five blocks only
        pools = [(2, 2) if i < 5 else (1, 1) for i in range(len(self.channels))]
        self.blocks = nn.ModuleList(ConvBlock(i, o, p) for i, o, p in zip(widths[:-1], widths[1:], pools, strict=True))
        self.dropout, self.head_dropout = dropout, head_dropout
        self.fc1 = nn.Linear(self.channels[-1], self.channels[-1])
        self.fc_out = nn.Linear(self.channels[-1], n_outputs)
        self.min_frames = 2 ** sum(p[0] == 2 for p in pools)
        for layer in self.modules():  # PANN's initialisation: Xavier-uniform weights, zero biases
            if isinstance(layer, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
        if pretrained is not None:
            # the head is replaced where the task's outputs differ from AudioSet's 527
            self.provenance = load_weights(
                self, pretrained, head="fc_out", key_map=PANN_KEYS, nested="model"
            ).provenance

    def embed(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, frames, bins) -> (batch, channels); `lengths` is ignored (padding is the clip's minimum)."""
        # batch-norm each Mel bin over the batch, as PANN's bn0 does
        x = self.bn0(features.unsqueeze(1).transpose(1, 3)).transpose(1, 3)
        for block in self.blocks:
            x = F.dropout(block(x), self.dropout, self.training)
        x = F.dropout(global_pool(x), self.head_dropout, self.training)
        return F.relu(self.fc1(x))

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.dropout(embedding, self.head_dropout, self.training))


class Cnn10(_PannCNN):
    """Four double-conv blocks, 64 to 512 channels, 5.2 M parameters with 527 outputs."""

    channels = (64, 128, 256, 512)


class Cnn14(_PannCNN):
    """Six double-conv blocks, 64 to 2048 channels, 81 M parameters with 527 outputs."""

    channels = (64, 128, 256, 512, 1024, 2048)
