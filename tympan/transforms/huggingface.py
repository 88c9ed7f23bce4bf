"""Hugging Face feature extractors (`transformers`): the input that a wav2vec2, HuBERT, Whisper or
AST model expects, as one transform of the pipeline.

The extractor comes from a local directory (or JSON file) holding its preprocessor_config.json,
from a hub name where the hub is reachable, or from its config given as a mapping. A bundle
records that mapping inline (`recorded_args`), so it needs neither the directory nor the hub, and
whatever class a mapping names, only the classes in `SUPPORTED` are built. `transformers` is
imported inside functions: importing it takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tympan import checks
from tympan.targets import first_line
from tympan.transforms.spec import ShapeError, Spec, Transform

SUPPORTED = ("Wav2Vec2FeatureExtractor", "WhisperFeatureExtractor", "ASTFeatureExtractor")
CONFIG_FILE = "preprocessor_config.json"
# the settings each class's declared output depends on: positive integers, checked when it is built
SIZES = {
    "Wav2Vec2FeatureExtractor": ("sampling_rate",),
    "WhisperFeatureExtractor": ("sampling_rate", "feature_size", "n_fft", "hop_length", "nb_max_frames"),
    "ASTFeatureExtractor": ("sampling_rate", "num_mel_bins", "max_length"),
}
AST_FRAME_RATE = 100.0  # AST's Kaldi fbank shifts its 25 ms window by 10 ms at any sample rate
AST_WINDOW = 0.025
_REPO_ID = re.compile(r"[\w.-]+(/[\w.-]+)?", re.ASCII)  # what the hub accepts as a name


def _check_type(config: dict) -> str:
    """The supported class a config mapping names (its `feature_extractor_type`), else ValueError."""
    name = config.get("feature_extractor_type")
    if name not in SUPPORTED:
        raise ValueError(f"feature_extractor_type {name!r} is not supported; supported: {', '.join(SUPPORTED)}")
    return name


def read_config(extractor: str) -> dict:
    """The config mapping of the extractor in local directory (or JSON file) `extractor`, or of
    the hub repository of that name; a ValueError naming it when neither gives one."""
    from huggingface_hub import is_offline_mode
    from transformers.feature_extraction_utils import FeatureExtractionMixin

    local = Path(extractor).expanduser()
    if not local.exists() and not _REPO_ID.fullmatch(extractor):
        raise ValueError(f"no such directory: {extractor}")
    try:
        config, _ = FeatureExtractionMixin.get_feature_extractor_dict(str(local) if local.exists() else extractor)
    except (OSError, ValueError):  # missing or unreadable file, no such repository, no hub
        if local.exists():
            raise ValueError(f"{extractor}: holds no readable {CONFIG_FILE} (save_pretrained writes one)") from None
        reason = "HF_HUB_OFFLINE is set" if is_offline_mode() else "it is unreachable or has no such repository"
        raise ValueError(
            f"{extractor!r} is not a local directory, and the Hugging Face hub cannot give it ({reason}); "
            f"give a local directory holding the extractor's {CONFIG_FILE} (save_pretrained writes one)"
        ) from None
    return config


def build_extractor(config: dict):
    """The extractor a config mapping describes, of a class in `SUPPORTED` (never one that data
    names otherwise); a setting the class does not have is a ValueError naming it."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    name = _check_type(config)
    cls = getattr(transformers, name)
    known = {*vars(cls()), "feature_extractor_type", "processor_class"}
    if unknown := sorted(map(str, config.keys() - known)):
        raise ValueError(f"{name} has no setting {', '.join(unknown)}; it has: {', '.join(sorted(known))}")
    try:
        extractor = cls(**{k: v for k, v in config.items() if k != "feature_extractor_type"})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} refuses its settings: {first_line(exc)}") from None
    for setting in SIZES[name]:
        checks.positive_int(f"{name}.{setting}", getattr(extractor, setting))
    if getattr(extractor, "dither", 0.0) != 0.0:
        raise ValueError(
            f"{name}.dither must be 0, got {extractor.dither!r}: dithering draws from torch's global random "
            "generator, so the features would not be a function of the clip"
        )
    return extractor


