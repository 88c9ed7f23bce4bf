"""Choice and Sequence: augmentations made of other augmentations, nesting freely.

Children are given as config mappings `{target: ..., args: {...}}` (or built augmentations).
All children of a node must act in one place, which becomes the node's place: a Choice between
a waveform and a batch augmentation has no single point in the data flow where it could run.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any

import torch

from tympan.augmentations.base import PLACES, Augmentation, from_config
from tympan.components import NonNegativeFloat, Unit
from tympan.transforms.spec import Spec


def build_children(configs: Any, name: str) -> tuple[list[Augmentation], str]:
    """The built children and the one place they share (ValueError naming them otherwise)."""
    if not isinstance(configs, list | tuple) or not configs:
        raise ValueError(f"{name} must be a non-empty list of augmentations, got {configs!r}")
    children = [from_config(config, f"{name}[{i}]") for i, config in enumerate(configs)]
    places = {child.place for child in children}
    if len(places) != 1 or not places <= set(PLACES):
        named = ", ".join(f"{type(c).__name__} ({c.place})" for c in children)
        raise ValueError(f"{name} must all act in one place (waveform, features or batch), got: {named}")
    return children, places.pop()


class Node(Augmentation):
    """What Choice and Sequence share: children, their common place, and the kinds they all take."""

    children_arg = ""  # the constructor argument that holds the children's configs

    def __init__(self, children: Any, p: Unit):
        super().__init__(p)
        self.children, self.place = build_children(children, self.children_arg)
        self.takes = tuple(k for k in self.children[0].takes if all(k in c.takes for c in self.children))

    def check(self, spec: Spec) -> None:
        for child in self.children:
            child.check(spec)

    def prepare(self) -> None:
        for child in self.children:
            child.prepare()


class Choice(Node):
    """Apply one of `choices`, picked with probability proportional to `weights` (equal if unset).

    After the `p` draw, the pick is one more uniform draw from the generator.
    """

    children_arg = "choices"

    def __init__(self, choices: list, weights: list[NonNegativeFloat] | None = None, p: Unit = 1.0):
        super().__init__(choices, p)
        self.weights = [1.0] * len(self.children) if weights is None else [float(w) for w in weights]
        self._cumulative = list(itertools.accumulate(self.weights))

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        """Building the children checks them all (and is cheap); then one weight each."""
        children, _ = build_children(args["choices"], "choices")
        weights, n = args["weights"], len(children)
        if weights is not None and (len(weights) != n or sum(weights) <= 0):
            raise ValueError(
                f"weights must be {n} non-negative numbers (one per choice) summing above 0, got {weights!r}"
            )

    def pick(self, generator: torch.Generator) -> Augmentation:
        u = float(torch.rand(1, generator=generator)) * self._cumulative[-1]
        return self.children[min(bisect.bisect_right(self._cumulative, u), len(self.children) - 1)]

    def apply(self, x: torch.Tensor, *rest: Any):
        return self.pick(rest[-1])(x, *rest)


class Sequence(Node):
    """Apply `steps` in order, each drawing from the same generator."""

    children_arg = "steps"

    def __init__(self, steps: list, p: Unit = 1.0):
        super().__init__(steps, p)

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        build_children(args["steps"], "steps")

    def apply(self, x: torch.Tensor, *rest: Any):
        *data, generator = (x, *rest)
        for step in self.children:
            out = step(*data, generator)
            data = list(out) if isinstance(out, tuple) else [out]
        return tuple(data) if len(data) > 1 else data[0]
