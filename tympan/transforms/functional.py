"""Pure tensor maths behind the transforms (torchaudio's shape: functions here, modules around them).

Every function works on one clip whose first axis is its length (samples of a waveform, frames of
frames x bins), or on any tensor where it says so. Nothing here holds state or draws randomness
on its own: a random start takes the generator it is given.
"""

from __future__ import annotations

import torch

EPS = 1e-5  # added to a standard deviation, so a constant clip or feature gives zeros, not NaN


def instance_normalize(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Zero mean and unit variance over every value of one clip (frames and bins together).

    For frames this is tympan's per-utterance normalisation of log-Mels, so results keep their
    numbers: it removes a speaker's and a microphone's level offset.
    """
    std, mean = torch.std_mean(x, dim=tuple(range(-x.dim(), 0)), keepdim=True)
    return (x - mean) / (std + eps)


def standardize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-feature standardisation with given statistics (broadcast over the last axis)."""
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
