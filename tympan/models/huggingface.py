"""Pretrained `transformers` audio networks as data: their config and weights, never their code.

A source is a local directory (config.json plus safetensors or torch weights, as `save_pretrained`
writes it) or a Hugging Face hub id, fetched once through `huggingface_hub` (tympan.models.sources:
into $TYMPAN_CACHE, or from $TYMPAN_WEIGHTS_MIRROR); a local directory never touches the network.
The network's class is picked from the config's `model_type` among `MODEL_TYPES` only: a config
asking for code of its own (`auto_map`, ...) is refused, and the network is built from the config
object, not by `from_pretrained`. Its weights go through tympan's loader (`load_weights`:
safetensors, or torch files read with weights_only), after transformers' own renames of older
checkpoint layouts; the source's task heads (CTC, pre-training, classifier, Whisper's decoder) are
dropped by name, and every other key must match both ways.

`transformers` is imported inside functions: importing it takes seconds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from torch import nn

from tympan.errors import DataError
from tympan.models import sources
from tympan.models.weights import SHOWN, load_weights

log = logging.getLogger("tympan")

CONFIG_FILE = "config.json"
# model_type -> (config class, network class): the only classes a source can ask for
MODEL_TYPES: dict[str, tuple[str, str]] = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel"),
    "whisper": ("WhisperConfig", "models.whisper.modeling_whisper.WhisperEncoder"),  # not exported at the top
    "audio-spectrogram-transformer": ("ASTConfig", "ASTModel"),
}
# where a checkpoint of a task model keeps the network: the prefix its keys carry
PREFIXES: dict[str, tuple[str, ...]] = {
    "wav2vec2": ("wav2vec2.",),
    "hubert": ("hubert.",),
    "wavlm": ("wavlm.",),
    "data2vec-audio": ("data2vec_audio.",),
    "whisper": ("model.encoder.", "encoder."),
    "audio-spectrogram-transformer": ("audio_spectrogram_transformer.",),
}
# the task heads of the published checkpoints (and of transformers' task classes: pre-training, CTC,
# classification, x-vector): tympan's own head replaces them
_W2V2_HEADS = ("quantizer.", "project_q.", "project_hid.", "lm_head.", "projector.", "classifier.", "layer_weights",
               "feature_extractor.weight", "feature_extractor.bias", "tdnn.", "objective.")  # fmt: skip
HEADS: dict[str, tuple[str, ...]] = {
    "wav2vec2": _W2V2_HEADS,
    "hubert": _W2V2_HEADS,
    "wavlm": _W2V2_HEADS,
    "data2vec-audio": _W2V2_HEADS,
    "whisper": ("model.decoder.", "decoder.", "proj_out.", "projector.", "classifier."),
    "audio-spectrogram-transformer": ("classifier.",),
}
# config keys that make transformers import code shipped with the checkpoint
REMOTE_CODE_KEYS = ("auto_map", "trust_remote_code", "custom_pipelines")
# weights files in the order they are looked for; an index names the shards of a sharded checkpoint
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+", re.ASCII)  # what the hub accepts as a model id


def check_config(config: Any, allowed: Iterable[str], where: str = "config") -> None:
    """Refuse (ValueError naming the key) a config mapping that asks for remote code, names a
    model_type outside `allowed`, or holds anything but JSON data with finite numbers."""
    if not isinstance(config, dict):
        raise ValueError(f"{where} must be a mapping, got {config!r}")
    for key in REMOTE_CODE_KEYS:
        if key in config:
            raise ValueError(
                f"{where}.{key}: the config asks for code shipped with the model, which tympan never runs; "
                "only transformers' own audio classes are built"
            )
    model_type = config.get("model_type")
    allowed = tuple(allowed)
    if model_type is not None and model_type not in allowed:
        raise ValueError(f"{where}.model_type must be one of {', '.join(allowed)}, got {model_type!r}")
    _check_data(config, where)


def _check_data(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise ValueError(f"{where}: keys must be strings, got {key!r}")
            _check_data(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_data(item, f"{where}.{i}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise ValueError(f"{where} must be plain data (numbers, strings, lists, mappings), got {value!r}")


def is_local(pretrained: str) -> bool:
    """Whether `pretrained` names a local path (else it is read as a hub id)."""
    return Path(pretrained).expanduser().exists() or not _REPO_ID.fullmatch(pretrained)


def local_config(pretrained: str | None, overrides: dict | None) -> dict | None:
    """The config that a local source plus `overrides` give, read as JSON only (cheap: config load
    uses it to check the features against the network); None for a hub id, which is not fetched."""
    if pretrained is not None and not is_local(pretrained):
        return None
    base = _read_json(Path(pretrained).expanduser() / CONFIG_FILE) if pretrained else {}
    return {**base, **(overrides or {})}


def source_directory(pretrained: str) -> Path:
    """The local directory holding the source's config.json and weights: `pretrained` itself, or
    the hub repository's snapshot through huggingface_hub (tympan.models.sources.hub_dir: fetched
    once into $TYMPAN_CACHE, or read from $TYMPAN_WEIGHTS_MIRROR), safetensors preferred."""
    local = Path(pretrained).expanduser()
    if local.is_dir():
        return local
    if is_local(pretrained):
        raise DataError(f"pretrained: {pretrained}: no such directory (nor a hub id such as facebook/wav2vec2-base)")
    try:
        directory = sources.hub_dir(pretrained, [CONFIG_FILE, "model.safetensors", "model*.safetensors*"])
        if not any((directory / name).is_file() for name in WEIGHT_FILES[:2]):
            directory = sources.hub_dir(pretrained, [CONFIG_FILE, "pytorch_model*.bin*"])
    except DataError as exc:
        raise DataError(f"{exc} (and no local directory {pretrained} exists)") from None
    return directory


def read_source(pretrained: str, allowed: Iterable[str]) -> tuple[dict, Path]:
    """(config mapping, directory) of a pretrained source, its config checked (`check_config`)."""
    directory = source_directory(pretrained)
    config = _read_json(directory / CONFIG_FILE)
    try:
        check_config(config, allowed, where=str(directory / CONFIG_FILE))
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if "model_type" not in config:
        raise DataError(f"{directory / CONFIG_FILE}: names no model_type")
    return config, directory


def build_config(config: dict, checked: Iterable[str] = ()):
    """The transformers config object of a checked mapping (`model_type` picks the class). A key
    of `checked` (the user's own settings) that the class does not know is a ValueError naming it:
    a misspelt size would otherwise build the default silently. (A source's config.json may carry
    settings of older versions; those are passed on as transformers does.)"""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    model_type = config["model_type"]
    cls = getattr(transformers, MODEL_TYPES[model_type][0])
    known = known_keys(model_type)
    unknown = sorted(k for k in checked if k not in known)
    if unknown:
        raise ValueError(f"config: {cls.__name__} has no setting {', '.join(unknown)}")
    try:
        return cls.from_dict({k: v for k, v in config.items() if k != "model_type"})
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"config: {cls.__name__} refuses it: {_first_line(exc)}") from None


@functools.cache
def known_keys(model_type: str) -> frozenset[str]:
    """The settings a config class has (those of its default instance)."""
    import transformers

    return frozenset({*getattr(transformers, MODEL_TYPES[model_type][0])().to_dict(), "model_type"})


def recorded_config(hf_config) -> dict:
    """The config as plain JSON data that rebuilds the same network: the class's own settings
    (keys an older config.json carried that the class no longer has are left out)."""
    known = known_keys(hf_config.model_type)
    plain = json.loads(hf_config.to_json_string(use_diff=False))
    return {k: v for k, v in plain.items() if k in known}


def build_network(hf_config) -> nn.Module:
    """The network of `hf_config`'s model_type, randomly initialised."""
    import importlib

    module, _, name = f"transformers.{MODEL_TYPES[hf_config.model_type][1]}".rpartition(".")
    return getattr(importlib.import_module(module), name)(hf_config)


def load_network(network: nn.Module, directory: Path, model_type: str, optional: Iterable[str] = ()) -> str:
    """Load the source's weights into `network`; a DataError naming the keys if they do not fit.

    The source's task heads (`HEADS`) are dropped; every other key of the file must be one of the
    network's, and every key of the network must be in the file, except `optional` ones, which
    keep their initialisation. Returns the sha256 of what was read (of the shards' digests, for
    a sharded checkpoint).
    """
    files = _weights_files(directory)
    rename = _renamer(network, model_type, set(network.state_dict()))
    dropped: list[str] = []

    def key_map(key: str) -> str | None:
        new = rename(key)
        if new is None:
            dropped.append(key)
        return new

    loaded: set[str] = set()
    unexpected: list[str] = []
    digests = []
    for file in files:
        result = load_weights(network, file, key_map=key_map, strict=False)
        loaded.update(result.loaded)
        unexpected += result.unexpected
        digests.append(result.provenance.sha256)
    optional = set(optional)
    missing = [k for k in network.state_dict() if k not in loaded and k not in optional]
    problems = []
    if missing:
        problems.append(f"{len(missing)} keys of the network missing from the file: {_some(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} keys of the file unknown to the network: {_some(unexpected)}")
    if problems:
        where = files[0] if len(files) == 1 else directory
        raise DataError(f"{where}: weights do not fit {type(network).__name__}: " + "; ".join(problems))
    if dropped:
        log.info("%s: %d keys of the source's own heads left out: %s", directory, len(dropped), _some(dropped))
    return digests[0] if len(digests) == 1 else hashlib.sha256(" ".join(digests).encode()).hexdigest()


def _renamer(network: nn.Module, model_type: str, own: set[str]) -> Callable[[str], str | None]:
    """A checkpoint key -> the network's key (transformers' renames of older layouts, then the task
    model's prefix taken off), or None for a key of the source's heads."""
    renames = _transformers_renames(network)
    prefixes, heads = PREFIXES[model_type], HEADS[model_type]

    def rename(key: str) -> str | None:
        key = renames(key)
        inner = next((key[len(p) :] for p in prefixes if key.startswith(p)), None)
        if inner is not None:
            key = inner
        elif key.startswith(heads):
            return None  # a head of the source's task model
        if key == "masked_spec_embed" and key not in own:
            return None  # the SpecAugment vector, of a config that now turns SpecAugment off
        return key

    return rename


def _transformers_renames(network: nn.Module) -> Callable[[str], str]:
    """transformers' own renames of older checkpoint layouts for this network (e.g. AST's
    `encoder.layer.N.attention.attention.query` -> `layers.N.attention.q_proj`, `weight_g` ->
    weight-norm parametrisations), as `from_pretrained` applies them. Renames only: a conversion
    that splits or merges tensors is not something tympan does."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming, rename_source_key

    transforms = get_model_conversion_mapping(network)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if not isinstance(t, WeightRenaming)]

    def rename(key: str) -> str:
        new, converted = rename_source_key(key, renamings, converters)
        if converted is not None:
            raise DataError(f"{key}: this checkpoint layout needs a tensor conversion that tympan does not do")
        return new

    return rename


def _weights_files(directory: Path) -> list[Path]:
    for name in WEIGHT_FILES:
        path = directory / name
        if path.is_file():
            if not name.endswith(".index.json"):
                return [path]
            shards = sorted(set(_index(path).values()))
            for shard in shards:
                if Path(shard).name != shard:
                    raise DataError(f"{path}: shard {shard!r} is not a file name in its directory")
            return [directory / shard for shard in shards]
    raise DataError(f"{directory}: holds no weights file ({', '.join(WEIGHT_FILES)}); save_pretrained writes one")


def _index(path: Path) -> dict[str, str]:
    weight_map = _read_json(path).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise DataError(f"{path}: no weight_map of key -> shard file")
    return weight_map


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: no such file (save_pretrained writes {path.name})")
    try:
        content = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(content, dict):
        raise DataError(f"{path}: must hold a JSON object")
    return content


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a finite number")


def _some(keys: list[str]) -> str:
    more = f", ... ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
