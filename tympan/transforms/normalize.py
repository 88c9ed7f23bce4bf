"""Feature normalisation, applied online and identically at training and inference time."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from tympan.transforms import functional as F
from tympan.transforms.spec import ShapeError, Spec, Transform

MODES = ("instance", "train")


class NotFittedError(RuntimeError):
    """A train-statistics normaliser was applied before it was fitted (or loaded)."""


class Normalize(Transform):
    """Zero mean and unit variance, per clip (`instance`) or per feature from the train split (`train`).

    `instance` normalises each clip over all its values (any kind); for frames it is the per-utterance
    normalisation tympan has always used, so results keep their numbers. `train` standardises each bin of
    frames, or each element of a vector, with the mean and standard deviation `fit` streams over
    the train split; they are buffers, so they are saved with the run and in the bundle.
    """

    normalizes = True

    def __init__(self, mode: str = "instance"):
        super().__init__()
        self.validate_args(mode)
        self.mode = mode
        self.fits = mode == "train"
        self.takes = ("frames", "vector") if self.fits else ("waveform", "frames", "vector", "image")
        if self.fits:
            self.register_buffer("mean", torch.empty(0))
            self.register_buffer("std", torch.empty(0))

    @staticmethod
    def validate_args(mode, **_) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown normalisation mode {mode!r}; expected one of {', '.join(MODES)}")

    @property
    def fitted(self) -> bool:
        return not self.fits or self.mean.numel() > 0

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        if self.fits and self.fitted and spec.size != self.mean.numel():
            raise ShapeError(
                f"Normalize was fitted on {self.mean.numel()} features, but its input is {spec.describe()}"
            )
        return spec

    def fit(self, clips: Iterable[torch.Tensor]) -> None:
        """Per-feature mean and (sample) standard deviation over every frame (or vector) of `clips`."""
        if not self.fits:
            return
        moments: F.Moments = (0, None, None)
        for clip in clips:
            if moments[0] and clip.shape[-1] != moments[1].numel():
                raise ValueError(
                    f"Normalize.fit: a clip has {clip.shape[-1]} features, the ones before {moments[1].numel()}"
                )
            moments = F.merge_moments(moments, clip.reshape(-1, clip.shape[-1]))
        count, mean, m2 = moments
        if count < 2:
            raise ValueError(f"Normalize(mode='train') needs at least 2 frames or vectors to fit on, got {count}")
        self.mean = mean.to(torch.float32)
        self.std = (m2 / (count - 1)).sqrt().to(torch.float32)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.mode == "instance":
            return F.instance_normalize(x)
        if not self.fitted:
            raise NotFittedError(
                "Normalize(mode='train') has no statistics: fit it on the train split (or load them) first"
            )
        return F.standardize(x, self.mean, self.std)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The statistics' size is known only once fitted: take the saved one, so a fresh
        # normaliser loads a fitted one's state.
        for name in ("mean", "std"):
            if self.fits and prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
