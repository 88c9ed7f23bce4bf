"""What the image backbones (`timm_backbone`, `torchvision_backbone`) share: a network name the
library does not know is refused at config load with names it does know, and an RGB network's
first conv is given the channels of the features (a spectrogram image often has one)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch
from torch import nn


def unknown_name(library: str, name, known: Iterable[str], small: Iterable[str]) -> ValueError:
    """The error for a model `name` the library does not know: close names, and `small` ones that
    train fast on a CPU."""
    close = difflib.get_close_matches(str(name), list(known), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return ValueError(f"{library} has no model {name!r}; {hint}small ones: {', '.join(small)}")


@torch.no_grad()
def adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> None:
    """Give an RGB conv `in_channels` input channels, in place, keeping what it learnt.

    One channel gets the sum of the R, G and B kernels: a grey image then gives exactly the
    response the RGB network gives to that image copied into R, G and B. Other counts repeat the
    RGB kernels cyclically, scaled by 3 / in_channels, which keeps that property for a multiple
    of 3 and the response's scale otherwise (timm's convention for pretrained weights).
    """
    weight = conv.weight
    if conv.groups != 1 or weight.shape[1] != 3:
        raise ValueError(f"the first conv takes {weight.shape[1] * conv.groups} channels, not RGB: cannot adapt it")
    if in_channels == 1:
        adapted = weight.sum(dim=1, keepdim=True)
    else:
        adapted = weight[:, torch.arange(in_channels) % 3] * (3 / in_channels)
    conv.weight = nn.Parameter(adapted.contiguous())
    conv.in_channels = in_channels
