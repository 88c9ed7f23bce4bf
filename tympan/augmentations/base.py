"""What every augmentation shares: where it acts, its probability, and how it is built from config.

An augmentation acts in one `place`:
  waveform   on one clip's samples (samples,), before the features are computed
  features   on one clip's features as the pipeline gives them, e.g. log-Mel (frames, bins)
  batch      on a collated batch, after padding: `(x, lengths, targets)` with `targets` the float
             soft targets (batch, n_outputs) of `task.soft`, so MixUp and CutMix can mix them

Clip-level augmentations are called `aug(x, generator) -> x`, batch-level ones
`aug(x, lengths, targets, generator) -> (x, lengths, targets)`. Every random number, the
probability draw included, comes from that torch.Generator, so a run's augmentations are a
function of its seed and a resumed run replays them exactly.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import annotated_types as at
import torch

from tympan import components
from tympan.components import Checked, Unit
from tympan.targets import resolve_target
from tympan.transforms.spec import KINDS, ShapeError, Spec

PLACES = ("waveform", "features", "batch")

Number = Annotated[float, at.Predicate(math.isfinite)]  # a finite number: a level, an SNR, a fill value


def ordered(args: dict[str, Any], low: str, high: str) -> None:
    """For `check_together`: the range `args[low]` to `args[high]` is not empty."""
    if args[low] > args[high]:
        raise ValueError(f"need {low} <= {high}, got {args[low]!r}, {args[high]!r}")


class Augmentation(Checked):
    """Base class: draws one uniform number for `p` first, then applies `apply` when it is below `p`.

    The draw happens whatever `p` is, so p = 0 is the identity, p = 1 always applies, and the
    draws that follow do not depend on `p`. A skipped augmentation draws nothing more.
    Subclasses set `place` and `takes` (the kinds of input they work on) and implement
    `apply(x, generator)`, or `apply(x, lengths, targets, generator)` for place "batch".
    """

    place: str = "features"
    takes: tuple[str, ...] = KINDS

    def __init__(self, p: Unit = 1.0):
        self.p = p

    def check(self, spec: Spec) -> None:
        """Refuse an input kind this augmentation does not work on, naming both."""
        if spec.kind not in self.takes:
            raise ShapeError(f"{type(self).__name__} acts on {' or '.join(self.takes)}, but gets {spec.describe()}")

    def __call__(self, x: torch.Tensor, *rest: Any):
        """`(x, generator)` for a clip, `(x, lengths, targets, generator)` for a batch."""
        expected = 3 if self.place == "batch" else 1
        if len(rest) != expected:
            call = "(x, lengths, targets, generator)" if expected == 3 else "(x, generator)"
            raise TypeError(f"{type(self).__name__} acts on the {self.place}: call it with {call}")
        if float(torch.rand(1, generator=rest[-1])) >= self.p:
            return (x, *rest[:-1]) if rest[:-1] else x
        return self.apply(x, *rest)

    def apply(self, x: torch.Tensor, *rest: Any):
        raise NotImplementedError

    def prepare(self) -> None:  # noqa: B027 (optional hook)
        """Make ready what this reads from disk (e.g. fetch a noise corpus); training calls it once
        before the first batch, so building one (as config load does) writes nothing."""


def build(config: Any, shared: dict[str, Any] | None = None) -> Augmentation:
    """Build an augmentation from `{target, args}` (or a config Component).

    Arguments the class takes by name (with a default) are filled in from `shared` (e.g. the
    features' Mel scale, the sample rate) unless `args` sets them, down through Choice and
    Sequence to every child.
    """
    return from_config(share(as_config(config), shared or {}), "augmentation")


def as_config(config: Any) -> Any:
    """A config Component as the mapping `{target, args}`; anything else as it is."""
    return config if isinstance(config, dict) else {"target": config.target, "args": dict(config.args)}


def share(config: Any, shared: dict[str, Any]) -> Any:
    """`config` with `shared` values filled in where its class (or a nested child's) takes them."""
    if not (isinstance(config, dict) and isinstance(config.get("target"), str)):
        return config  # not a config: from_config refuses it with a clear message
    cls = resolve_target(config["target"])
    args = dict(config.get("args") or {})
    children = getattr(cls, "children_arg", None)
    if children and isinstance(args.get(children), list):
        args[children] = [share(child, shared) for child in args[children]]
    takes = components.all_args(cls, {}) if isinstance(cls, type) else {}
    filled = {k: v for k, v in shared.items() if k in takes and k not in args}
    return {**config, "args": {**filled, **args}}


def resolved(config: Any, shared: dict[str, Any] | None = None) -> dict:
    """How `config` is built, for the record: its target, where it acts, and every argument
    (defaults and the shared values filled in), children resolved the same way."""
    config = share(as_config(config), shared or {})
    augmentation = from_config(config, "augmentation")
    cls = type(augmentation)
    args = components.all_args(cls, config.get("args") or {})
    children = getattr(cls, "children_arg", None)
    if children and isinstance(args.get(children), list):
        args[children] = [resolved(child, shared) for child in args[children]]
    return {"target": config["target"], "place": augmentation.place, "args": args}


def from_config(config: Any, where: str) -> Augmentation:
    """An augmentation from `{target, args}` (or one already built); errors name `where`."""
    if isinstance(config, Augmentation):
        return config
    if not (isinstance(config, dict) and isinstance(config.get("target"), str)) or set(config) - {"target", "args"}:
        raise ValueError(f"{where}: expected {{target: package.module:Class, args: {{...}}}}, got {config!r}")
    args = config.get("args") or {}
    if not isinstance(args, dict):
        raise ValueError(f"{where}: args must be a mapping, got {args!r}")
    return components.build(config["target"], args, where=where, resolve=named(where), kind=Augmentation)


def named(where: str):
    """`resolve_target` whose errors name `where` (a child of a Choice, say), as the build's own do."""

    def resolve(target: str) -> Any:
        try:
            return resolve_target(target)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    return resolve
