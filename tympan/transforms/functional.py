"""Pure tensor maths behind the transforms (torchaudio's shape: functions here, modules around them).

Every function works on one clip whose first axis is its length (samples of a waveform, frames of
frames x bins), or on any tensor where it says so. Nothing here holds state or draws randomness
on its own: a random start takes the generator it is given.
"""

from __future__ import annotations

from typing import Literal

import torch

EPS = 1e-5  # added to a standard deviation, so a constant clip or feature gives zeros, not NaN


def instance_normalize(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Zero mean and unit variance over every value of one clip (frames and bins together).

    For frames this is tympan's per-utterance normalisation of log-Mels, so results keep their
    numbers: it removes a speaker's and a microphone's level offset.
    """
    std, mean = torch.std_mean(x, dim=tuple(range(-x.dim(), 0)), keepdim=True)
    return (x - mean) / (std + eps)


def bin_normalize(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Zero mean and unit variance of each bin (last axis) of one clip, over its frames (first axis)."""
    std, mean = torch.std_mean(x, dim=0, keepdim=True)
    return (x - mean) / (std + eps)


def standardize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Standardisation with given statistics, broadcast against `x`: per feature (the last axis), or
    per image channel when shaped (C, 1, 1)."""
    return (x - mean) / (std + eps)


Moments = tuple[int, torch.Tensor | None, torch.Tensor | None]


def merge_moments(moments: Moments, rows: torch.Tensor) -> Moments:
    """Add `rows` (observations, features) to running (count, mean, sum of squared deviations).

    Chan et al.'s pairwise update in float64: streaming over a whole train split neither keeps the
    clips in memory nor loses precision the way raw sums of squares do.
    """
    count, mean, m2 = moments
    rows = rows.to(torch.float64)
    n = rows.shape[0]
    if n == 0:
        return moments
    batch_mean = rows.mean(dim=0)
    batch_m2 = ((rows - batch_mean) ** 2).sum(dim=0)
    if count == 0:
        return n, batch_mean, batch_m2
    total = count + n
    delta = batch_mean - mean
    return total, mean + delta * (n / total), m2 + batch_m2 + delta**2 * (count * n / total)


def to_length(seconds: float, frame_rate: float) -> int:
    """A duration as a count along the first axis (samples or frames), at least one."""
    return max(1, round(seconds * frame_rate))


def centre_start(n: int, length: int) -> int:
    """Where a window of `length` starts when it sits in the middle of `n` (rounding towards the start)."""
    return max(0, (n - length) // 2)


def random_start(n: int, length: int, generator: torch.Generator | None) -> int:
    """A uniform start for a window of `length` in `n`; the same draw the trainer's crop always made."""
    if n <= length:
        return 0
    return int(torch.randint(0, n - length + 1, (1,), generator=generator))


def crop(x: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """At most `length` items of the first axis from `start`."""
    return x[start : start + length]


def pad_end(x: torch.Tensor, length: int, value: float) -> torch.Tensor:
    """Pad the first axis at its end with `value` up to at least `length`."""
    missing = length - x.shape[0]
    if missing <= 0:
        return x
    filler = torch.full((missing, *x.shape[1:]), value, dtype=x.dtype, device=x.device)
    return torch.cat([x, filler])


# ---- padding to a length (the first axis)
PadMode = Literal["silence", "constant", "minimum", "reflect", "replicate", "repeat"]


def pad_index(n: int, length: int, mode: str) -> torch.Tensor:
    """The source index of each of `length` items when a clip of `n` (> 0) is extended at its end.

    `reflect` mirrors without repeating the edge (numpy's and torch's "reflect": a b c b a b c ...),
    `replicate` repeats the last item (numpy's "edge"), `repeat` tiles the clip (numpy's "wrap").
    Unlike torch's padding, these go on past one clip's length.
    """
    i = torch.arange(length)
    if mode == "repeat":
        return i % n
    if mode == "replicate" or n == 1:
        return i.clamp(max=n - 1)
    if mode == "reflect":
        j = i % (2 * (n - 1))
        return torch.where(j < n, j, 2 * (n - 1) - j)
    raise ValueError(f"pad_index: unknown mode {mode!r}")


def pad_to(x: torch.Tensor, length: int, mode: str = "silence", value: float = 0.0) -> torch.Tensor:
    """Extend the first axis of `x` at its end to at least `length`, by `mode` (see PadMode).

    `silence` is tympan's default: zeros for a waveform (1-D), the clip's minimum (its quietest
    value, not a loud zero) for frames; `constant` pads with `value`; `minimum` with the clip's minimum.
    """
    n = x.shape[0]
    if n >= length:
        return x
    if mode == "silence":
        mode = "constant" if x.dim() == 1 else "minimum"
    if mode == "constant":
        return pad_end(x, length, value)
    if n == 0:
        raise ValueError(f"cannot pad an empty clip by {mode!r}: it has no values to pad with")
    if mode == "minimum":
        return pad_end(x, length, float(x.min()))
    return x[pad_index(n, length, mode)]


def resampled_length(n: int, orig_sr: int, new_sr: int) -> int:
    """How many samples torchaudio's resampling gives for `n` samples: ceil(n * new / orig)."""
    return -(-n * new_sr // orig_sr)


# ---- levels
SILENCE = 1e-6  # an amplitude below -120 dBFS: a clip this quiet is left as it is, not blown up


def level(x: torch.Tensor, mode: str) -> float:
    """The peak (largest absolute sample) or RMS of a waveform, as an amplitude (1.0 = full scale)."""
    if x.numel() == 0:
        return 0.0
    if mode == "peak":
        return float(x.abs().max())
    return float(x.double().pow(2).mean().sqrt())


def gain_to(x: torch.Tensor, mode: str, target_db: float) -> torch.Tensor:
    """Scale `x` so that its `level` (peak or rms) is `target_db` dBFS; silence stays silence."""
    current = level(x, mode)
    if current < SILENCE:
        return x
    return x * (10 ** (target_db / 20) / current)


# ---- images
def min_max(x: torch.Tensor) -> torch.Tensor:
    """`x` scaled to [0, 1] over all its values (a constant clip gives zeros)."""
    low, high = x.min(), x.max()
    span = high - low
    if span <= 0:
        return torch.zeros_like(x)
    return (x - low) / span


def frames_to_image(x: torch.Tensor) -> torch.Tensor:
    """Frames (T, F) as a one-channel image (1, F, T): bins are rows, row 0 the lowest bin."""
    return x.transpose(0, 1).unsqueeze(0).contiguous()


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of an image (C, H, W) to (C, *size); antialiased where it shrinks, and the
    identity where the size is already `size`."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return torch.nn.functional.interpolate(image[None], size=tuple(size), mode="bilinear", antialias=True)[0]


def colour_map(x01: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] (H, W) -> RGB (3, H, W) through a lookup table (N, 3), as matplotlib maps
    floats: entry floor(v * N), the top value to the last entry."""
    n = table.shape[0]
    index = (x01 * n).long().clamp(0, n - 1)
    return table[index].permute(2, 0, 1).contiguous()
