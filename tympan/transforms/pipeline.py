"""The feature pipeline: one object for the training data and the bundle, so serving replays
training exactly.

`offline` transforms run once per clip in `tympan preprocess` and their output is stored;
`online` transforms run per clip when training and in the bundle. Every transform's declared
kind is checked against its neighbour's when the pipeline is built (a config load builds it),
so a mismatched chain fails with a message naming both sides.

Augmentations are placed in the online chain by where they act: waveform augmentations run on
the stored clip before any online transform (so the waveform must be what is stored), feature
augmentations just before the first normalising transform (or at the end). Padding of a batch
is here too, since how to pad depends on the kind.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tympan import components
from tympan.transforms.spec import ShapeError, Spec, Transform, waveform

Resolver = Callable[[str], Any]
RATES = ("sample_rate", "frame_rate")  # filled in from each transform's input, never given


def build_transform(target: str, args: dict, spec: Spec, resolve: Resolver) -> tuple[Transform, dict]:
    """Build one transform for input `spec`; its rates come from the spec, not the user.
    Returns it and every argument it was built with (defaults and the filled-in rates included)."""
    cls = resolve(target)
    if not (isinstance(cls, type) and issubclass(cls, Transform)):
        raise ValueError(f"{target} is not a tympan Transform (tympan.transforms.spec.Transform)")
    components.check(cls, args, fixed=RATES, values=False)  # names: unknown ones, and the rates given
    takes = inspect.signature(cls).parameters
    rates = {"sample_rate": spec.sample_rate, "frame_rate": spec.frame_rate}
    args = {**args, **{name: rate for name, rate in rates.items() if name in takes}}
    # a Transform is `Checked`: constructing it checks the values, with the input's real rates
    return cls(**args), components.all_args(cls, args)


class Pipeline:
    """`sample_rate` (the waveform every clip is decoded to), `offline` and `online` transforms.

    Each item of `offline`/`online` is `{"target": ..., "args": {...}}`; `resolve` turns a target
    into a class (the bundle passes one that refuses code outside tympan).
    """

    def __init__(self, sample_rate: int, offline: Sequence[dict], online: Sequence[dict], resolve: Resolver):
        self.sample_rate = sample_rate
        self.items = {"offline": [dict(i) for i in offline], "online": [dict(i) for i in online]}
        spec = waveform(sample_rate)
        self.offline: list[Transform] = []
        self.online: list[Transform] = []
        self.specs: list[Spec] = [spec]  # the input of each online transform, then the output
        self.resolved: list[dict] = []  # what `resolved()` reports
        for place in ("offline", "online"):
            for i, item in enumerate(self.items[place]):
                where = f"features.{place}.{i}"
                try:
                    transform, args = build_transform(item["target"], item.get("args") or {}, spec, resolve)
                    transform.check(spec)
                    takes, spec = spec, transform.output(spec)
                except ShapeError as exc:
                    raise ShapeError(f"{where}: {exc}") from None
                except (ValueError, TypeError) as exc:  # refused arguments, or not a Transform
                    raise ValueError(f"{where}: {item['target']}: {str(exc).strip().splitlines()[0]}") from None
                getattr(self, place).append(transform.eval())
                self.resolved.append(
                    {
                        "place": place,
                        "target": item["target"],
                        "args": transform.recorded_args(args),  # a local file's content, not its path
                        "takes": takes.describe(),
                        "gives": spec.describe(),
                    }
                )
                if place == "online":
                    self.specs.append(spec)
            if place == "offline":
                self.stored = spec
                self.specs = [spec]
        self.output = spec

    def spec_for(self, place: str) -> Spec:
        """What an augmentation acting on `place` receives (see the module docstring)."""
        if place == "waveform":
            return self.stored
        if place == "features":
            first = next((i for i, t in enumerate(self.online) if t.normalizes), len(self.online))
            return self.specs[first]
        return self.output

    # ---- what the config and the bundle record
    def describe(self) -> dict:
        """What rebuilds this pipeline anywhere (the bundle's record): each transform's
        `recorded_args`, so a local file it read travels inline."""
        items = {
            place: [
                {**item, "args": t.recorded_args(dict(item.get("args") or {}))}
                for item, t in zip(self.items[place], getattr(self, place), strict=True)
            ]
            for place in ("offline", "online")
        }
        return {"sample_rate": self.sample_rate, **items}

    @property
    def fits(self) -> bool:
        return any(t.fits for t in self.online)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The online transforms' fitted statistics, keyed `<i>.<name>`, and the offline ones' state
        (a frozen backbone's weights: `embedding.Embedding`), keyed `offline.<i>.<name>`."""
        state = {f"{i}.{k}": v for i, t in enumerate(self.online) for k, v in t.state_dict().items()}
        offline = {f"offline.{i}.{k}": v for i, t in enumerate(self.offline) for k, v in t.state_dict().items()}
        return {**state, **offline}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore fitted statistics (from `state_dict`): the keys must be exactly this pipeline's,
        and what was loaded must still fit the chain (e.g. as many means as bins), else ValueError."""
        expected = self.state_dict().keys()
        if state.keys() != expected:
            missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
            raise ValueError(f"missing {missing or 'nothing'}, unexpected {unexpected or 'nothing'}")
        for i, transform in enumerate(self.offline):
            prefix = f"offline.{i}."
            transform.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        for i, transform in enumerate(self.online):
            prefix = f"{i}."
            transform.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
            transform.output(self.specs[i])

    # ---- running it
    @torch.no_grad()
    def extract(self, samples: np.ndarray) -> np.ndarray:
        """The offline transforms on one decoded clip (float32 samples at `sample_rate`)."""
        x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
        for transform in self.offline:
            x = transform(x)
        return x.numpy()

    @torch.no_grad()
    def apply(
        self,
        stored: torch.Tensor,
        generator: torch.Generator | None = None,
        waveform_augment: Callable | None = None,
        features_augment: Callable | None = None,
    ) -> torch.Tensor:
        """The online transforms on one stored clip. With a `generator` (training), random
        transforms draw from it and the augmentations run at their places; without, it is the
        deterministic chain the bundle runs."""
        x = waveform_augment(stored, generator) if waveform_augment else stored
        for transform in self.online:
            if features_augment and transform.normalizes:
                x, features_augment = features_augment(x, generator), None
            x = transform(x, generator) if transform.random and generator is not None else transform(x)
        if features_augment:
            x = features_augment(x, generator)
        return x

    def fit(self, clips: Callable[[], Iterable[torch.Tensor]]) -> None:
        """Fit the online transforms that need train statistics, in order: each sees the stored
        train clips through the (deterministic) transforms before it. `clips()` iterates them."""
        for i, transform in enumerate(self.online):
            if transform.fits:
                transform.fit(self._through(clips(), self.online[:i]))

    @staticmethod
    def _through(clips: Iterable[torch.Tensor], transforms: list[Transform]):
        for x in clips:
            for transform in transforms:
                x = transform(x)
            yield x

    def pad(self, clips: list[torch.Tensor], min_length: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack clips of the output kind into a batch and their lengths. Variable-length kinds are
        padded to the longest (at least `min_length`): waveforms with silence, frames with each
        clip's own minimum (its quietest value, not a loud zero)."""
        lengths = torch.tensor([len(x) for x in clips], dtype=torch.long)
        if not self.output.variable_length:
            return torch.stack(clips), torch.ones(len(clips), dtype=torch.long)
        longest = max(min_length, int(lengths.max()))
        if self.output.kind == "waveform":
            padded = [F.pad(x, (0, longest - len(x))) for x in clips]
        else:
            padded = [F.pad(x, (0, 0, 0, longest - len(x)), value=float(x.min())) for x in clips]
        return torch.stack(padded), lengths
