"""LEAF (Zeghidour et al., ICLR 2021): a learnable audio front end on the raw waveform, then a CNN.

`filterbank: gabor` is LEAF: complex Gabor filters (a Gaussian envelope of width sigma around a
centre frequency eta, both learnt per filter, initialised on the mel scale), the squared modulus
of their output, a learnt Gaussian low-pass per filter taken every `hop_ms`, then sPCEN.
`filterbank: mel` is the paper's PCEN-only baseline: a fixed power Mel spectrogram (same window,
hop and band) into the same learnable sPCEN and CNN.

sPCEN per filter: M[t] = (1 - s) M[t-1] + s E[t] from M[-1] = E[0], then
(E / (eps + M)^alpha + delta)^r - delta^r, with s, alpha, delta, r learnt (initial 0.04, 0.96,
2, 0.5). The smoother runs forward in time only.

Padding is ignored: samples and energies past each clip's end are zeroed (as the convolutions'
own zero padding is for the clip alone), the smoother never looks ahead, and the CNN zeroes the
frames past each clip's frame count after every stage and pools over valid frames only, so in
eval mode a clip's output does not depend on its batch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn

from tympan.components import PositiveFloat, PositiveInt, Probability, Widths
from tympan.models.base import AudioModel, length_mask

MEL_FFT = 512  # the spectrum on which the Gabor filters' initial mel bands are read off
EPS = 1e-12


class GaborFilterbank(nn.Module):
    """(batch, samples) -> energies |x * gabor_k|^2 (batch, filters, samples), filters on the mel scale."""

    def __init__(self, filters: int, taps: int, sample_rate: int, fmin: float, fmax: float):
        super().__init__()
        self.taps = taps
        # each mel triangle's peak gives eta; the width of its square root at half height gives sigma
        with torch.device("cpu"):  # constants, computed for real under torch's meta device too
            bands = AF.melscale_fbanks(MEL_FFT // 2 + 1, fmin, fmax, filters, sample_rate, None, "htk").T.sqrt()
            peaks, centres = bands.max(dim=1)
            widths = (bands >= peaks.unsqueeze(1) / 2).sum(dim=1).float()
        scale = math.sqrt(2 * math.log(2)) / math.pi  # a Gaussian's half-height width <-> its time sigma
        self.eta = nn.Parameter(centres.float() * 2 * math.pi / MEL_FFT)
        self.sigma = nn.Parameter(scale * MEL_FFT / widths)
        self.sigma_range = (4 * scale, taps * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eta = self.eta.clamp(0.0, math.pi).unsqueeze(1)
        sigma = self.sigma.clamp(*self.sigma_range).unsqueeze(1)
        t = torch.arange(self.taps, device=x.device, dtype=x.dtype) - self.taps // 2
        envelope = torch.exp(-0.5 * (t / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)
        kernels = torch.stack([envelope * torch.cos(eta * t), envelope * torch.sin(eta * t)], dim=1)
        # convolution by FFT: 2-3x faster on a CPU than conv1d's 401 taps at every sample. (The real
        # parts are even and the imaginary odd, so this is conv1d's correlation up to the imaginary sign.)
        samples = x.shape[1]
        size = -(-(samples + self.taps - 1) // 256) * 256
        spectrum = torch.fft.rfft(x, size).unsqueeze(1) * torch.fft.rfft(kernels.flatten(0, 1), size)
        out = torch.fft.irfft(spectrum, size)[..., self.taps // 2 : self.taps // 2 + samples]
        return out.unflatten(1, (-1, 2)).pow(2).sum(dim=2)


class GaussianPool(nn.Module):
    """Per-filter learnt Gaussian low-pass over `taps` samples, one output every `hop`."""

    def __init__(self, filters: int, taps: int, hop: int):
        super().__init__()
        self.taps, self.hop = taps, hop
        self.width = nn.Parameter(torch.full((filters,), 0.4))

    def forward(self, energies: torch.Tensor) -> torch.Tensor:
        half = (self.taps - 1) / 2
        width = self.width.clamp(2 / self.taps, 0.5).unsqueeze(1)
        n = torch.arange(self.taps, device=energies.device, dtype=energies.dtype)
        window = torch.exp(-0.5 * ((n - half) / (width * half)) ** 2).unsqueeze(1)
        return F.conv1d(energies, window, stride=self.hop, padding=self.taps // 2, groups=energies.shape[1])


class PCEN(nn.Module):
    """sPCEN with per-channel learnt smoothing, gain, bias and root (see the module docstring)."""

    def __init__(self, channels: int):
        super().__init__()
        self.smoothing = nn.Parameter(torch.full((channels,), 0.04))
        self.alpha = nn.Parameter(torch.full((channels,), 0.96))
        self.delta = nn.Parameter(torch.full((channels,), 2.0))
        self.root = nn.Parameter(torch.full((channels,), 0.5))

    def forward(self, energies: torch.Tensor) -> torch.Tensor:
        """(batch, channels, frames) -> same shape."""
        s = self.smoothing.clamp(1e-3, 1.0)
        first = energies[..., :1]
        # the smoother is linear: started from E[0], it is E[0] plus the zero-started filter of E - E[0]
        a = torch.stack([torch.ones_like(s), s - 1], dim=1)
        b = torch.stack([s, torch.zeros_like(s)], dim=1)
        smooth = first + AF.lfilter(energies - first, a, b, clamp=False, batching=True)
        alpha = self.alpha.clamp(0.0, 1.0).unsqueeze(1)
        delta = self.delta.clamp(min=1e-3).unsqueeze(1)
        root = self.root.clamp(0.05, 1.0).unsqueeze(1)
        gained = energies / (EPS + smooth.clamp(min=0)) ** alpha
        return (gained + delta) ** root - delta**root


class LEAF(AudioModel):
    """Waveform (batch, samples) -> learnable front end (filters x frames) -> CNN -> linear head.

    The CNN is SmallCNN's layout over (frames, filters): per width a 3x3 conv, batch norm and
    ReLU, 2x2 max pooling between stages, then max + mean over valid frames.
    """

    accepts = ("waveform",)
    head_modules = ("out",)

    def __init__(
        self,
        sample_rate: PositiveInt = 16000,
        n_outputs: PositiveInt = 10,
        filterbank: Literal["gabor", "mel"] = "gabor",
        filters: PositiveInt = 40,
        window_ms: PositiveFloat = 25.0,
        hop_ms: PositiveFloat = 10.0,
        fmin: PositiveFloat = 60.0,
        fmax: PositiveFloat = 7800.0,
        channels: Widths = (32, 64, 128, 128),
        dropout: Probability = 0.3,
    ):
        super().__init__()
        fmax = min(fmax, sample_rate / 2)
        self.filterbank = filterbank
        self.taps = round(sample_rate * window_ms / 1000) // 2 * 2 + 1  # odd: centred on its sample
        self.hop = max(1, round(sample_rate * hop_ms / 1000))
        if filterbank == "gabor":
            self.gabor = GaborFilterbank(filters, self.taps, sample_rate, fmin, fmax)
            self.pool = GaussianPool(filters, self.taps, self.hop)
        else:
            self.n_fft = 2 ** math.ceil(math.log2(self.taps))
            self.register_buffer("window", torch.hann_window(self.taps), persistent=False)
            with torch.device("cpu"):
                mels = AF.melscale_fbanks(self.n_fft // 2 + 1, fmin, fmax, filters, sample_rate, None, "htk")
            self.register_buffer("mel_filters", mels, persistent=False)
        self.pcen = PCEN(filters)
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        for width_in, width in zip((1, *channels[:-1]), channels, strict=True):
            self.convs.append(nn.Conv2d(width_in, width, 3, padding=1, bias=False))
            self.bns.append(nn.BatchNorm2d(width))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(channels[-1], n_outputs)
        self.pools = len(channels) - 1
        self.min_frames = self.hop * (2**self.pools - 1) + 1  # samples that give the CNN one frame at the end

    @staticmethod
    def check_together(args: dict) -> None:
        if args["fmin"] >= min(args["fmax"], args["sample_rate"] / 2):
            raise ValueError(f"fmin={args['fmin']} must be below fmax and half the sample rate")
        if args["hop_ms"] > args["window_ms"]:
            raise ValueError(f"hop_ms={args['hop_ms']} is longer than window_ms={args['window_ms']}")
        pools = len(args["channels"]) - 1
        if args["filters"] < 2**pools:
            raise ValueError(f"filters={args['filters']} is fewer than the 2^{pools} the CNN's {pools} poolings halve")

    def frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """How many front-end frames clips of `lengths` samples give."""
        if self.filterbank == "gabor":
            return (lengths - 1) // self.hop + 1
        return lengths // self.hop + 1

    def front_end(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> sPCEN frames (batch, filters, frames), zero past each clip's frames."""
        x = x * length_mask(lengths, x.shape[1]).to(x.dtype)
        if self.filterbank == "gabor":
            energies = self.gabor(x) * length_mask(lengths, x.shape[1]).unsqueeze(1).to(x.dtype)
            energies = self.pool(energies)
        else:
            spectrum = torch.stft(
                x, self.n_fft, self.hop, self.taps, self.window, center=True, pad_mode="constant", return_complex=True
            ).abs().pow(2)  # fmt: skip
            energies = (self.mel_filters.T @ spectrum).clamp(min=0)
        frames = self.frames(lengths)
        return self.pcen(energies) * length_mask(frames, energies.shape[2]).unsqueeze(1).to(x.dtype)

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, samples) -> (batch, channels[-1]); `lengths` in samples (clips shorter than
        `min_frames` count as `min_frames` long, their padding included)."""
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        lengths = lengths.to(x.device).clamp(self.min_frames, x.shape[1])
        h = self.front_end(x, lengths).transpose(1, 2).unsqueeze(1)  # (batch, 1, frames, filters)
        frames = self.frames(lengths)
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            h = F.relu(bn(conv(h)))
            if i < self.pools:
                h, frames = F.max_pool2d(h, 2), frames // 2
            h = h * length_mask(frames, h.shape[2])[:, None, :, None].to(h.dtype)
        h = h.mean(dim=3)  # over filters
        valid = length_mask(frames, h.shape[2]).unsqueeze(1)
        loudest = h.masked_fill(~valid, float("-inf")).amax(dim=2)
        return loudest + h.sum(dim=2) / frames.unsqueeze(1)

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(embedding))
