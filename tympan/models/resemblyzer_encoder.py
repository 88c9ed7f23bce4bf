"""Resemblyzer's pretrained speaker encoder (GE2E, a 3-layer LSTM, 256-d embeddings) as a frozen
backbone, then an FFNN.

The weights ship inside the resemblyzer wheel (`pretrained: resemblyzer` finds its
`pretrained.pt` without importing the package; any file of that format by path), read as data by
`weights.load_weights`. The network and its input are rebuilt here in torch, so a batch runs at
once and a bundle needs no resemblyzer: its weights file carries the encoder's.

Input, as resemblyzer's `preprocess_wav` and `wav_to_mel_spectrogram` make it: 16 kHz audio,
raised (never lowered) to -30 dBFS over the clip's own samples, then a power (not log) Mel
spectrogram: 40 Slaney Mels, 400-sample Hann windows (25 ms) every 160 samples (10 ms), centred
with zero padding. Resemblyzer's voice-activity trimming (webrtcvad on 16-bit frames) is left to
the data: FSDD clips are trimmed already.

A whole clip is one utterance: the LSTM reads the clip's own frames (packed, so padding never
reaches it) and its last state gives the embedding. Resemblyzer's `embed_utterance` instead cuts
1.6 s windows (zero-padding a shorter clip to one window) and averages their embeddings. On
FSDD's clips (0.14-1.3 s) the whole clip separates speakers at least as well: takes 0-9 of the
five speakers, one reference clip per speaker (a "zero"), the nearest reference for each of the
450 clips of the other digits, mean accuracy over three choices of reference 0.950 vs 0.946.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from tympan.components import PositiveInt, Probability, WeightsPath
from tympan.errors import DataError
from tympan.models import sources
from tympan.models.base import AudioModel, length_mask
from tympan.models.ffnn import FFNN
from tympan.models.weights import load_weights
from tympan.transforms.spec import ShapeError, Spec

SAMPLE_RATE, WINDOW, HOP, N_MELS = 16000, 400, 160, 40  # resemblyzer's hparams
HIDDEN, LAYERS, EMBEDDING = 256, 3, 256
TARGET_RMS = 10 ** (-30 / 20)  # -30 dBFS, of full scale 1.0
WHEEL_NAME = "resemblyzer"  # pretrained: the file in the installed wheel
# resemblyzer's checkpoints: {"model_state": state dict, ...}; GE2E's similarity scale and bias are training-only
KEYS = {"similarity_weight": None, "similarity_bias": None}


class Encoder(nn.Module):
    """Resemblyzer's VoiceEncoder network, its module names kept (lstm, linear) so its files fit."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, EMBEDDING)

    def forward(self, mels: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(mels, frames.cpu(), batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)
        return F.normalize(F.relu(self.linear(hidden[-1])), dim=1)


class Resemblyzer(AudioModel):
    """Waveform (batch, samples) at 16 kHz -> resemblyzer's 256-d speaker embedding -> FFNN head.

    `freeze` (default) keeps the encoder fixed: only the head trains. `pretrained`: `resemblyzer`
    (the wheel's file) or the path of a file in its format; a bundle rebuilds the model without it.
    """

    accepts = ("waveform",)
    head_modules = ("ffnn",)
    weights_from = "resemblyzer (the file in its installed wheel), or a file of that format"

    def __init__(
        self,
        sample_rate: Literal[16000] = SAMPLE_RATE,
        n_outputs: PositiveInt = 10,
        hidden: list[PositiveInt] = (128,),
        head_dropout: Probability = 0.2,
        freeze: bool = True,
        normalize_volume: bool = True,
        pretrained: WeightsPath | None = None,
    ):
        super().__init__()
        self.encoder = Encoder()
        self.ffnn = FFNN(EMBEDDING, n_outputs, list(hidden), head_dropout, norm="layer")
        self.freeze, self.normalize_volume = freeze, normalize_volume
        with torch.device("cpu"):  # constants, computed for real under torch's meta device too
            mels = AF.melscale_fbanks(WINDOW // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, "slaney", "slaney")
        self.register_buffer("window", torch.hann_window(WINDOW), persistent=False)
        self.register_buffer("mel_filters", mels, persistent=False)
        if pretrained is not None:
            file = wheel_weights() if pretrained == WHEEL_NAME else Path(pretrained).expanduser()
            if not file.is_file():
                raise DataError(f"pretrained: {pretrained}: no such file, nor {WHEEL_NAME!r} (the installed wheel's)")
            self.provenance = load_weights(self.encoder, str(file), key_map=KEYS, nested="model_state").provenance
            if pretrained == WHEEL_NAME:
                self.provenance = sources.provenance(f"resemblyzer=={importlib.metadata.version('resemblyzer')}", file)
        if freeze:
            self.encoder.requires_grad_(False)

    @classmethod
    def check_input(cls, spec: Spec, args: dict) -> None:
        if spec.sample_rate != SAMPLE_RATE:
            raise ShapeError(
                f"Resemblyzer takes 16 kHz audio (its Mels and weights), but the features give {spec.describe()}"
            )

    def mels(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, samples) -> resemblyzer's power Mels (batch, frames, 40) and each clip's frame count."""
        x = x * length_mask(lengths, x.shape[1]).to(x.dtype)
        if self.normalize_volume:
            rms = (x.pow(2).sum(dim=1) / lengths).sqrt().clamp(min=1e-10)
            x = x * (TARGET_RMS / rms).clamp(min=1.0).unsqueeze(1)
        spectrum = torch.stft(
            x, WINDOW, HOP, window=self.window, center=True, pad_mode="constant", return_complex=True
        ).abs().pow(2)  # fmt: skip
        return (spectrum.transpose(1, 2) @ self.mel_filters), lengths // HOP + 1

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, samples) -> (batch, 256), unit length; `lengths` in samples."""
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        lengths = lengths.to(x.device).clamp(1, x.shape[1])
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            return self.encoder(*self.mels(x, lengths))

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.ffnn(embedding)


def wheel_weights() -> Path:
    """The pretrained.pt inside the installed resemblyzer package (found, not imported: importing it
    would load librosa and webrtcvad)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or spec.origin is None:
        raise DataError("pretrained: resemblyzer needs the resemblyzer package (`make install` installs it)")
    return Path(spec.origin).parent / "pretrained.pt"
