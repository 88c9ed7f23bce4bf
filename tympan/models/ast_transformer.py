"""AST-FFNN: a transformers Audio Spectrogram Transformer on Kaldi filter banks, one of its layers
(or a learnt weighted sum of all) pooled, then an FFNN.

AST takes exactly `max_length` frames (its positional embeddings are one per patch of that
input): the ASTFeatureExtractor (HuggingFaceExtractor) gives every clip that length. Other frames
are cut to it, or padded with zeros past each clip's valid length, so a clip gives the same output
alone as in a padded batch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import annotated_types as at
import torch
import torch.nn.functional as F

from tympan.components import NonNegativeInt, PositiveInt, Probability
from tympan.models.hf_audio import Freeze, Layer, TransformersAudioModel, local_setting
from tympan.transforms.spec import ShapeError, Spec

MODEL_TYPES = ("audio-spectrogram-transformer",)
TOKENS = 2  # AST's class and distillation tokens come before the patches


class ASTFFNN(TransformersAudioModel):
    """Frames (batch, frames, n_bins) -> (batch, last hidden size of the FFNN).

    `pooling`: `token` (the mean of the class and distillation tokens, AST's own pooling), `mean`
    or `attention` over the patches. `freeze: cnn` freezes the patch embedding (a convolution).
    `pretrained`, `config`, `layer` as in W2V2FFNN; without a source, num_mel_bins defaults to the
    features' bins and max_length to AST's 1024.
    """

    accepts = ("frames",)
    model_types = MODEL_TYPES

    def __init__(
        self,
        n_bins: PositiveInt = 128,
        n_outputs: PositiveInt = 10,
        pretrained: Annotated[str, at.MinLen(1)] | None = None,
        config: dict[str, Any] | None = None,
        layer: NonNegativeInt | Layer = "last",
        pooling: Literal["token", "mean", "attention"] = "token",
        freeze: Freeze = "none",
        gradient_checkpointing: bool = False,
        hidden: list[PositiveInt] = (256,),
        dropout: Probability = 0.1,
    ):
        super().__init__()
        defaults = {"model_type": MODEL_TYPES[0], "num_mel_bins": n_bins}
        self._setup(locals(), defaults=defaults, cnn=("embeddings.patch_embeddings",))
        if self.hf_config.num_mel_bins != n_bins:
            raise ValueError(
                f"n_bins: the features give {n_bins} bins, but the network takes num_mel_bins="
                f"{self.hf_config.num_mel_bins}"
            )
        self.max_length = self.hf_config.max_length

    @classmethod
    def check_input(cls, spec: Spec, args: dict) -> None:
        """Features whose bins are not the network's num_mel_bins, where that is known without
        fetching anything."""
        bins = local_setting(args, "num_mel_bins")
        if bins is not None and spec.size != bins:
            raise ShapeError(f"ASTFFNN's network takes {bins} bins, but the features give {spec.describe()}")

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, frames, n_bins) -> (batch, last hidden size of the FFNN)."""
        tokens = self.mix(self.encode(x, lengths))
        if self.pool.how == "token":
            return self.ffnn.embed(tokens[:, :TOKENS].mean(dim=1))
        patches = tokens[:, TOKENS:]
        return self.ffnn.embed(self.pool(patches, torch.ones(patches.shape[:2], dtype=torch.bool, device=x.device)))

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> list[torch.Tensor]:
        """[the patch embeddings (tokens first), each layer's output, ..., the final output (after
        the closing layer norm)], on the input cut or padded to max_length."""
        if lengths is not None:
            valid = torch.arange(x.shape[1], device=x.device) < lengths.to(x.device).unsqueeze(1)
            x = x.masked_fill(~valid.unsqueeze(2), 0.0)
        x = F.pad(x[:, : self.max_length], (0, 0, 0, max(0, self.max_length - x.shape[1])))
        h = self.network.embeddings(x)
        states = [h]
        for block in self.network.layers:
            h = block(h, None)
            states.append(h)
        states[-1] = self.network.layernorm(h)
        return states
