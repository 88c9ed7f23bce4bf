"""The V2 / Open Inference Protocol inputs of a served bundle, held to the protocol strictly.

A request has exactly one of the two inputs that the model's metadata advertises:

- `audio`, BYTES, shape `[batch]`: encoded audio files (base64 strings in JSON, raw bytes with the
  binary-data extension);
- `samples`, FP32, shape `[batch, time]`: mono samples in [-1, 1], with an integer
  `parameters.sample_rate` (Hz) on the input or on the request.

The name, the datatype (case and all) and the number of dimensions must be the advertised ones; the
data must hold exactly the elements its shape declares: JSON numbers for FP32 (never booleans),
strings for BYTES, nested as the shape says or flat; binary data exactly the bytes they take
(`binary.py`). A lenient reading would answer a malformed request with a prediction for something
the client did not mean to send. tritonclient and KServe's own clients send exactly this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest

from tympan.serving.inputs import (
    Clip,
    Limits,
    as_flag,
    check_budget,
    check_count,
    check_rate,
    encoded_clip,
    float_samples,
    samples_clip,
)


@dataclass(frozen=True)
class TensorSpec:
    """One input as the metadata route advertises it; `dims` names its dimensions for messages."""

    name: str
    datatype: str
    dims: tuple[str, ...]
    content: str

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": [-1] * len(self.dims)}

    def describe(self) -> str:
        return f"'{self.name}' ({self.datatype}, shape [{', '.join(self.dims)}])"


AUDIO = TensorSpec("audio", "BYTES", ("batch",), "encoded audio files (WAV, FLAC, OGG, ...), one per element")
SAMPLES = TensorSpec("samples", "FP32", ("batch", "time"), "mono samples in [-1, 1]; give parameters.sample_rate")
INPUTS = {spec.name: spec for spec in (AUDIO, SAMPLES)}
USAGE = f"send exactly one input: {AUDIO.describe()} or {SAMPLES.describe()}"


def v2_clips(request: InferRequest, limits: Limits, outputs: list[str]) -> list[Clip]:
    """The clips of a V2 request. `outputs` names what the model can answer, which is all a request
    may ask for."""
    if len(request.inputs) != 1:
        names = [tensor.name for tensor in request.inputs]
        raise InvalidInput(f"{len(names)} inputs {names}: {USAGE}")
    tensor = request.inputs[0]
    spec = check_tensor(tensor)
    if spec is AUDIO:
        clips = encoded_clips(tensor, limits)
    else:
        clips = sample_clips(tensor, request.parameters or {}, limits)
    check_budget(clips, limits)
    embedding = v2_wants_embeddings(request, outputs)
    for clip in clips:
        clip.embedding = embedding
    return clips


def check_tensor(tensor: InferInput) -> TensorSpec:
    """The advertised input that `tensor` is, once its name, datatype and shape's rank fit it."""
    spec = INPUTS.get(tensor.name)
    if spec is None:
        raise InvalidInput(f"unknown input '{tensor.name}': {USAGE}")
    if tensor.datatype != spec.datatype:
        raise InvalidInput(f"input '{spec.name}' has datatype {tensor.datatype}; it must be {spec.datatype}")
    shape = tensor.shape
    whole = isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    if not whole or len(shape) != len(spec.dims):
        raise InvalidInput(f"input '{spec.name}': shape must be [{', '.join(spec.dims)}], got {shape}")
    return spec


def encoded_clips(tensor: InferInput, limits: Limits) -> list[Clip]:
    """BYTES `[batch]`: a flat list of base64 strings (JSON) or of raw bytes (binary data)."""
    where, (batch,) = f"input '{tensor.name}'", tensor.shape
    items = tensor.data
    kind = bytes if items and isinstance(items[0], bytes) else str  # binary data, or JSON
    if not isinstance(items, list) or not all(type(item) is kind for item in items):
        raise InvalidInput(f"{where}: BYTES data must be a flat list of strings (base64 audio files)")
    if len(items) != batch:
        raise InvalidInput(f"{where}: shape [{batch}] does not match its {len(items)} elements")
    check_count(batch, where, limits)
    return [encoded_clip(item, f"{where}[{i}]", limits) for i, item in enumerate(items)]


def sample_clips(tensor: InferInput, request_parameters: dict, limits: Limits) -> list[Clip]:
    """FP32 `[batch, time]`: JSON numbers (flat, or nested as the shape) or binary float32 data."""
    where, shape = f"input '{tensor.name}'", list(tensor.shape)
    check_count(shape[0], where, limits)
    rate = (tensor.parameters or {}).get("sample_rate", request_parameters.get("sample_rate"))
    if rate is None:
        raise InvalidInput(f"{where}: samples need 'parameters': {{'sample_rate': N}} on the input or the request")
    rate = check_rate(rate, where, limits)
    if isinstance(tensor.data, np.ndarray):  # binary data, its size already checked against the shape
        samples = tensor.data
    else:
        samples = float_samples(tensor.data, where)
        if samples.ndim > 1 and list(samples.shape) != shape:
            raise InvalidInput(f"{where}: shape {shape} does not match its data, nested as {list(samples.shape)}")
    if samples.size != math.prod(shape):
        raise InvalidInput(f"{where}: shape {shape} does not match its {samples.size} elements")
    rows = samples.reshape(shape)
    return [samples_clip(row, rate, f"{where}[{i}]", limits) for i, row in enumerate(rows)]


def v2_wants_embeddings(request: InferRequest, outputs: list[str]) -> bool:
    """True when the request says `embeddings: true` or asks for the `embedding` output; an output
    the model does not have (`outputs`) is refused."""
    asked = [output.name for output in request.request_outputs or []]
    unknown = [name for name in asked if name not in outputs]
    if unknown:
        raise InvalidInput(f"unknown outputs {unknown}; this model has {outputs}")
    flag = as_flag((request.parameters or {}).get("embeddings", False), "parameters.embeddings")
    return flag or "embedding" in asked
