"""torchvision classification networks on spectrogram images, split into embedding and head.

torchvision is imported when a model is built or checked, not with tympan.models.
"""

from __future__ import annotations

import torch
from torch import nn

from tympan.components import PositiveInt, WeightsPath
from tympan.models import sources
from tympan.models.backbones import adapt_first_conv, unknown_name
from tympan.models.base import AudioModel
from tympan.models.weights import load_weights

# quick to train on a laptop CPU (named when a config asks for a model torchvision does not know)
SMALL = ("mobilenet_v3_small", "shufflenet_v2_x0_5", "resnet18", "efficientnet_b0")
# classification models that do not fit a network + final Linear split, or tympan's safetensors files
UNSUPPORTED = {
    "googlenet": "it returns auxiliary outputs when training",
    "inception_v3": "it returns auxiliary outputs when training",
    "squeezenet1_0": "its classifier is a conv, not a Linear",
    "squeezenet1_1": "its classifier is a conv, not a Linear",
    **{
        f"mnasnet{width}": "it loads only state dicts carrying torch's layout version, which safetensors "
        "files (tympan's checkpoints and bundles) do not keep"
        for width in ("0_5", "0_75", "1_0", "1_3")
    },
}


class TorchvisionModel(AudioModel):
    """`torchvision.models.get_model(name, num_classes=n_outputs)`, its final Linear as the head.

    The head is the last nn.Linear in module order (mobilenet_v3's `classifier.0` is a hidden
    layer, `classifier.3` the head); it is replaced by an identity in the network, whose output
    is then the embedding. The first conv is adapted to `in_channels` (backbones.adapt_first_conv:
    the sum of the RGB kernels for one channel). `pretrained`: a local ImageNet-style state dict of
    the same architecture (safetensors, or a torch file read with weights_only=True), loaded
    strictly through models/weights.py before the adaptation, except the head, which keeps its
    fresh initialisation where its shape differs (another number of classes).
    """

    accepts = ("image",)
    head_modules = ("out",)
    requires = ("torchvision",)
    weights_from = "a torchvision state dict file, or a torchvision weights tag (IMAGENET1K_V1, DEFAULT)"

    def __init__(
        self, name: str, n_outputs: PositiveInt, in_channels: PositiveInt, pretrained: WeightsPath | None = None
    ):
        super().__init__()
        from torchvision import models

        network = models.get_model(name, weights=None, num_classes=n_outputs)
        head = _last(network, nn.Linear)
        if pretrained is not None:
            local = sources.is_local(pretrained)
            file = pretrained if local else sources.torchvision_file(name, pretrained)
            loaded = load_weights(network, str(file), head=head)
            self.provenance = (
                loaded.provenance if local else sources.provenance(f"torchvision:{name}.{pretrained}", file)
            )
        if in_channels != 3:
            adapt_first_conv(network.get_submodule(_first(network, nn.Conv2d)), in_channels)
        self.out = network.get_submodule(head)
        parent, _, child = head.rpartition(".")
        setattr(network.get_submodule(parent), child, nn.Identity())
        self.network = network

    @staticmethod
    def check_together(args: dict) -> None:
        """An unknown or unsupported name fails at config load."""
        from torchvision import models

        name = args["name"]
        known = models.list_models(module=models)  # classification models only
        if name not in known:
            raise unknown_name("torchvision", name, known, SMALL)
        if name in UNSUPPORTED:
            raise ValueError(f"torchvision's {name} is not supported: {UNSUPPORTED[name]}")

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, channels, height, width) -> (batch, the head's input width); no lengths in an image."""
        return self.network(x)

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.out(embedding)


def _first(network: nn.Module, kind: type) -> str:
    return next(name for name, module in network.named_modules() if isinstance(module, kind))


def _last(network: nn.Module, kind: type) -> str:
    return [name for name, module in network.named_modules() if isinstance(module, kind)][-1]
