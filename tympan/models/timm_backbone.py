"""timm image networks on spectrogram images (DeepSpectrum style), with a head of our own.

timm is imported when a model is built or checked, not with tympan.models. The module is not
named `timm` so that it never shadows the package.
"""

from __future__ import annotations

import torch
from torch import nn

from tympan import checks
from tympan.models.backbones import adapt_first_conv, check_pretrained, unknown_name
from tympan.models.base import AudioModel
from tympan.models.weights import load_weights
from tympan.transforms.spec import ShapeError, Spec

# quick to train on a laptop CPU (named when a config asks for a model timm does not know)
SMALL = ("mobilenetv3_small_050", "mobilenetv3_small_100", "lcnet_050", "resnet10t", "efficientnet_b0")


class TimmModel(AudioModel):
    """`timm.create_model(name)` without its classifier as the embedding, then a fresh Linear head.

    `pretrained`: a local ImageNet-style file (safetensors, or a torch state dict read with
    weights_only=True) of the same architecture with 3 input channels. It is loaded strictly
    through models/weights.py, except its classifier, which is dropped (the head is ours); the
    first conv is then adapted to `in_channels` (see backbones.adapt_first_conv). The bundle
    rebuilds the model without `pretrained`: timm makes the first conv `in_channels` wide itself.
    """

    accepts = ("image",)

    def __init__(
        self, name: str, n_outputs: int, in_channels: int, pretrained: str | None = None, drop_rate: float = 0.0
    ):
        super().__init__()
        self.validate_args(name=name, pretrained=pretrained, drop_rate=drop_rate)
        checks.positive_int("n_outputs", n_outputs)
        checks.positive_int("in_channels", in_channels)
        import timm

        channels = 3 if pretrained is not None else in_channels
        self.network = timm.create_model(name, pretrained=False, num_classes=0, in_chans=channels, drop_rate=drop_rate)
        if pretrained is not None:
            self._load(pretrained, in_channels)
        width = getattr(self.network, "head_hidden_size", None) or self.network.num_features
        self.out = nn.Linear(width, n_outputs)

    @staticmethod
    def validate_args(name, pretrained=None, drop_rate=0.0, **_) -> None:
        """Config load calls this too: an unknown name fails there, not when training starts."""
        import timm

        if not isinstance(name, str) or not timm.is_model(name):  # is_model takes a weights tag too
            raise unknown_name("timm", name, timm.list_models(), SMALL)
        check_pretrained(pretrained)
        checks.probability("drop_rate", drop_rate)

    @classmethod
    def check_input(cls, spec: Spec, args: dict) -> None:
        """A network timm marks `fixed_input_size` (ViTs, Swin, ...) takes one image size only:
        other features are refused at config load, not at the first forward pass."""
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(str(args.get("name")))
        if cfg is None or not cfg.fixed_input_size or spec.shape is None:
            return
        size = tuple(cfg.input_size[1:])
        if tuple(spec.shape[1:]) != size:
            raise ShapeError(
                f"timm's {args['name']} takes images of exactly {size[0]} x {size[1]}, but the features give "
                f"{spec.describe()}; set the image transform's size to [{size[0]}, {size[1]}]"
            )

    def _load(self, path: str, in_channels: int) -> None:
        """Load an RGB file into the classifier-less network, then adapt its first conv(s)."""
        cfg = self.network.pretrained_cfg
        classifiers = _names(cfg.get("classifier"))
        load_weights(self.network, path, key_map={f"{name}.": None for name in classifiers})
        if in_channels == 3:
            return
        first = _names(cfg.get("first_conv"))
        if not first:
            raise ValueError(f"{cfg.get('architecture')}: timm names no first conv to adapt to {in_channels} channels")
        for name in first:
            adapt_first_conv(self.network.get_submodule(name), in_channels)

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, channels, height, width) -> (batch, width of the pooled features); no lengths in an image."""
        return self.network(x)

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.out(embedding)


def _names(value) -> tuple[str, ...]:
    """timm's pretrained_cfg names a module by a string, or several by a tuple."""
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)
