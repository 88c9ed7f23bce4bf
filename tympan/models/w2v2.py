"""W2V2-FFNN: a transformers wav2vec2, HuBERT, WavLM or data2vec-audio network on the raw
waveform, one of its layers (or a learnt weighted sum of all) pooled over the valid frames, then an
FFNN.

A clip gives the same output alone as in a padded batch: the attention mask comes from `lengths`,
and a convolutional feature encoder with group normalisation (`feat_extract_norm: group`, as in
wav2vec2-base and HuBERT-base), whose statistics span the whole input, padding included, runs on
each clip's valid samples alone. SpecAugment-style masking in training (the config's
`mask_time_prob`) draws from torch's generator, so a resumed run masks what an uninterrupted one did.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import annotated_types as at
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tympan.components import NonNegativeInt, PositiveInt, Probability
from tympan.models.hf_audio import Freeze, Layer, TransformersAudioModel

MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")


class W2V2FFNN(TransformersAudioModel):
    """Waveform (batch, samples) at the network's rate (16 kHz for every published one) ->
    (batch, last hidden size of the FFNN).

    `pretrained`: a local directory written by save_pretrained (config.json + weights) or a hub id.
    `config`: settings over the source's (e.g. `mask_time_prob: 0`), or, without a source, the
    whole architecture, `model_type` included. `layer`: the output of transformer layer k (0: its
    input, the projected CNN features), `last` (the network's final output) or `weighted`.
    `freeze`: `cnn` (the convolutional feature encoder; the usual fine-tuning), `all` (a fixed
    feature extractor, kept in eval mode) or `none`. The input is expected as the network's
    feature extractor gives it (e.g. normalised per clip: HuggingFaceExtractor).
    """

    accepts = ("waveform",)
    model_types = MODEL_TYPES

    def __init__(
        self,
        n_outputs: PositiveInt = 10,
        pretrained: Annotated[str, at.MinLen(1)] | None = None,
        config: dict[str, Any] | None = None,
        layer: NonNegativeInt | Layer = "last",
        pooling: Literal["mean", "attention"] = "mean",
        freeze: Freeze = "cnn",
        gradient_checkpointing: bool = False,
        hidden: list[PositiveInt] = (256,),
        dropout: Probability = 0.1,
    ):
        super().__init__()
        self._setup(locals(), defaults={}, cnn=("feature_extractor",))
        cfg = self.hf_config
        if getattr(cfg, "add_adapter", False):
            raise ValueError("config.add_adapter must be false: the adapter serves sequence-to-sequence decoding")
        self.kernels, self.strides = list(cfg.conv_kernel), list(cfg.conv_stride)
        self.min_frames = receptive_field(self.kernels, self.strides)
        # group norm's statistics span the whole input: such an encoder runs clip by clip
        self.per_clip = any(isinstance(m, nn.GroupNorm) for m in self.network.feature_extractor.modules())

    def frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid samples -> valid frames of the CNN feature encoder (no padding in its convolutions)."""
        for kernel, stride in zip(self.kernels, self.strides, strict=True):
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, samples) -> (batch, last hidden size of the FFNN)."""
        return self.pooled(*self.encode(x, lengths))

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The network's states (see `_encode`) and the (batch, frames) mask of the valid frames."""
        if x.shape[1] < self.min_frames:
            x = F.pad(x, (0, self.min_frames - x.shape[1]))
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        lengths = lengths.to(x.device).clamp(self.min_frames, x.shape[1])
        features = self._features(x, lengths)
        valid = torch.arange(features.shape[1], device=x.device) < self.frames(lengths).unsqueeze(1)
        projected = self.network.feature_projection(features)
        hidden = projected[0] if isinstance(projected, tuple) else projected  # HuBERT's gives one tensor
        hidden = self._spec_augment(hidden, valid)
        return self._encode(hidden, valid), valid

    def _features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, frames, channels) of the CNN feature encoder."""
        encoder = self.network.feature_extractor
        if not self.per_clip:
            return encoder(x).transpose(1, 2)
        clips = [encoder(x[i : i + 1, : int(n)]) for i, n in enumerate(lengths)]
        longest = max(c.shape[2] for c in clips)
        return torch.cat([F.pad(c, (0, longest - c.shape[2])) for c in clips]).transpose(1, 2)

    def _spec_augment(self, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """transformers' time and feature masking in training, its numpy draws seeded from torch's
        generator (which checkpoints save) and numpy's global state left as it was."""
        cfg = self.hf_config
        masks = cfg.mask_time_prob > 0 or cfg.mask_feature_prob > 0
        if not (self.network.training and cfg.apply_spec_augment and masks):
            return hidden
        if hidden.shape[1] < max(cfg.mask_time_length, 1):
            return hidden  # shorter than one mask: transformers would refuse the batch
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            return self.network._mask_hidden_states(hidden, attention_mask=valid)
        finally:
            np.random.set_state(state)

    def _encode(self, hidden: torch.Tensor, valid: torch.Tensor) -> list[torch.Tensor]:
        """The transformer's states: [the input of its first layer, each layer's output, ..., its
        final output] when a layer is chosen, else just the final output. A layer that LayerDrop
        skipped passes its input on."""
        encoder = self.network.encoder
        inputs: dict[int, torch.Tensor] = {}
        outputs: dict[int, torch.Tensor] = {}
        handles = []
        # data2vec-audio stacks convolutions for its positions: padding is zeroed after each, as a clip alone sees it
        for block in getattr(encoder.pos_conv_embed, "layers", ()):
            handles.append(block.register_forward_hook(_zero_padding(valid)))
        if self.mix.needs_all:
            for i, block in enumerate(encoder.layers):
                handles.append(block.register_forward_pre_hook(_keep(inputs, i, output=False)))
                handles.append(block.register_forward_hook(_keep(outputs, i, output=True)))
        try:
            final = encoder(hidden, attention_mask=valid).last_hidden_state
        finally:
            for handle in handles:
                handle.remove()
        if not self.mix.needs_all:
            return [final]
        if not inputs:  # every layer skipped
            return [final] * (len(encoder.layers) + 1)
        state = inputs[min(inputs)]
        states = [state]
        for i in range(len(encoder.layers)):
            state = outputs.get(i, state)
            states.append(state)
        states[-1] = final
        return states


def _zero_padding(valid: torch.Tensor):
    """A hook that zeroes a (batch, channels, frames) output past each clip's valid frames."""

    def hook(module, args, result):
        return result.masked_fill(~valid.unsqueeze(1), 0.0)

    return hook


def _keep(store: dict[int, torch.Tensor], index: int, output: bool):
    """A hook that keeps a layer's input (pre-hook) or output (hook) in `store[index]`."""

    def pre_hook(module, args):
        store[index] = args[0]

    def hook(module, args, result):
        store[index] = result[0] if isinstance(result, tuple) else result

    return hook if output else pre_hook


def receptive_field(kernels: list[int], strides: list[int]) -> int:
    """The samples the CNN feature encoder needs for one frame (400, 25 ms at 16 kHz, for every
    published configuration)."""
    size = 1
    for kernel, stride in zip(reversed(kernels), reversed(strides), strict=True):
        size = (size - 1) * stride + kernel
    return size
