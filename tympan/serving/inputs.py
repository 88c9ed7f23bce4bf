"""What a request may carry and how it becomes clips: the limits, the checks on one clip and on a
request's decoded size, and V1 bodies parsed into `Clip`s (decoded later, in the batcher's feature
thread; V2 bodies are `v2`'s)."""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass, field

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest

from tympan import bundle
from tympan.audio import check_rates, decode_bytes, probe_bytes
from tympan.errors import AudioError

# ---------------------------------------------------------------- checks on one request

# A request's decoded size: 64 clips of 30 s at 16 kHz (30.7 M) fit with room; 64 such clips at
# 384 kHz (0.75 G, from 2.5 MB of FLAC silence) do not.
MAX_SAMPLES = 64_000_000


@dataclass(frozen=True)
class Limits:
    """What the server accepts: the bundle's sample rate (to resample to), the longest clip, the
    most clips in one request and the most samples that a request's audio decodes to."""

    sample_rate: int
    max_duration: float = 30.0
    max_clips: int = 64
    max_samples: int = MAX_SAMPLES


class TooLarge(InvalidInput):
    """A request whose audio decodes to more than the server takes: answered with a 413."""


def check_rate(value, where: str, limits: Limits) -> int:
    """A sample rate as a positive integer that the bundle can resample from cheaply (`audio.check_rates`)."""
    integral = isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()
    if not integral or value <= 0:
        raise InvalidInput(f"{where}: sample_rate must be a positive integer in Hz, got {value!r}")
    rate = int(value)
    try:
        check_rates(rate, limits.sample_rate)
    except ValueError as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    return rate


def check_count(count: int, where: str, limits: Limits) -> None:
    """Refuse a request with no clips, or with more than `max_clips`, before any clip is read."""
    if count < 1:
        raise InvalidInput(f"{where}: no clips (the batch is empty)")
    if count > limits.max_clips:
        raise InvalidInput(
            f"{where}: {count} clips; this server takes at most {limits.max_clips} per request (split the request)"
        )


def check_duration(frames: int, rate: int, where: str, limits: Limits) -> None:
    if frames > limits.max_duration * rate:
        seconds = frames / rate
        raise InvalidInput(
            f"{where}: audio is {seconds:.1f} s long; this server takes at most {limits.max_duration:g} s"
        )


def check_samples(samples: np.ndarray, rate: int, where: str, limits: Limits) -> np.ndarray:
    """Mono float32 samples that are non-empty, finite (in float32 too) and not too long."""
    if samples.size == 0:
        raise InvalidInput(f"{where}: empty audio (no samples)")
    check_duration(samples.size, rate, where, limits)
    samples = samples.astype(np.float32, copy=False)
    if not np.isfinite(samples).all():
        raise InvalidInput(f"{where}: samples contain NaN or infinity (or values beyond float32)")
    return samples


def decoded_size(frames: int, channels: int, rate: int, limits: Limits) -> int:
    """The samples a clip costs before the model sees it: `frames x channels` as decoded, plus
    its frames after resampling to the model's rate (none when it is at that rate already)."""
    resampled = 0 if rate == limits.sample_rate else math.ceil(frames * limits.sample_rate / rate)
    return frames * channels + resampled


def check_budget(clips: list[Clip], limits: Limits) -> None:
    """Refuse (413) a request whose clips decode to more than `max_samples` in all, before any
    clip is decoded: a few kilobytes of FLAC can declare half an hour of audio at 384 kHz."""
    total = sum(clip.size for clip in clips)
    if total > limits.max_samples:
        raise TooLarge(
            f"the request's audio decodes to {total:,} samples (frames x channels as stored, plus"
            f" resampling to {limits.sample_rate} Hz); this server takes at most {limits.max_samples:,}"
            f" per request: send fewer or shorter clips, or audio at {limits.sample_rate} Hz"
        )


NUMBERS = {int, float}  # what JSON numbers parse to; JSON true/false parse to bool, which is no number


def float_samples(data, where: str) -> np.ndarray:
    """JSON samples (a list, nested or not) as float32; booleans, strings and nulls are refused."""
    if not isinstance(data, list) or not set(map(type, flatten(data))) <= NUMBERS:
        raise InvalidInput(f"{where}: samples must be numbers: JSON numbers, not booleans, strings or null")
    try:
        return np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"{where}: samples must be numbers in a regular array") from None


