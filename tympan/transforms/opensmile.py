"""openSMILE features (the `opensmile` package): functionals as a vector, low-level descriptors as frames.

`opensmile` is imported inside the class, so importing tympan does not pay for it.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import numpy as np
import torch

from tympan.components import PositiveInt
from tympan.transforms.spec import Spec, Transform
from tympan.transforms.waveform import check_rate

Level = Literal["Functionals", "LowLevelDescriptors", "LowLevelDescriptors_Deltas"]
FRAME_RATE = 100.0  # every openSMILE set steps its low-level descriptors by 10 ms


def _smile(feature_set: str, feature_level: str):
    """The openSMILE extractor; an unknown set or a level the set lacks is a ValueError naming them."""
    import opensmile

    sets = list(opensmile.FeatureSet.__members__)
    if feature_set not in sets:
        raise ValueError(f"unknown openSMILE feature_set {feature_set!r}; known: {', '.join(sets)}")
    return opensmile.Smile(feature_set=feature_set, feature_level=feature_level)


@functools.cache
def _check_smile(feature_set: str, feature_level: str) -> None:
    """`_smile`'s refusals, for `check_together`: an accepted pair of names is built once per
    process, not once per check (a refused one raises every time)."""
    _smile(feature_set, feature_level)


class OpenSmile(Transform):
    """Waveform (samples,) -> `Functionals` (size,) or low-level descriptors (frames, size) at 100 frames/s.

    eGeMAPSv02 functionals give 88 values, ComParE_2016 functionals 6373. Sizes come from the
    set's feature names, without running audio. A clip too short for the set (openSMILE then
    fills NaN, e.g. 50 ms for eGeMAPSv02) is a ValueError naming its length. The pipeline fills
    in `sample_rate` from its input.
    """

    takes = ("waveform",)
    requires = ("opensmile",)

    def __init__(
        self, feature_set: str = "eGeMAPSv02", feature_level: Level = "Functionals", sample_rate: PositiveInt = 16000
    ):
        super().__init__()
        self.smile = _smile(feature_set, feature_level)
        self.feature_set, self.feature_level, self.sample_rate = feature_set, feature_level, sample_rate
        self.feature_names: list[str] = list(self.smile.feature_names)

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        """The set's name, and whether it has the level (eGeMAPS has no deltas): openSMILE knows both."""
        _check_smile(args["feature_set"], args["feature_level"])

    @property
    def size(self) -> int:
        return len(self.feature_names)

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        check_rate(self, self.sample_rate, spec)
        if self.feature_level == "Functionals":
            return Spec("vector", spec.sample_rate, size=self.size)
        return Spec("frames", spec.sample_rate, frame_rate=FRAME_RATE, size=self.size)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != 1:
            raise ValueError(f"OpenSmile takes one clip of shape (samples,), got shape {tuple(x.shape)}")
        samples = x.detach().to("cpu", torch.float32).numpy()
        values = self.smile.process_signal(samples, self.sample_rate).to_numpy(dtype=np.float32)
        if not np.isfinite(values).all():
            raise ValueError(
                f"openSMILE {self.feature_set} {self.feature_level} gives non-finite values for a clip of "
                f"{len(samples)} samples ({len(samples) / self.sample_rate:.3f} s at {self.sample_rate} Hz); "
                "is it too short?"
            )
        features = torch.from_numpy(values).to(x.device)
        return features[0] if self.feature_level == "Functionals" else features
