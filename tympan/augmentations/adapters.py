"""Adapters: a transform of another augmentation library, named by import path, as a tympan augmentation.

    {target: tympan.augmentations.adapters:Audiomentations,
     args: {transform: audiomentations.AddGaussianSNR, args: {min_snr_db: 10, max_snr_db: 30}, p: 0.5}}

- The adapter owns the probability: the base class draws `p` from the run's generator, and the
  wrapped transform is built with its own probability at 1.0 (an inner `p` is refused).
- The libraries draw from process-wide RNGs (Python's `random`, numpy's, torch's). Each call seeds
  all three from one number drawn from the run's generator and restores them afterwards, so a run
  stays a function of its seed and the rest of the process (the model's dropout) sees no change.
  Data loader workers are processes, so no other thread draws in between.
- The import path must lie inside the adapter's library. It comes from the user's training config
  (augmentations are not part of a bundle); the library is imported only when an adapter is built.
- Building the wrapped transform is the load-time check of its arguments, and config load runs it
  once on a clip shaped like the data at its place, so a transform that cannot act there (or that
  breaks the clip's shape contract) is a ConfigError before training starts.
- Compositions (Compose, OneOf, ...) are refused: nest adapters in tympan's Sequence and Choice.
"""

from __future__ import annotations

import contextlib
import inspect
import random
from typing import Any, Literal

import numpy as np
import torch

from tympan.augmentations.base import Augmentation
from tympan.components import PositiveInt, Unit
from tympan.targets import first_line, resolve_target
from tympan.transforms.spec import ShapeError, Spec
from tympan.transforms.waveform import check_rate

# torch-audiomentations transforms that read files with torchaudio.info, which torchaudio 2.11 lacks
BROKEN = {
    "AddBackgroundNoise": "tympan.augmentations.noise:BackgroundNoise",
    "ApplyImpulseResponse": "tympan.augmentations.reverb:ImpulseResponse",
}


@contextlib.contextmanager
def seeded_globals(generator: torch.Generator):
    """Run the body with Python's, numpy's and torch's (CPU) global RNGs seeded from one draw of
    `generator`, and put their states back afterwards."""
    seed = int(torch.randint(0, 2**32, (1,), generator=generator))  # numpy takes 32-bit seeds
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        random.seed(seed)
        np.random.seed(seed)
        with torch.random.fork_rng(devices=[]):
            # the CPU generator alone: torch.manual_seed would reseed CUDA's too, outside the fork
            torch.random.default_generator.manual_seed(seed)
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def example(spec: Spec) -> torch.Tensor:
    """A clip of `spec` (a second of it where the length varies): quiet, fixed noise to try a
    wrapped transform on at config load."""
    if spec.kind == "waveform":
        shape = (spec.length or int(spec.sample_rate),)
    elif spec.kind == "frames":
        shape = (spec.length or max(1, round(spec.frame_rate)), spec.size)
    else:
        shape = spec.shape  # an image: the one other kind an adapter takes
    return 0.1 * torch.randn(shape, generator=torch.Generator().manual_seed(0))


def library_class(path: str, library: str, base: type) -> type:
    """The class at import path `path` (`pkg.module.Class` or `pkg.module:Class`), which must lie
    inside `library` and subclass `base`."""
    dotted = path.replace(":", ".")
    if not dotted.startswith(library + "."):
        raise ValueError(f"transform must be an import path inside {library} ({library}.Name), got {path!r}")
    cls = resolve_target(path if ":" in path else ":".join(path.rsplit(".", 1)))
    if not (isinstance(cls, type) and f"{cls.__module__}.".startswith(library + ".")):
        raise ValueError(f"transform {path!r} is not a class of {library}")
    if not issubclass(cls, base):
        raise ValueError(f"transform {path!r} is not a subclass of {base.__module__}.{base.__qualname__}")
    if "transforms" in inspect.signature(cls).parameters:
        raise ValueError(f"transform {path!r} composes other transforms: nest adapters in tympan's Sequence or Choice")
    return cls