def flatten(data) -> list:
    """The elements of a nested list in row-major order, taking the first element's nesting for all
    (a ragged or mixed list is refused later, when numpy reads it)."""
    if not isinstance(data, list):
        return []
    if not data or not isinstance(data[0], list):
        return data
    return [item for part in data for item in flatten(part)]


def as_flag(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{where} must be true or false, got {value!r}")
    return value


# ---------------------------------------------------------------- clips


@dataclass
class Clip:
    """One audio input of a request: float samples with their rate, or an encoded file whose header
    has been checked. Decoding waits for the batcher's feature thread (`clip_audio`). `size` is
    what it decodes to (`decoded_size`), known from the header."""

    where: str
    samples: np.ndarray | None = None
    rate: int = 0
    encoded: bytes | None = None
    embedding: bool = False
    size: int = 0


def samples_clip(samples: np.ndarray, rate: int, where: str, limits: Limits) -> Clip:
    samples = check_samples(samples, rate, where, limits)
    return Clip(where, samples, rate, size=decoded_size(samples.size, 1, rate, limits))


def encoded_clip(data: bytes | str, where: str, limits: Limits) -> Clip:
    """An audio file given as raw bytes or as a base64 string, refused from its header alone when
    it is not audio, or declares a rate or a length this server does not take."""
    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{where}: not valid base64") from None
    try:
        frames, rate, channels = probe_bytes(data, where)
    except AudioError as err:
        raise InvalidInput(str(err)) from None
    check_duration(frames, check_rate(rate, where, limits), where, limits)
    return Clip(where, encoded=data, size=decoded_size(frames, channels, rate, limits))


def clip_audio(clip: Clip, limits: Limits) -> tuple[np.ndarray, int]:
    """The clip's mono float32 samples and their rate; an encoded file is decoded and checked here."""
    if clip.encoded is None:
        return clip.samples, clip.rate
    try:
        samples, rate = decode_bytes(clip.encoded, name=clip.where)
    except AudioError as err:
        raise InvalidInput(str(err)) from None
    rate = check_rate(rate, clip.where, limits)
    return check_samples(samples, rate, clip.where, limits), rate


@dataclass
class Job:
    """A parsed request on its way through preprocess -> predict -> postprocess."""

    clips: list[Clip]
    v2: InferRequest | None = None
    results: list[bundle.Prediction] = field(default_factory=list)


V1_USAGE = 'a V1 body is {"instances": [{"b64": "<audio file>"} or {"samples": [...], "sample_rate": N}, ...]}'
V1_KEYS = {"b64", "samples", "sample_rate", "embeddings"}


def v1_clips(body, limits: Limits) -> list[Clip]:
    """The clips of a V1 `{"instances": [...]}` body."""
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list) or not body["instances"]:
        raise InvalidInput(f"missing or empty 'instances': {V1_USAGE}")
    check_count(len(body["instances"]), "instances", limits)
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be a JSON object")
    everyone = as_flag(parameters.get("embeddings", False), "parameters.embeddings")
    clips = [v1_clip(item, f"instances[{i}]", everyone, limits) for i, item in enumerate(body["instances"])]
    check_budget(clips, limits)
    return clips


def v1_clip(item, where: str, embedding: bool, limits: Limits) -> Clip:
    if not isinstance(item, dict) or ("b64" in item) == ("samples" in item):
        raise InvalidInput(f"{where}: expected an object with either 'b64' or 'samples' (plus 'sample_rate')")
    if set(item) - V1_KEYS:
        raise InvalidInput(f"{where}: unknown keys {sorted(set(item) - V1_KEYS)}; allowed: {sorted(V1_KEYS)}")
    embedding = as_flag(item.get("embeddings", embedding), f"{where}.embeddings")
    if "b64" in item:
        if not isinstance(item["b64"], str):
            raise InvalidInput(f"{where}: 'b64' must be a base64 string")
        clip = encoded_clip(item["b64"], where, limits)
        clip.embedding = embedding
        return clip
    if "sample_rate" not in item:
        raise InvalidInput(f"{where}: 'samples' need a 'sample_rate' (Hz)")
    rate = check_rate(item["sample_rate"], where, limits)
    samples = float_samples(item["samples"], where)
    if samples.ndim != 1:
        raise InvalidInput(f"{where}: 'samples' must be a flat list of numbers (mono audio)")
    clip = samples_clip(samples, rate, where, limits)
    clip.embedding = embedding
    return clip
