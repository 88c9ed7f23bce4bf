"""Whisper-FFNN: the encoder of a transformers Whisper network on log-Mel frames, one of its layers
(or a learnt weighted sum of all) pooled over the valid frames, then an FFNN.

Whisper was trained on 30 s windows: its feature extractor pads every clip to 3000 frames and its
encoder takes nothing else. Here the encoder runs on each batch's own length instead, with the
first positional embeddings only and the frames past each clip's end masked out of attention (and
zeroed before each convolution), so a 1 s clip costs 1 s and a clip gives the same output alone as
in a padded batch. What that does to the outputs: on input of the full 30 s the states are exactly
transformers' encoder's; on a shorter clip they differ from those of the same clip padded with
silence to 30 s, since its frames no longer attend to the silence after them (tests measure the
difference). A network fine-tuned here is served the same way (the bundle replays the features), so
nothing differs between training and serving; for a frozen network used exactly as Whisper was
trained, feed it HuggingFaceExtractor's 30 s padded log-Mels, which this model runs unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import annotated_types as at
import torch
import torch.nn.functional as F

from tympan.components import NonNegativeInt, PositiveInt, Probability
from tympan.models.hf_audio import Freeze, Layer, TransformersAudioModel, local_setting
from tympan.transforms.spec import ShapeError, Spec

MODEL_TYPES = ("whisper",)


class WhisperFFNN(TransformersAudioModel):
    """Frames (batch, frames, n_mels) of Whisper's log-Mels (WhisperLogMel, or HuggingFaceExtractor
    with a WhisperFeatureExtractor) -> (batch, last hidden size of the FFNN). Frames past the
    encoder's 30 s (2 x max_source_positions) are cut off, as Whisper's extractor does.

    `pretrained`, `config`, `layer`, `pooling`, `freeze` as in W2V2FFNN; `freeze: cnn` freezes the
    encoder's two convolutions. Without a source, `config` holds WhisperConfig's settings (the
    decoder's are not used) and num_mel_bins defaults to the features' bins.
    """

    accepts = ("frames",)
    model_types = MODEL_TYPES

    def __init__(
        self,
        n_mels: PositiveInt = 80,
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
        self._setup(locals(), defaults={"model_type": "whisper", "num_mel_bins": n_mels}, cnn=("conv1", "conv2"))
        if self.hf_config.num_mel_bins != n_mels:
            raise ValueError(
                f"n_mels: the features give {n_mels} Mel bins, but the network takes num_mel_bins="
                f"{self.hf_config.num_mel_bins}"
            )
        self.max_frames = 2 * self.hf_config.max_source_positions

    @classmethod
    def check_input(cls, spec: Spec, args: dict) -> None:
        """Features whose bins are not the network's num_mel_bins, where that is known without
        fetching anything."""
        bins = local_setting(args, "num_mel_bins")
        if bins is not None and spec.size != bins:
            raise ShapeError(f"WhisperFFNN's network takes {bins} Mel bins, but the features give {spec.describe()}")

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, frames, n_mels) -> (batch, last hidden size of the FFNN)."""
        return self.pooled(*self.encode(x, lengths))

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The encoder on the batch's own length: [the input of its first layer, each layer's output,
        ..., its final output (after the closing layer norm)], and the mask of the valid positions."""
        from transformers.masking_utils import create_bidirectional_mask

        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        x = x[:, : self.max_frames]
        lengths = lengths.to(x.device).clamp(1, x.shape[1])
        encoder = self.network
        valid_frames = (torch.arange(x.shape[1], device=x.device) < lengths.unsqueeze(1)).unsqueeze(1)
        h = x.transpose(1, 2).masked_fill(~valid_frames, 0.0)  # what each clip alone is padded with
        h = F.gelu(encoder.conv1(h)).masked_fill(~valid_frames, 0.0)
        h = F.gelu(encoder.conv2(h)).transpose(1, 2)  # stride 2: (batch, ceil(frames / 2), d_model)
        positions = (lengths + 1) // 2
        valid = torch.arange(h.shape[1], device=x.device) < positions.unsqueeze(1)
        h = h + encoder.embed_positions.weight[: h.shape[1]]
        h = F.dropout(h, encoder.dropout, encoder.training)
        mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=h, attention_mask=valid)
        states = [h]
        for block in encoder.layers:
            if not (encoder.training and encoder.layerdrop > 0 and torch.rand([]) < encoder.layerdrop):
                h = block(h, mask)
            states.append(h)
        states[-1] = encoder.layer_norm(h)
        return states, valid
