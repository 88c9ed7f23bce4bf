"""MixUp (Zhang et al., 2018) and CutMix (Yun et al., 2019) on a collated batch with soft targets.

Both pair each clip with another of the batch (a permutation drawn from the generator) and mix
the float soft targets (batch, n_outputs) in the same proportion as the inputs, so they work for
classification (one-hot rows) and multi-label (0/1 rows) alike.

The mixing weight comes from Beta(alpha, alpha). torch's Beta sampler takes no generator, so a
seed is drawn from the run's torch.Generator and handed to a numpy Generator, which samples Beta:
the weight is still a function of the run's seed alone. Draws in order: p, the Beta seed, the
permutation, then the cut position (CutMix).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tympan.augmentations.base import Augmentation
from tympan.components import PositiveFloat, Unit

Batch = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]


def beta(alpha: float, generator: torch.Generator) -> float:
    """A Beta(alpha, alpha) sample, driven by `generator`."""
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def check_batch(x: torch.Tensor, lengths: torch.Tensor | None, targets: torch.Tensor) -> None:
    """Refuse targets that cannot be mixed (class indices, wrong batch size)."""
    if not targets.is_floating_point() or targets.dim() != 2 or len(targets) != len(x):
        raise ValueError(
            f"targets must be float soft targets (batch, n_outputs) from task.soft for a batch of {len(x)}, "
            f"got {targets.dtype} {tuple(targets.shape)}"
        )
    if lengths is not None and lengths.shape != (len(x),):
        raise ValueError(f"lengths must have shape ({len(x)},), got {tuple(lengths.shape)}")


class MixUp(Augmentation):
    """Blend every clip with a partner: `lam * x + (1 - lam) * x[partner]`, one lam per batch.

    A mixed clip is as long as the longer of its pair (lengths become the pair's maximum).
    """

    place = "batch"

    def __init__(self, alpha: PositiveFloat = 0.4, p: Unit = 1.0):
        super().__init__(p)
        self.alpha = alpha

    def apply(self, x, lengths, targets, generator) -> Batch:
        check_batch(x, lengths, targets)
        lam = beta(self.alpha, generator)
        partner = torch.randperm(len(x), generator=generator)
        x = lam * x + (1 - lam) * x[partner]
        targets = lam * targets + (1 - lam) * targets[partner]
        if lengths is not None:
            lengths = torch.maximum(lengths, lengths[partner])
        return x, lengths, targets


class CutMix(Augmentation):
    """Paste a partner's span of the first axis after the batch (time for waveforms and frames,
    the features of a vector) into every clip, or a box of H x W for images (batch, C, H, W).

    The span is `round((1 - lam) * length)` long, at one position for the whole batch. Each target
    takes the partner's share of what the model sees: with `lengths`, the partner's valid frames
    pasted over the clip's valid frames that remain; without, the cut fraction. The new length
    covers the clip's remaining frames and the partner's pasted ones (any gap holds padding).
    """

    place = "batch"

    def __init__(self, alpha: PositiveFloat = 1.0, p: Unit = 1.0):
        super().__init__(p)
        self.alpha = alpha

    def apply(self, x, lengths, targets, generator) -> Batch:
        check_batch(x, lengths, targets)
        lam = beta(self.alpha, generator)
        partner = torch.randperm(len(x), generator=generator)
        if x.dim() == 4:
            x, share = paste_box(x, partner, lam, generator)
        else:
            x, share, lengths = paste_span(x, lengths, partner, lam, generator)
        share = share.to(targets).reshape(-1, 1)
        return x, lengths, (1 - share) * targets + share * targets[partner]


def randint(high: int, generator: torch.Generator) -> int:
    """A uniform integer in [0, high)."""
    return int(torch.randint(0, high, (1,), generator=generator))


def paste_span(x, lengths, partner, lam, generator):
    """Paste the partner's frames [start, end) into each clip: the new x, the partner's share of
    each clip, and the new lengths."""
    total = x.shape[1]
    width = round((1 - lam) * total)
    start = randint(total - width + 1, generator)
    end = start + width
    out = x.clone()
    out[:, start:end] = x[partner, start:end]
    if lengths is None:
        return out, torch.full((len(x),), width / total, device=x.device), None
    own_cut = (lengths.clamp(max=end) - start).clamp(min=0)  # the clip's valid frames pasted over
    pasted = (lengths[partner].clamp(max=end) - start).clamp(min=0)  # the partner's valid frames pasted in
    own = lengths - own_cut
    share = pasted / (own + pasted).clamp(min=1)
    own_end = torch.where(lengths > end, lengths, lengths.clamp(max=start))
    new_lengths = torch.where(pasted > 0, torch.maximum(own_end, start + pasted), own_end)
    return out, share, new_lengths


def paste_box(x, partner, lam, generator):
    """Paste a box of the partner's (H, W) into each image: the new x and the partner's share."""
    height, width = x.shape[-2:]
    side = math.sqrt(1 - lam)
    h, w = round(side * height), round(side * width)
    top, left = randint(height - h + 1, generator), randint(width - w + 1, generator)
    out = x.clone()
    out[..., top : top + h, left : left + w] = x[partner, ..., top : top + h, left : left + w]
    return out, torch.full((len(x),), h * w / (height * width), device=x.device)