def build_inner(cls: type, path: str, args: dict | None, owned: dict[str, str], fixed: dict[str, Any]) -> Any:
    """`cls` built from the user's `args` plus the `fixed` ones the adapter sets (where `cls` takes
    them); an argument in `owned` is refused with its reason."""
    args = args or {}
    for name in args:
        if name in owned:
            raise ValueError(f"{path}: args.{name}: {owned[name]}")
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = [name for name in args if name not in params]
        if unknown:
            raise ValueError(f"{path} takes no argument {unknown[0]!r}; it takes: {', '.join(params)}")
    try:
        return cls(**args, **{k: v for k, v in fixed.items() if k in params})
    except Exception as exc:  # the library's own check of its arguments (asserts included)
        raise ValueError(f"{path} refused its args: {first_line(exc)}") from None


OWN_P = "the adapter's p (beside transform) decides whether it applies; the wrapped transform runs with p=1.0"


class Adapter(Augmentation):
    """What the four adapters share: the wrapped transform, its seeded call, and the load-time trial.

    Building the wrapped transform is the check of its arguments (`check_together`): config load
    builds it once, and constructing the adapter once more, to keep."""

    same_shape = False  # True: the output must have the input's exact shape (images)

    def __init__(self, transform: str, inner: Any, p: Unit):
        super().__init__(p)
        self.transform, self.inner = transform, inner
        self.name = f"{type(self).__name__}({transform})"

    @classmethod
    def check_together(cls, args: dict[str, Any]) -> None:
        cls.wrap(args["transform"], args["args"])

    @staticmethod
    def wrap(transform: str, args: dict | None) -> Any:
        """The wrapped transform built from its import path and `args`; a ValueError names what is wrong."""
        raise NotImplementedError

    def check(self, spec: Spec) -> None:
        """The kind, then one seeded call on a clip of `spec`: it must run and keep the shape contract."""
        super().check(spec)
        try:
            out = self.apply(example(spec), torch.Generator().manual_seed(0))
        except ShapeError:
            raise
        except Exception as exc:
            raise ShapeError(f"{self.name} does not run on a {spec.describe()}: {first_line(exc)}") from None
        if spec.length is not None and len(out) != spec.length:
            raise ShapeError(f"{self.name} gives {len(out)} long clips, but its input is {spec.describe()}")

    def result(self, out: Any, x: torch.Tensor) -> torch.Tensor:
        """The wrapped transform's output as a clip like `x` (its dtype and device), or a ShapeError."""
        if isinstance(out, np.ndarray):
            out = torch.from_numpy(np.ascontiguousarray(out))
        if isinstance(out, torch.Tensor):
            fits = out.shape == x.shape if self.same_shape else out.dim() == x.dim() and out.shape[1:] == x.shape[1:]
            if fits:
                return out.to(device=x.device, dtype=x.dtype)
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        want = "the same shape" if self.same_shape else "the same shape but for the first axis"
        raise ShapeError(f"{self.name} gave {got} for a clip of shape {tuple(x.shape)}; it must give {want}")


class WaveformAdapter(Adapter):
    """What the two waveform libraries share: place waveform, and the clip's `sample_rate` (filled in
    from the features), which they take at each call."""

    place = "waveform"
    takes = ("waveform",)

    def __init__(self, transform: str, args: dict | None = None, sample_rate: PositiveInt | None = None, p: Unit = 1.0):
        super().__init__(transform, self.wrap(transform, args), p)
        self.sample_rate = sample_rate

    def check(self, spec: Spec) -> None:
        if self.sample_rate is not None and spec.kind == "waveform":
            check_rate(self, self.sample_rate, spec)
        super().check(spec)

    def rate(self) -> int:
        if self.sample_rate is None:
            raise ValueError(f"{self.name} needs the clip's sample_rate (filled in from the features, or in args)")
        return self.sample_rate


