"""What the `transformers` audio families share: the network from a pretrained source or a config,
a choice among its layers' outputs, pooling over the valid frames, freezing, and an FFNN head.

Each family (w2v2.py, whisper.py, ast_transformer.py) turns its input into the per-layer hidden
states of its network, with a mask of the valid frames; the rest is here. A bundle rebuilds the
model without the pretrained source: `rebuild_args` records the network's whole config.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
from torch import nn

from tympan.errors import DataError
from tympan.models import huggingface as hf
from tympan.models import sources
from tympan.models.base import AudioModel
from tympan.models.ffnn import FFNN

Layer = Literal["last", "weighted"]
Freeze = Literal["none", "cnn", "all"]


class LayerMix(nn.Module):
    """The states of every layer (input embeddings first, the network's final output last) -> one:
    layer `k`, the last, or a learnt softmax-weighted sum of all (`weighted`, weights start equal)."""

    def __init__(self, count: int, layer: int | str):
        super().__init__()
        self.layer = layer
        self.weights = nn.Parameter(torch.zeros(count)) if layer == "weighted" else None

    @property
    def needs_all(self) -> bool:
        return self.layer != "last"

    def forward(self, states: list[torch.Tensor]) -> torch.Tensor:
        if self.weights is None:
            return states[-1 if self.layer == "last" else self.layer]
        weights = torch.softmax(self.weights, dim=0)
        return sum(w * s for w, s in zip(weights, states, strict=True))


class Pool(nn.Module):
    """(batch, frames, width) + a (batch, frames) mask of the valid frames -> (batch, width): their
    mean, or attention (a learnt score per frame, softmax over the valid ones). Padding never counts."""

    def __init__(self, width: int, how: str):
        super().__init__()
        self.how = how
        self.score = nn.Linear(width, 1) if how == "attention" else None

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        keep = valid.unsqueeze(2)
        if self.score is None:
            return x.masked_fill(~keep, 0.0).sum(dim=1) / valid.sum(dim=1, keepdim=True).to(x.dtype)
        scores = self.score(x).masked_fill(~keep, float("-inf"))
        return (torch.softmax(scores, dim=1) * x.masked_fill(~keep, 0.0)).sum(dim=1)


class TransformersAudioModel(AudioModel):
    """Base of the transformers families. `network` is the transformers network; tympan adds `mix`
    (the layer choice), `pool` and `ffnn`, which are the head part (`head_modules`): new, randomly
    initialised layers, where an optimiser may give the pretrained backbone a smaller learning rate.
    The embedding is the FFNN's last hidden layer."""

    model_types: tuple[str, ...] = ()
    head_modules = ("mix", "pool", "ffnn")
    requires = ("transformers",)  # what a registered model's environment must install
    weights_from = "a transformers directory (config.json + safetensors or torch weights), or a Hugging Face hub id"
    architecture_from_pretrained = True  # without the source, `config` must give the whole architecture

    @classmethod
    def check_together(cls, args: dict[str, Any]) -> None:
        """The checks of several arguments the families share (config load runs them; nothing is read)."""
        config = args.get("config")
        if config is not None:
            hf.check_config(config, cls.model_types)
        if args.get("pretrained") is None and len(cls.model_types) > 1 and (config or {}).get("model_type") is None:
            raise ValueError(
                f"config.model_type: without pretrained, config is the whole architecture and must name its "
                f"model_type ({', '.join(cls.model_types)})"
            )

    def _setup(self, args: dict[str, Any], defaults: dict[str, Any], cnn: tuple[str, ...]) -> None:
        """Build everything from the constructor's `args`: the network (from `args["pretrained"]`
        and/or `args["config"]`, `defaults` filling in what neither gives), then the added layers.
        `cnn` names the network's convolutional front end, which `freeze: cnn` freezes."""
        self._args = {k: args[k] for k in inspect.signature(type(self)).parameters}
        pretrained, overrides = args["pretrained"], args["config"] or {}
        directory = None
        if pretrained is not None:
            source, directory = hf.read_source(pretrained, self.model_types)
            merged = {**source, **overrides}
        else:
            merged = {**defaults, **overrides}
        if merged.get("model_type") not in self.model_types:
            raise ValueError(
                f"config.model_type must be one of {', '.join(self.model_types)} (without a pretrained source the "
                f"config is the whole architecture), got {merged.get('model_type')!r}"
            )
        self.hf_config = hf.build_config(merged, checked=overrides)
        self.network = hf.build_network(self.hf_config)
        if directory is not None:
            digest = hf.load_network(
                self.network, directory, self.hf_config.model_type, optional=("masked_spec_embed",)
            )
            self.provenance = sources.Provenance(pretrained, digest)  # what the bundle records of the source
        width = self.hf_config.d_model if self.hf_config.model_type == "whisper" else self.hf_config.hidden_size
        layers = self.n_layers
        layer = args["layer"]
        if isinstance(layer, int) and layer > layers:
            raise ValueError(f"layer must be at most {layers} (the network's number of layers), got {layer}")
        self.mix = LayerMix(layers + 1, layer)
        self.pool = Pool(width, args["pooling"])
        self.ffnn = FFNN(width, args["n_outputs"], list(args["hidden"]), args["dropout"], norm="layer")
        self.freeze = args["freeze"]
        if self.freeze == "all":
            self.network.requires_grad_(False)
        elif self.freeze == "cnn":
            for name in cnn:
                self.network.get_submodule(name).requires_grad_(False)
        if args["gradient_checkpointing"]:
            self.network.activation_checkpointing_enable({"use_reentrant": False})
        self.train()

    @property
    def n_layers(self) -> int:
        cfg = self.hf_config
        return cfg.encoder_layers if cfg.model_type == "whisper" else cfg.num_hidden_layers

    def rebuild_args(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this architecture with no pretrained source: the
        network's whole config inline (what the bundle records; its weights are the bundle's own)."""
        return {
            **{k: v for k, v in self._args.items() if k != "pretrained"},
            "config": hf.recorded_config(self.hf_config),
        }

    def train(self, mode: bool = True):
        """A wholly frozen network stays in eval mode (no dropout, no SpecAugment): it is a fixed
        feature extractor, so training and serving see the same embeddings."""
        super().train(mode)
        if getattr(self, "freeze", None) == "all":
            self.network.eval()
        return self

    def pooled(self, states: list[torch.Tensor], valid: torch.Tensor) -> torch.Tensor:
        """The chosen layer's states pooled over the valid frames, through the FFNN's hidden layers."""
        return self.ffnn.embed(self.pool(self.mix(states), valid))

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.ffnn.head(embedding)


def local_setting(args: dict[str, Any], key: str, default: Any = None) -> Any:
    """A setting of the network's config, where it can be known without fetching anything (a local
    source or the config itself); None otherwise (a hub id: checked when the model is built)."""
    try:
        config = hf.local_config(args.get("pretrained"), args.get("config"))
    except DataError:
        return None  # the constructor names the unreadable source
    if config is None:
        return None
    return config.get(key, default)
