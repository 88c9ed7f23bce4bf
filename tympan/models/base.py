"""The contract every tympan model keeps, and how a model learns its sizes from the features.

A model takes a batch of one input kind (see tympan.transforms.spec): waveform (batch, samples),
frames (batch, frames, bins), vector (batch, size) or image (batch, channels, height, width).
`lengths` (a LongTensor (batch,)) gives each clip's valid first-axis length in a padded batch of
a variable-length kind; None means every clip fills the batch.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from tympan.components import Checked
from tympan.transforms.spec import ShapeError, Spec

# the constructor arguments tympan fills in (see `sizes`); a config must not set them
SIZE_NAMES: tuple[str, ...] = ("n_outputs", "n_mels", "n_bins", "input_dim", "sample_rate", "in_channels")


class AudioModel(Checked, nn.Module):
    """Input (batch, ...) -> embedding (batch, dim) -> outputs (batch, n_outputs).

    `accepts` names the input kinds the model takes (checked at config load). `min_frames` is
    the shortest first-axis length the architecture accepts; shorter batches are padded up to it.
    """

    accepts: tuple[str, ...] = ("frames",)
    min_frames: int = 1
    head_modules: tuple[str, ...] = ()  # the submodules `head` runs; every other parameter is the backbone's
    provenance = None  # the sources.Provenance of the pretrained weights it was built from, if any

    @classmethod
    def check_input(cls, spec: Spec, args: dict) -> None:
        """Refuse features this model built with `args` cannot take (a ShapeError naming both),
        beyond their kind: e.g. a network fixed to one image size. Config load calls it."""

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.embed(x, lengths))

    def parts(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """The model's parameters by part, "backbone" and "head" (named as in its state dict), so an
        optimiser can give each its own learning rate, or freeze one; `head_modules` draws the line."""
        heads = tuple(f"{name}." for name in self.head_modules)
        found: dict[str, list[tuple[str, nn.Parameter]]] = {"backbone": [], "head": []}
        for name, parameter in self.named_parameters():
            found["head" if name.startswith(heads) else "backbone"].append((name, parameter))
        return found


def sizes(spec: Spec, n_outputs: int, model_class: type | None = None) -> dict[str, int]:
    """The size arguments for a model fed `spec` with `n_outputs` outputs.

    With `model_class`, only the names its constructor takes (all of them if it takes **kwargs).
    """
    found: dict[str, int] = {"n_outputs": n_outputs, "sample_rate": spec.sample_rate}
    if spec.kind == "frames":
        found["n_mels"] = found["n_bins"] = spec.size
    elif spec.kind == "vector":
        found["input_dim"] = spec.size
    elif spec.kind == "image":
        found["in_channels"] = spec.shape[0]
    if model_class is None:
        return found
    params = inspect.signature(model_class).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return found
    return {k: v for k, v in found.items() if k in params}


def check_accepts(model_class: type, spec: Spec, args: dict | None = None) -> None:
    """Refuse features of a kind the model does not take, or (given the model's `args`) that its
    `check_input` refuses, naming both sides; and a model whose `embed` takes no `lengths` (written
    for the contract before lengths), which training, that passes them with every batch, would
    otherwise stop at with a TypeError."""
    accepts = getattr(model_class, "accepts", AudioModel.accepts)
    if spec.kind not in accepts:
        raise ShapeError(
            f"{model_class.__name__} accepts {' or '.join(accepts)}, but the features give {spec.describe()}"
        )
    if args is not None and hasattr(model_class, "check_input"):
        model_class.check_input(spec, args)
    embed = getattr(model_class, "embed", None)
    if embed is not None and not _takes(embed, "lengths"):
        raise ValueError(f"{model_class.__name__}.embed takes no lengths: define it as embed(self, x, lengths=None)")


def _takes(function, name: str) -> bool:
    params = inspect.signature(function).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(batch,) valid lengths -> (batch, size) bool, True where a position is valid."""
    return torch.arange(size, device=lengths.device) < lengths.unsqueeze(1)


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """(batch, channels, frames, bins) -> (batch, channels): mean over bins, then max + mean over
    frames, the PANN pooling that keeps the loudest event and the overall level."""
    x = x.mean(dim=3)
    return x.max(dim=2).values + x.mean(dim=2)
