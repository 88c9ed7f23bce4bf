"""Feature normalisation, applied online and identically at training and inference time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

import annotated_types as at
import torch

from tympan.components import PositiveFloat
from tympan.transforms import functional as F
from tympan.transforms.spec import ShapeError, Spec, Transform

# a statistic: one number for every value, or one per bin, element or channel
Statistic = float | Annotated[list[float], at.MinLen(1)]
Scale = PositiveFloat | Annotated[list[PositiveFloat], at.MinLen(1)]
DEFAULT_PER = {"instance": "global", "train": "bin"}  # what each mode did before `per` existed


class NotFittedError(RuntimeError):
    """A train-statistics normaliser was applied before it was fitted (or loaded)."""


class Normalize(Transform):
    """Zero mean and unit variance, from the clip itself (`mode: instance`) or from the train split
    (`mode: train`), over all values (`per: global`) or for each bin (`per: bin`).

    The defaults keep tympan's numbers: `instance` is global (per-utterance normalisation over every
    value, any kind), `train` is per bin of frames or per element of a vector. `instance` + `bin`
    standardises each bin of one clip of frames over its frames; `train` + `global` uses one mean and
    standard deviation of every value of the train split. Train statistics are streamed by `fit` and
    kept in buffers, so they are saved with the run and in the bundle.
    """

    normalizes = True

    def __init__(self, mode: Literal["instance", "train"] = "instance", per: Literal["global", "bin"] | None = None):
        super().__init__()
        self.mode, self.per = mode, per or DEFAULT_PER[mode]
        self.fits = mode == "train"
        self.takes = {
            ("instance", "global"): ("waveform", "frames", "vector", "image"),
            ("instance", "bin"): ("frames",),
            ("train", "global"): ("frames", "vector", "image"),
            ("train", "bin"): ("frames", "vector"),
        }[self.mode, self.per]
        if self.fits:
            self.register_buffer("mean", torch.empty(0))
            self.register_buffer("std", torch.empty(0))

    @property
    def fitted(self) -> bool:
        return not self.fits or self.mean.numel() > 0

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        if self.fits and self.per == "bin" and self.fitted and spec.size != self.mean.numel():
            raise ShapeError(
                f"Normalize was fitted on {self.mean.numel()} features, but its input is {spec.describe()}"
            )
        return spec

    def fit(self, clips: Iterable[torch.Tensor]) -> None:
        """Mean and (sample) standard deviation over every frame (or vector) of `clips`: per feature,
        or of all their values together (`per: global`)."""
        if not self.fits:
            return
        moments: F.Moments = (0, None, None)
        for clip in clips:
            if self.per == "global":
                rows = clip.reshape(-1, 1)
            elif moments[0] and clip.shape[-1] != moments[1].numel():
                raise ValueError(
                    f"Normalize.fit: a clip has {clip.shape[-1]} features, the ones before {moments[1].numel()}"
                )
            else:
                rows = clip.reshape(-1, clip.shape[-1])
            moments = F.merge_moments(moments, rows)
        count, mean, m2 = moments
        if count < 2:
            raise ValueError(f"Normalize(mode='train') needs at least 2 values per feature to fit on, got {count}")
        self.mean = mean.to(torch.float32)
        self.std = (m2 / (count - 1)).sqrt().to(torch.float32)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.mode == "instance":
            return F.instance_normalize(x) if self.per == "global" else F.bin_normalize(x)
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


def _values(statistic: Any) -> list[float]:
    """A statistic (a number or a list of numbers) as a list."""
    return [float(v) for v in (statistic if isinstance(statistic, list | tuple) else [statistic])]


class Standardize(Transform):
    """(x - mean) / std with fixed statistics (e.g. ImageNet's for an image backbone).

    Each of `mean` and `std` is one number for every value, or a list with one per bin of frames,
    per element of a vector or per channel of an image; a list of the wrong size for the input is
    a ShapeError at config load naming both sizes.
    """

    takes = ("waveform", "frames", "vector", "image")
    normalizes = True

    def __init__(self, mean: Statistic = 0.0, std: Scale = 1.0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(_values(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(_values(std)), persistent=False)

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        means, stds = _values(args["mean"]), _values(args["std"])
        if 1 not in (len(means), len(stds)) and len(means) != len(stds):
            raise ValueError(f"mean has {len(means)} values but std has {len(stds)}; give as many (or one)")

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        given = max(self.mean.numel(), self.std.numel())
        wanted, unit = {
            "waveform": (1, ""),
            "frames": (spec.size, "bin"),
            "vector": (spec.size, "element"),
            "image": ((spec.shape or (0,))[0], "channel"),
        }[spec.kind]
        if given not in (1, wanted):
            takes = "1" if wanted == 1 else f"1 or {wanted} (one per {unit})"
            raise ShapeError(
                f"Standardize has {given} means/stds, but its input is {spec.describe()}: it takes {takes}"
            )
        return spec

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean, std = self.mean, self.std
        if x.dim() == 3:  # an image: one statistic per channel, broadcast over its height and width
            mean, std = mean[:, None, None], std[:, None, None]
        return F.standardize(x, mean, std, eps=0.0)