class HuggingFaceExtractor(Transform):
    """Waveform (samples,) -> what a `transformers` feature extractor gives for it, time first.

    - Wav2Vec2FeatureExtractor (wav2vec2, HuBERT): the waveform, zero mean and unit variance per
      clip if the extractor's `do_normalize` says so;
    - WhisperFeatureExtractor: (nb_max_frames, feature_size) log-Mels at sampling_rate / hop_length
      frames/s, always padded or cut to chunk_length seconds;
    - ASTFeatureExtractor: (max_length, num_mel_bins) Kaldi fbanks at 100 frames/s, always
      max_length frames, normalised with the extractor's mean and std.

    `extractor` is a local directory (or JSON file) with the extractor's preprocessor_config.json,
    a hub name, or that config as a mapping (what the bundle records). The input must be at the
    extractor's `sampling_rate` (checked when the pipeline is built).
    """

    takes = ("waveform",)
    requires = ("transformers",)

    def __init__(self, extractor: str | dict):
        super().__init__()
        self.extractor = build_extractor(dict(extractor) if isinstance(extractor, dict) else read_config(extractor))
        self.kind = type(self.extractor).__name__

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        """Cheap checks of the argument's content (a string or a mapping already); the directory or
        hub is read when the pipeline is built (config load builds it), so a bad one fails at load too."""
        extractor = args["extractor"]
        if isinstance(extractor, dict):
            _check_type(extractor)
        elif not extractor.strip():
            raise ValueError(
                f"extractor must be a local directory, a hub name or an extractor's config mapping, got {extractor!r}"
            )

    def config(self) -> dict:
        """The extractor's settings as plain JSON data (rebuilds it exactly, without its directory)."""
        return json.loads(self.extractor.to_json_string())

    @classmethod
    def content_args(cls, args: dict) -> dict:
        """A local extractor's path becomes the digest of its preprocessor_config.json."""
        extractor = args.get("extractor")
        if isinstance(extractor, str):
            local = Path(extractor).expanduser()
            file = local / CONFIG_FILE if local.is_dir() else local
            if file.is_file():
                return {**args, "extractor": {CONFIG_FILE: hashlib.sha256(file.read_bytes()).hexdigest()}}
        return args

    def recorded_args(self, args: dict) -> dict:
        return {**args, "extractor": self.config()}

    def output(self, spec: Spec) -> Spec:
        self.check(spec)
        rate = self.extractor.sampling_rate
        if spec.frame_rate != rate:
            raise ShapeError(
                f"{self.kind} takes audio at {rate} Hz (its sampling_rate), but its input is {spec.describe()}"
            )
        fe = self.extractor
        if self.kind == "WhisperFeatureExtractor":
            return Spec("frames", spec.sample_rate, rate / fe.hop_length, size=fe.feature_size, length=fe.nb_max_frames)
        if self.kind == "ASTFeatureExtractor":
            return Spec("frames", spec.sample_rate, AST_FRAME_RATE, size=fe.num_mel_bins, length=fe.max_length)
        return spec

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != 1:
            raise ValueError(f"{self.kind} takes one clip of shape (samples,), got shape {tuple(x.shape)}")
        rate = self.extractor.sampling_rate
        if self.kind == "ASTFeatureExtractor" and len(x) < int(rate * AST_WINDOW):
            raise ValueError(f"{self.kind} needs at least {AST_WINDOW * 1000:g} ms of audio, got {len(x)} samples")
        samples = x.detach().to("cpu", torch.float32).numpy()
        batch = self.extractor(samples, sampling_rate=rate, return_tensors="np")
        values = batch[self.extractor.model_input_names[0]][0]
        if self.kind == "WhisperFeatureExtractor":
            values = values.T  # (mels, frames) -> time first
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(x.device)
