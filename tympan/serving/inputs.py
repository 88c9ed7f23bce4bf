"""What a request may carry and how it becomes clips: the limits, the checks on one clip, and V1 / V2
bodies parsed into `Clip`s (decoded later, in the batcher's feature thread)."""

from __future__ import annotations

import base64
import binascii
import io
import math
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest

from tympan import bundle
from tympan.audio import check_rates, decode_bytes
from tympan.errors import AudioError

FLOATS = {"FP32": np.float32, "FP64": np.float64}


# ---------------------------------------------------------------- checks on one request


@dataclass(frozen=True)
class Limits:
    """What the server accepts: the bundle's sample rate (to resample to), the longest clip and the
    most clips in one request."""

    sample_rate: int
    max_duration: float = 30.0
    max_clips: int = 64


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


def header_frames(data: bytes) -> tuple[int, int] | None:
    """(frames, rate) as an audio file's header declares them, or None when it cannot be read."""
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError):
        return None
    return (info.frames, info.samplerate) if info.samplerate > 0 else None


def float_samples(data, where: str, dtype=np.float32) -> np.ndarray:
    try:
        return np.asarray(data, dtype=dtype)
    except (TypeError, ValueError):
        raise InvalidInput(f"{where}: samples must be numbers in a regular array") from None


def as_flag(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{where} must be true or false, got {value!r}")
    return value


# ---------------------------------------------------------------- clips


@dataclass
class Clip:
    """One audio input of a request: float samples with their rate, or an encoded file whose header
    has been checked. Decoding waits for the batcher's feature thread (`clip_audio`)."""

    where: str
    samples: np.ndarray | None = None
    rate: int = 0
    encoded: bytes | None = None
    embedding: bool = False


def encoded_clip(data: bytes | str, where: str, limits: Limits) -> Clip:
    """An audio file given as raw bytes or as a base64 string, refused early when its header
    declares a rate or a length this server does not take."""
    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{where}: not valid base64") from None
    declared = header_frames(data)
    if declared:
        frames, rate = declared
        check_duration(frames, check_rate(rate, where, limits), where, limits)
    return Clip(where, encoded=data)


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
    return [v1_clip(item, f"instances[{i}]", everyone, limits) for i, item in enumerate(body["instances"])]


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
    return Clip(where, check_samples(samples, rate, where, limits), rate, embedding=embedding)


def v2_clips(request: InferRequest, limits: Limits, outputs: list[str]) -> list[Clip]:
    """The clips of a V2 request: one BYTES input of encoded files or one FP32 input of samples.
    `outputs` names what the model can answer, which is all a request may ask for."""
    if len(request.inputs) != 1:
        names = [tensor.name for tensor in request.inputs]
        raise InvalidInput(f"expected exactly one input ('audio' BYTES or 'samples' FP32), got {names}")
    tensor = request.inputs[0]
    if tensor.datatype == "BYTES":
        clips = encoded_clips(tensor, limits)
    elif tensor.datatype in FLOATS:
        clips = sample_clips(tensor, request.parameters or {}, limits)
    else:
        raise InvalidInput(
            f"input '{tensor.name}' has datatype {tensor.datatype}; send BYTES (audio files) or FP32 ([batch, time])"
        )
    embedding = v2_wants_embeddings(request, outputs)
    for clip in clips:
        clip.embedding = embedding
    return clips


def encoded_clips(tensor: InferInput, limits: Limits) -> list[Clip]:
    items = flatten(tensor.data)
    if not items or len(items) != math.prod(tensor.shape):
        raise InvalidInput(f"input '{tensor.name}': shape {tensor.shape} does not match its {len(items)} items")
    check_count(len(items), f"input '{tensor.name}'", limits)
    clips = []
    for i, item in enumerate(items):
        where = f"input '{tensor.name}'[{i}]"
        if not isinstance(item, bytes | str):
            raise InvalidInput(f"{where}: expected an audio file (raw bytes, or a base64 string in JSON)")
        clips.append(encoded_clip(item, where, limits))
    return clips


def sample_clips(tensor: InferInput, request_parameters: dict, limits: Limits) -> list[Clip]:
    where, shape = f"input '{tensor.name}'", list(tensor.shape)
    if len(shape) not in (1, 2) or any(not isinstance(d, int) or d < 0 for d in shape):
        raise InvalidInput(f"{where}: expected shape [batch, time], got {shape}")
    check_count(shape[0] if len(shape) == 2 else 1, where, limits)
    rate = (tensor.parameters or {}).get("sample_rate", request_parameters.get("sample_rate"))
    if rate is None:
        raise InvalidInput(f"{where}: samples need 'parameters': {{'sample_rate': N}} on the input or the request")
    rate = check_rate(rate, where, limits)
    samples = float_samples(tensor.data, where, FLOATS[tensor.datatype])
    if samples.size != math.prod(shape):
        raise InvalidInput(f"{where}: expected shape [batch, time] that matches the data, got {shape}")
    rows = samples.reshape(shape) if len(shape) == 2 else samples[None]
    return [
        Clip(f"{where}[{i}]", check_samples(row, rate, f"{where}[{i}]", limits), rate) for i, row in enumerate(rows)
    ]


def flatten(data) -> list:
    """The elements of a nested list (or array) of BYTES data, in row-major order."""
    if data is None:
        return []
    if isinstance(data, np.ndarray):
        return list(data.reshape(-1))
    if not isinstance(data, list):
        return [data]
    return [item for part in data for item in flatten(part)]


def v2_wants_embeddings(request: InferRequest, outputs: list[str]) -> bool:
    """True when the request says `embeddings: true` or asks for the `embedding` output; an output
    the model does not have (`outputs`) is refused."""
    asked = [output.name for output in request.request_outputs or []]
    unknown = [name for name in asked if name not in outputs]
    if unknown:
        raise InvalidInput(f"unknown outputs {unknown}; this model has {outputs}")
    flag = as_flag((request.parameters or {}).get("embeddings", False), "parameters.embeddings")
    return flag or "embedding" in asked
