"""ECAPA-TDNN (Desplanques et al., 2020), SpeechBrain's implementation, on filter banks, then an FFNN.

The network is `speechbrain.lobes.models.ECAPA_TDNN` itself (imported when a model is built), so
SpeechBrain's checkpoints fit it: `pretrained` names a SpeechBrain model directory holding
`embedding_model.ckpt` (or that file, or a hub id such as speechbrain/spkrec-ecapa-voxceleb, of
which only that file is fetched: see models.sources), read as data by `weights.load_weights`. The directory's
`hyperparams.yaml` is never opened: its `!new:`/`!apply:` tags build arbitrary objects, so the
architecture comes from this class's arguments (copy them from the yaml's `embedding_model`
block by eye; a mismatch is an error naming the keys whose shapes differ).

SpeechBrain pads its convolutions by reflection and sizes its pooling masks from relative
lengths. Here every dilated convolution's input is reflected at each clip's own last frame
instead of at the batch's (a forward pre-hook), and the masks are built from exact frame counts,
so in eval mode a clip gives the same embedding alone and in a padded batch. Batch norm in
training mode still sees the padding, as in SpeechBrain.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path

import torch
from torch import nn

from tympan.components import PositiveInt, Probability, WeightsPath, Widths
from tympan.errors import DataError
from tympan.models import sources
from tympan.models.base import AudioModel
from tympan.models.ffnn import FFNN
from tympan.models.weights import load_weights

CHECKPOINT = "embedding_model.ckpt"  # SpeechBrain's name for the embedding network's state dict

# each clip's valid frames while `ECAPA.embed` runs (read by the convolutions' pre-hooks)
_VALID: ContextVar[torch.Tensor | None] = ContextVar("ecapa_valid_frames", default=None)


class ECAPA(AudioModel):
    """Frames (batch, frames, n_mels) -> ECAPA-TDNN embedding (`lin_neurons`) -> FFNN head.

    Arguments after `n_outputs` are SpeechBrain's `ECAPA_TDNN` ones (defaults: its VoxCeleb model
    on 80 filter banks) plus `hidden`/`head_dropout` for the FFNN. `freeze` keeps the ECAPA part
    fixed (no gradients, batch norm in eval mode), a pretrained speaker encoder under a new head.
    """

    accepts = ("frames",)
    head_modules = ("ffnn",)
    requires = ("speechbrain",)
    weights_from = (
        "a SpeechBrain model directory (its embedding_model.ckpt; hyperparams.yaml is never run), or its hub id"
    )

    def __init__(
        self,
        n_mels: PositiveInt = 80,
        n_outputs: PositiveInt = 10,
        channels: Widths = (512, 512, 512, 512, 1536),
        kernel_sizes: Widths = (5, 3, 3, 3, 1),
        dilations: Widths = (1, 2, 3, 4, 1),
        attention_channels: PositiveInt = 128,
        res2net_scale: PositiveInt = 8,
        se_channels: PositiveInt = 128,
        global_context: bool = True,
        lin_neurons: PositiveInt = 192,
        dropout: Probability = 0.0,
        hidden: list[PositiveInt] = (256,),
        head_dropout: Probability = 0.2,
        freeze: bool = False,
        pretrained: WeightsPath | None = None,
    ):
        super().__init__()
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        self.ecapa = ECAPA_TDNN(
            n_mels, lin_neurons=lin_neurons, channels=list(channels), kernel_sizes=list(kernel_sizes),
            dilations=list(dilations), attention_channels=attention_channels, res2net_scale=res2net_scale,
            se_channels=se_channels, global_context=global_context, dropout=dropout,
        )  # fmt: skip
        self.ffnn = FFNN(lin_neurons, n_outputs, list(hidden), head_dropout, norm="layer")
        reach = 0
        for module in self.ecapa.modules():
            # SpeechBrain's Conv1d wrapper pads "same" by reflection: make it reflect at each clip's end
            if getattr(module, "padding", None) == "same" and module.kernel_size > 1:
                module.register_forward_pre_hook(_reflect_at_clip_end)
                reach = max(reach, module.dilation * (module.kernel_size - 1) // 2)
        self.min_frames = reach + 1  # reflection needs more frames than it pads
        self.freeze = freeze
        if pretrained is not None:
            try:
                self.provenance = load_weights(self.ecapa, str(_checkpoint(pretrained))).provenance
            except DataError as exc:
                hint = "model.args must describe its network: its hyperparams.yaml (which tympan never runs) says how"
                raise DataError(f"{exc}; {hint}" if "do not fit" in str(exc) else str(exc)) from None
        if freeze:
            self.ecapa.requires_grad_(False)
            self.ecapa.eval()

    @staticmethod
    def check_together(args: dict) -> None:
        channels = args["channels"]
        for name in ("kernel_sizes", "dilations"):
            if len(args[name]) != len(channels):
                raise ValueError(
                    f"{name} must have one entry per layer of channels ({len(channels)}), got {args[name]}"
                )
        if len(channels) < 3:
            raise ValueError(
                f"channels must list at least 3 layers (a TDNN, SE-Res2Net blocks, the MFA), got {channels}"
            )
        scale = args["res2net_scale"]
        uneven = [c for c in channels[1:-1] if c % scale]
        if uneven:
            raise ValueError(f"res2net_scale={scale} must divide the SE-Res2Net blocks' channels, not {uneven[0]}")

    def train(self, mode: bool = True) -> ECAPA:
        super().train(mode)
        if self.freeze:
            self.ecapa.eval()
        return self

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, frames, n_mels) -> (batch, lin_neurons); `lengths` in frames (clips shorter than
        `min_frames` count as `min_frames` long, their padding included)."""
        frames = x.shape[1]
        if lengths is None:
            lengths = torch.full((x.shape[0],), frames, dtype=torch.long)
        valid = lengths.to(x.device).clamp(self.min_frames, frames)
        # SpeechBrain masks positions < relative length x frames: half a frame less keeps
        # float rounding from adding or dropping the last one
        relative = (valid.to(torch.float32) - 0.5) / frames
        token = _VALID.set(valid)
        try:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
                return self.ecapa(x, relative).squeeze(1)
        finally:
            _VALID.reset(token)

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.ffnn(embedding)


def _reflect_at_clip_end(module: nn.Module, inputs: tuple[torch.Tensor]) -> tuple[torch.Tensor] | None:
    """(batch, channels, time): positions past a clip's last frame become its reflection there,
    as SpeechBrain's padding gives the clip alone."""
    valid = _VALID.get()
    x = inputs[0]
    if valid is None or bool((valid >= x.shape[-1]).all()):
        return None
    t = torch.arange(x.shape[-1], device=x.device)
    end = valid.unsqueeze(1) - 1
    index = torch.where(t <= end, t, (2 * end - t).clamp(min=0))
    return (x.gather(2, index.unsqueeze(1).expand_as(x)),)


def _checkpoint(pretrained: str) -> Path:
    """The embedding network's file: `pretrained` itself, `embedding_model.ckpt` in that directory,
    or that file of the hub repository `pretrained` names."""
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return path / CHECKPOINT
    if not path.exists() and sources.HUB_ID.fullmatch(pretrained):
        return sources.hub_file(pretrained, CHECKPOINT)
    return path
