"""timm image networks on spectrogram images (DeepSpectrum style), with a head of our own.

timm is imported when a model is built or checked, not with tympan.models. The module is not
named `timm` so that it never shadows the package.
"""

from __future__ import annotations

import torch
from torch import nn

from tympan.components import PositiveInt, Probability, WeightsPath
from tympan.models import sources
from tympan.models.backbones import adapt_first_conv, unknown_name
from tympan.models.base import AudioModel
from tympan.models.weights import load_weights
from tympan.transforms.spec import ShapeError, Spec

# quick to train on a laptop CPU (named when a config asks for a model timm does not know)
SMALL = ("mobilenetv3_small_050", "mobilenetv3_small_100", "lcnet_050", "resnet10t", "efficientnet_b0")


class TimmModel(AudioModel):
    """`timm.create_model(name)` without its classifier as the embedding, then a fresh Linear head.

    `pretrained`: a local ImageNet-style file (safetensors, or a torch state dict read with
    weights_only=True) of the same architecture with 3 input channels, or a timm release tag of
    the architecture (`imagenet` for timm's default; downloaded once, see models.sources). It is loaded strictly
    through models/weights.py, except its classifier, which is dropped (the head is ours); the
    first conv is then adapted to `in_channels` (see backbones.adapt_first_conv). The bundle
    rebuilds the model without `pretrained`: timm makes the first conv `in_channels` wide itself.
    """

    accepts = ("image",)
    head_modules = ("out",)
    requires = ("timm",)
    weights_from = "a timm state dict file, or a timm release tag of the architecture (imagenet: its default)"

    def __init__(
        self,
        name: str,
        n_outputs: PositiveInt,
        in_channels: PositiveInt,
        pretrained: WeightsPath | None = None,
        drop_rate: Probability = 0.0,
    ):
        super().__init__()
        import timm

        channels = 3 if pretrained is not None else in_channels
        self.network = timm.create_model(name, pretrained=False, num_classes=0, in_chans=channels, drop_rate=drop_rate)
        if pretrained is not None:
            self._load(pretrained, in_channels)
        width = getattr(self.network, "head_hidden_size", None) or self.network.num_features
        self.out = nn.Linear(width, n_outputs)

    @staticmethod
    def check_together(args: dict) -> None:
        """An unknown name fails at config load, not when training starts."""
        import timm

        if not timm.is_model(args["name"]):  # is_model takes a weights tag too
            raise unknown_name("timm", args["name"], timm.list_models(), SMALL)

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
        file = path if sources.is_local(path) else self._published(path)
        loaded = load_weights(self.network, str(file), key_map={f"{name}.": None for name in classifiers})
        self.provenance = loaded.provenance if file == path else sources.provenance(f"timm:{cfg['hf_hub_id']}", file)
        if in_channels == 3:
            return
        first = _names(cfg.get("first_conv"))
        if not first:
            raise ValueError(f"{cfg.get('architecture')}: timm names no first conv to adapt to {in_channels} channels")
        for name in first:
            adapt_first_conv(self.network.get_submodule(name), in_channels)

    def _published(self, tag: str):
        """timm's release `tag` of this architecture (`imagenet`: timm's default one), from the hub."""
        from timm.models import get_pretrained_cfg

        architecture = self.network.pretrained_cfg["architecture"]
        cfg = get_pretrained_cfg(architecture if tag == "imagenet" else f"{architecture}.{tag}")
        if cfg is None or not cfg.hf_hub_id:
            raise ValueError(f"timm has no published weights {tag!r} for {architecture}")
        self.network.pretrained_cfg["hf_hub_id"] = cfg.hf_hub_id
        return sources.hub_file(cfg.hf_hub_id, "model.safetensors")

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
