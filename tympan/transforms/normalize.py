"""Feature normalisation applied online, identically at training and inference time."""

from __future__ import annotations

import torch


def normalize(features: torch.Tensor, mode: str) -> torch.Tensor:
    """Normalise (..., frames, bins) features.

    `utterance`: zero mean and unit variance per clip over all frames and bins, which removes
    a speaker's and a microphone's loudness and level offsets; `none` leaves them as they are.
    """
    if mode == "none":
        return features
    if mode == "utterance":
        std, mean = torch.std_mean(features, dim=(-2, -1), keepdim=True)
        return (features - mean) / (std + 1e-5)
    raise ValueError(f"unknown normalisation {mode!r}; expected 'none' or 'utterance'")
