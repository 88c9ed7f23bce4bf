"""A frozen model's embedding as a feature: computed once by `tympan preprocess`, so a small head
trains on stored vectors in seconds instead of running the backbone every epoch.

`model` is any of tympan's model families as `{target, args}` (a preset's `target` and `args`);
its `embed` output for the whole clip is the feature. The backbone is frozen and in eval mode
(dropout off, batch norm on its running statistics), so the stored vector is a function of the
clip and the weights alone. The weights key the feature store: `pretrained` is replaced by the
sha256 of the file it names (`content_args`), so other weights make another store.

The bundle carries the backbone's weights with the pipeline's other state and rebuilds it without
its `pretrained` source (`recorded_args`), then replays it online at inference, so served answers
equal the run's. Only tympan's own model classes are taken (`tympan.models`): the target is data
in a bundle, and is resolved as such everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tympan import downloads
from tympan.components import PositiveInt, build
from tympan.models import sources
from tympan.models.base import AudioModel, sizes
from tympan.targets import RefusedTarget, resolve_own
from tympan.transforms.spec import ShapeError, Spec, Transform


class Embedding(Transform):
    """A clip (of the kind the model accepts) -> vector: the frozen model's `embed` output."""

    takes = ("waveform", "frames", "vector", "image")

    def __init__(self, model: dict[str, Any], sample_rate: PositiveInt = 16000):
        super().__init__()
        self.model_config = model
        self.sample_rate = sample_rate
        self.backbone: AudioModel | None = None  # built by `output`, when the input is known

    @staticmethod
    def check_together(args: dict) -> None:
        model = args["model"]
        if set(model) - {"target", "args"} or not isinstance(model.get("target"), str):
            raise ValueError(f"model must be {{target: tympan.models.<module>:<Class>, args: {{...}}}}, got {model!r}")
        if not isinstance(model.get("args") or {}, dict):
            raise ValueError(f"model.args must be a mapping, got {model['args']!r}")
        _model_class(model["target"])

    @classmethod
    def requirements(cls, args: dict) -> tuple[str, ...]:
        """The backbone's: a bundle replays it."""
        return _model_class(args["model"]["target"]).requires

    @classmethod
    def content_args(cls, args: dict) -> dict:
        """The model's `pretrained` source as the sha256 of its weights, so new weights make a new store."""
        model = dict(args.get("model") or {})
        model_args = dict(model.get("args") or {})
        source = model_args.get("pretrained")
        if isinstance(source, str) and sources.is_local(source) and Path(source).is_file():
            model_args["pretrained"] = {"sha256": downloads.digest(Path(source))}
        return {**args, "model": {**model, "args": model_args}}

    def recorded_args(self, args: dict) -> dict:
        """Without the `pretrained` source: the bundle carries the weights in the pipeline's state."""
        model = dict(args["model"])
        model["args"] = {k: v for k, v in (model.get("args") or {}).items() if k != "pretrained"}
        return {**args, "model": model}

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        cls = _model_class(self.model_config["target"])
        if spec.kind not in cls.accepts:
            raise ShapeError(
                f"Embedding's {cls.__name__} accepts {' or '.join(cls.accepts)}, but its input is {spec.describe()}"
            )
        if self.backbone is None:
            args = dict(self.model_config.get("args") or {})
            filled = {k: v for k, v in sizes(spec, 1, cls).items() if k not in args}
            self.backbone = build(cls, args, fixed=filled, where="model").eval().requires_grad_(False)
            self.size = int(self._embed(self._example(spec, self.backbone.min_frames)).shape[-1])
        return Spec("vector", spec.sample_rate, size=self.size)

    def train(self, mode: bool = True) -> Embedding:
        """Always frozen: training a head never switches the backbone's dropout or batch norm on."""
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._embed(x)

    @torch.no_grad()
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        lengths = torch.tensor([x.shape[0]]) if x.dim() in (1, 2) else None
        return self.backbone.embed(x.unsqueeze(0), lengths)[0]

    @staticmethod
    def _example(spec: Spec, min_frames: int) -> torch.Tensor:
        """A silent input of this spec: its fixed length, else one second (or the model's minimum)."""
        if spec.kind == "image":
            return torch.zeros(spec.shape)
        if spec.kind == "vector":
            return torch.zeros(spec.size)
        frames = max(min_frames, round(spec.frame_rate or spec.sample_rate))
        frames = spec.length or frames
        return torch.zeros(frames) if spec.kind == "waveform" else torch.zeros(frames, spec.size)


def _model_class(target: str) -> type:
    try:
        return resolve_own(target, "tympan.models", AudioModel)
    except RefusedTarget as exc:
        raise ValueError(f"model: {exc}; an Embedding takes one of tympan's own model classes") from None