class Audiomentations(WaveformAdapter):
    """A waveform transform of audiomentations (numpy, e.g. `audiomentations.AddGaussianSNR`).
    Draws: p, then the seed of the globals."""

    @staticmethod
    def wrap(transform: str, args: dict | None) -> Any:
        from audiomentations.core.transforms_interface import BaseWaveformTransform

        cls = library_class(transform, "audiomentations", BaseWaveformTransform)
        return build_inner(cls, transform, args, {"p": OWN_P}, {"p": 1.0})

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        rate = self.rate()
        samples = x.detach().cpu().numpy().astype(np.float32)  # a copy: some transforms work in place
        with seeded_globals(generator):
            out = self.inner(samples, rate)
        return self.result(out, x)


class TorchAudiomentations(WaveformAdapter):
    """A waveform transform of torch-audiomentations (e.g. `torch_audiomentations.Gain`), called on
    a batch of one mono clip. Draws: p, then the seed of the globals."""

    @staticmethod
    def wrap(transform: str, args: dict | None) -> Any:
        from torch_audiomentations.core.transforms_interface import BaseWaveformTransform

        cls = library_class(transform, "torch_audiomentations", BaseWaveformTransform)
        if cls.__name__ in BROKEN:
            raise ValueError(
                f"{transform} reads its files with torchaudio.info, which torchaudio 2.11 no longer has; "
                f"use {BROKEN[cls.__name__]} instead"
            )
        owned = {
            "p": OWN_P,
            "output_type": "the adapter sets it",
            "sample_rate": "the adapter passes the clip's rate (its own sample_rate, filled in from the features)",
        }
        return build_inner(cls, transform, args, owned, {"p": 1.0, "output_type": "dict"})

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        rate = self.rate()
        with seeded_globals(generator):
            out = self.inner(x.detach()[None, None].clone(), sample_rate=rate).samples
        return self.result(out[0, 0] if out.dim() == 3 else out, x)


class Torchaudio(Adapter):
    """A torchaudio.transforms module (e.g. `torchaudio.transforms.FrequencyMasking`) acting at
    `place`: on the waveform (samples,), or on features (frames, bins), which torchaudio lays out
    as (bins, frames): they are transposed around the call. An inner `p` is torchaudio's own (in
    TimeMasking, the most of the clip a mask may cover), not a probability, so it is left to the
    user. Draws: p, then the seed of the globals."""

    def __init__(self, transform: str, place: Literal["waveform", "features"], args: dict | None = None, p: Unit = 1.0):
        super().__init__(transform, self.wrap(transform, args), p)
        self.place = place
        self.takes = ("waveform",) if place == "waveform" else ("frames",)

    @staticmethod
    def wrap(transform: str, args: dict | None) -> Any:
        return build_inner(library_class(transform, "torchaudio.transforms", torch.nn.Module), transform, args, {}, {})

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        features = self.place == "features"
        with seeded_globals(generator):
            out = self.inner(x.detach().T.clone() if features else x.detach().clone())
        if features and isinstance(out, torch.Tensor) and out.dim() >= 2:
            out = out.transpose(-2, -1)
        return self.result(out, x)


class Torchvision(Adapter):
    """A torchvision.transforms (v2) transform (e.g. `torchvision.transforms.v2.RandomErasing`) on
    image-style features (C, H, W); the output keeps the image's shape. Draws: p, then the seed of
    the globals."""

    place = "features"
    takes = ("image",)
    same_shape = True

    def __init__(self, transform: str, args: dict | None = None, p: Unit = 1.0):
        super().__init__(transform, self.wrap(transform, args), p)

    @staticmethod
    def wrap(transform: str, args: dict | None) -> Any:
        cls = library_class(transform, "torchvision.transforms", torch.nn.Module)
        return build_inner(cls, transform, args, {"p": OWN_P}, {"p": 1.0})

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        with seeded_globals(generator):
            out = self.inner(x.detach().clone())
        return self.result(out, x)
