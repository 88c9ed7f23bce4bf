"""Serve a tympan bundle over HTTP with KServe: V1 and V2 / Open Inference Protocol.

`serve(location)` loads a bundle (a directory or `models:/NAME@ALIAS`) and starts a KServe
ModelServer on `host:port` (127.0.0.1 by default: this machine only; the serving image and the chart
pass 0.0.0.0); the model name in the URLs defaults to the bundle's experiment name. Audio arrives
as an encoded file (WAV, FLAC, OGG, ...) or as mono float samples with their sample rate; the
bundle resamples and computes the training-time features itself.

V1, `POST /v1/models/NAME:predict`::

    {"instances": [{"b64": "<base64 of an audio file>"},
                   {"samples": [0.01, -0.02, ...], "sample_rate": 8000, "embeddings": true}],
     "parameters": {"embeddings": false}}                                 # optional
    -> {"predictions": [{"label": "3", "probabilities": {"0": 0.01, ..., "9": 0.02}},
                        {"label": "7", "probabilities": {...}, "embedding": [0.31, ...]}]}

An instance gets an `embedding` when it, or the request's `parameters`, say `"embeddings": true`.

V2, `POST /v2/models/NAME/infer`, with exactly one input:

- BYTES, shape `[batch]` (name e.g. `audio`): encoded audio files, as base64 strings in JSON or
  as raw bytes with the binary-data extension (`tritonclient.http` with `binary_data=True`);
- FP32, shape `[batch, time]` (name e.g. `samples`): samples in [-1, 1], with the rate in
  `"parameters": {"sample_rate": 8000}` on the input or on the request.

Outputs: `label` (BYTES `[batch]`), `probabilities` (FP32 `[batch, n_classes]`; its
`parameters.labels` is the JSON-encoded list of class names in column order) and `embedding`
(FP32 `[batch, dim]`) when the request has `"parameters": {"embeddings": true}` or asks for that
output by name. Requested `outputs` (and their `binary_data` flags) are honoured.

`GET /v2/models/NAME` describes these tensors. KServe's metadata schema drops `parameters`, so
this module answers that route itself with KServe's fields plus tensor and model `parameters`
(class names as a JSON string, the sample rate and the request limits).

Health: `GET /` and `/v2/health/live` (alive while the batcher runs), `/v2/health/ready`,
`/v2/models/NAME/ready` and `/v1/models/NAME` (ready only while the model can answer: loaded, and
its batcher running). KServe's model-repository routes (`/v2/repository/...`: load and unload) are
refused with a 403: this server serves the one model it was started with, and any client could
otherwise unload it.

Bounded work: a body over `max_body_mb` gets a 413 before it is read; a request has at most
`max_clips` clips, each at most `max_duration` seconds at a sample rate of at most 768 kHz that the
bundle can resample cheaply. Bad input gets a 400 whose `error` names the input and what was wrong
(FastAPI answers 422 for V2 JSON that does not fit the protocol's schema); it never takes the
server down.

The event loop only parses requests and writes answers: decoding, resampling and features run in
the batcher's feature thread and the forward in its model thread, batch after batch, each batch
filled with one clip of each waiting request in turn (see `MicroBatcher`). Results do not depend on
what a clip was batched with. Throughput is bounded by the CPU (see bench/serve_latency.py); more
throughput means more replicas.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import math
import struct
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import kserve
import numpy as np
import soundfile as sf
import torch
from kserve.errors import InvalidInput, ModelNotFound, ServerNotLive
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput

from tympan import bundle
from tympan.audio import check_rates, decode_bytes
from tympan.errors import AudioError, ConfigError

OUTPUTS = ("label", "probabilities", "embedding")
FLOATS = {"FP32": np.float32, "FP64": np.float64}
BINARY_HEADER = "inference-header-content-length"
# The highest sample rate served: above it, resampling costs more than the model (16000 * 2**20 Hz
# passes the kernel-size check of `check_rates` and took 0.6 s of CPU before it failed).
MAX_RATE = 768_000
# KServe's model-repository API: load and unload any model, open to every client.
REPOSITORY_ROUTES = "/v2/repository"


# ---------------------------------------------------------------- checks on one request


@dataclass(frozen=True)
class Limits:
    """What the server accepts: the bundle's sample rate (to resample to), the longest clip and the
    most clips in one request."""

    sample_rate: int
    max_duration: float = 30.0
    max_clips: int = 64


def check_rate(value, where: str, limits: Limits) -> int:
    """A sample rate as a positive integer, at most MAX_RATE, that the bundle can resample from cheaply."""
    integral = isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()
    if not integral or value <= 0:
        raise InvalidInput(f"{where}: sample_rate must be a positive integer in Hz, got {value!r}")
    rate = int(value)
    if rate > MAX_RATE:
        raise InvalidInput(f"{where}: sample_rate {rate} Hz is above the {MAX_RATE} Hz this server takes")
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


def v2_clips(request: InferRequest, limits: Limits) -> list[Clip]:
    """The clips of a V2 request: one BYTES input of encoded files or one FP32 input of samples."""
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
    embedding = v2_wants_embeddings(request)
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


def v2_wants_embeddings(request: InferRequest) -> bool:
    """True when the request says `embeddings: true` or asks for the `embedding` output."""
    asked = [output.name for output in request.request_outputs or []]
    unknown = [name for name in asked if name not in OUTPUTS]
    if unknown:
        raise InvalidInput(f"unknown outputs {unknown}; this model has {list(OUTPUTS)}")
    flag = as_flag((request.parameters or {}).get("embeddings", False), "parameters.embeddings")
    return flag or "embedding" in asked


# ---------------------------------------------------------------- binary-data extension


def parse_binary_request(body: bytes, headers: dict, model_name: str) -> InferRequest:
    """A V2 request sent as JSON followed by raw tensor bytes (the binary-data extension).

    KServe 0.21 turns raw BYTES elements back into UTF-8 text, which fails (500) for audio files,
    and answers malformed framing with a KeyError (500). Here BYTES elements stay `bytes`, and
    framing errors are 400s. A JSON body sent without a JSON content type is read as JSON.
    """
    size = headers.get(BINARY_HEADER)
    try:
        size = len(body) if size is None else int(size)
        if not 0 < size <= len(body):
            raise ValueError(size)
        header = json.loads(body[:size])
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(
            f"V2 body is not JSON: send Content-Type: application/json, or binary data with an {BINARY_HEADER} header"
        ) from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput("a V2 body needs 'inputs': a list of tensors")
    inputs, offset = [], size
    for i, spec in enumerate(header["inputs"]):
        tensor, offset = binary_tensor(spec, body, offset, f"inputs[{i}]")
        inputs.append(tensor)
    return InferRequest(
        model_name=model_name,
        infer_inputs=inputs,
        request_id=header.get("id"),
        parameters=object_or_none(header.get("parameters"), "parameters"),
        request_outputs=requested_outputs(header.get("outputs")),
    )


def object_or_none(value, where: str) -> dict | None:
    if value is not None and not isinstance(value, dict):
        raise InvalidInput(f"'{where}' must be a JSON object")
    return value


def requested_outputs(outputs) -> list[RequestedOutput] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and "name" in o for o in outputs):
        raise InvalidInput("'outputs' must be a list of {'name': ...} objects")
    return [RequestedOutput(o["name"], object_or_none(o.get("parameters"), "outputs.parameters")) for o in outputs]


def binary_tensor(spec, body: bytes, offset: int, where: str) -> tuple[InferInput, int]:
    """One input tensor of a binary request, and the offset of the next tensor's bytes."""
    if not isinstance(spec, dict) or not {"name", "shape", "datatype"} <= set(spec):
        raise InvalidInput(f"{where}: a tensor needs 'name', 'shape' and 'datatype'")
    shape, datatype = spec["shape"], str(spec["datatype"]).upper()
    parameters = object_or_none(spec.get("parameters"), f"{where}.parameters") or {}
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if "data" in spec:
        return InferInput(spec["name"], shape, datatype, spec["data"], parameters), offset
    size = parameters.get("binary_data_size")
    if not isinstance(size, int) or size < 0 or offset + size > len(body):
        raise InvalidInput(f"{where}: no 'data', and no binary_data_size that fits the bytes after the JSON")
    raw = body[offset : offset + size]
    if datatype == "BYTES":
        data = split_bytes(raw, where)
    elif datatype in FLOATS and size % np.dtype(FLOATS[datatype]).itemsize == 0:
        data = np.frombuffer(raw, dtype=FLOATS[datatype])
    else:
        data = raw  # any other datatype is refused with its name when the clips are read
    return InferInput(spec["name"], shape, datatype, data, parameters), offset + size


def split_bytes(raw: bytes, where: str) -> list[bytes]:
    """The elements of a serialised BYTES tensor: each a 4-byte little-endian length, then the bytes."""
    items, offset = [], 0
    while offset < len(raw):
        length = struct.unpack_from("<I", raw, offset)[0] if offset + 4 <= len(raw) else len(raw)
        if offset + 4 + length > len(raw):
            raise InvalidInput(f"{where}: truncated BYTES tensor (an element is longer than the bytes sent)")
        items.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return items


class TympanDataPlane(DataPlane):
    """KServe's data plane, with binary-data V2 requests parsed by `parse_binary_request` and health
    that follows the model: ready only while every model can answer, live only while no batcher has
    stopped (a stopped batcher never answers again, so the container should be restarted)."""

    def decode_inference_request(self, body, headers, model_name):
        if isinstance(body, bytes):
            return parse_binary_request(body, headers, model_name)
        return super().decode_inference_request(body, headers, model_name)

    async def ready(self) -> bool:
        models = list(self.model_registry.get_models().values())
        return bool(models) and all([await model.healthy() for model in models])

    async def live(self) -> dict:
        for model in self.model_registry.get_models().values():
            if isinstance(model, ServedModel) and not model.batcher.alive():
                raise ServerNotLive(f"the batcher of model {model.name} has stopped")
        return {"status": "alive"}


# ---------------------------------------------------------------- refused before KServe sees them


class Guard:
    """ASGI middleware that answers two kinds of request itself: KServe's model-repository routes
    (403: any client could unload the model) and bodies over `max_body` bytes (413, decided from
    Content-Length before the body is read, or while reading a body sent without one)."""

    def __init__(self, app, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"].startswith(REPOSITORY_ROUTES):
            return await answer(send, 403, "the model repository API (load, unload) is disabled on this server")
        length = dict(scope["headers"]).get(b"content-length")
        if length is None:
            receive = await self.read_limited(receive)
        elif not length.isdigit() or int(length) > self.max_body:
            receive = None
        if receive is None:
            return await answer(send, 413, f"the request body is over this server's limit of {self.max_body} bytes")
        await self.app(scope, receive, send)

    async def read_limited(self, receive):
        """A `receive` that replays a body sent without Content-Length, or None once it is too long."""
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_body:
                return None
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return replay


async def answer(send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- batching


@dataclass
class Pending:
    """One clip of a request, waiting for its result."""

    clip: Clip
    future: asyncio.Future


class MicroBatcher:
    """Runs the clips of concurrent requests through the model together, in two worker threads.

    A batch takes one waiting clip of each request in turn (round-robin) up to `max_batch`, so a
    one-clip request that arrives during a 64-clip one rides in the next batch instead of waiting
    for all 64. The feature thread decodes and featurises a batch (`featurize`, one clip at a time)
    while the model thread runs the previous one (`predict`); at most one featurised batch waits
    for the model, so a new clip has at most three batches ahead of it (one in the model, one
    waiting, one being featurised). The event loop only moves clips and results.

    Measured on 2 CPU cores with 8 closed-loop clients (bench/serve_latency.py): batching what is
    waiting gave 10-30% more requests/s than one clip per forward, and waiting for more clips
    (2 ms) gave less; so a batch is what is waiting, and nothing waits for a batch to fill.
    """

    def __init__(
        self,
        featurize: Callable[[Clip], torch.Tensor],
        predict: Callable[[list[torch.Tensor], bool], list[bundle.Prediction]],
        max_batch: int = 16,
    ):
        self.featurize = featurize
        self.predict = predict
        self.max_batch = max(1, max_batch)
        self.waiting: deque[deque[Pending]] = deque()  # the clips of each request, in turn order
        self.arrived: asyncio.Event | None = None
        self.featurised: asyncio.Queue | None = None
        self.feature_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tympan-features")
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tympan-model")
        self.stages: list[asyncio.Task] = []

    def alive(self) -> bool:
        """False once a stage has stopped (each catches its own batch's errors, so only a bug or a
        cancellation stops one); True before the first request starts them."""
        return not any(stage.done() for stage in self.stages)

    async def submit(self, clips: list[Clip]) -> list[bundle.Prediction]:
        """Predictions for `clips`, in order. The first clip that fails fails the request with its
        error, and the request's clips that have not started are dropped."""
        loop = asyncio.get_running_loop()
        if not self.stages:  # started here, inside the server's event loop
            self.arrived, self.featurised = asyncio.Event(), asyncio.Queue(maxsize=1)
            self.stages = [loop.create_task(self.prepare_batches()), loop.create_task(self.run_batches())]
        request = deque(Pending(clip, loop.create_future()) for clip in clips)
        futures = [pending.future for pending in request]
        self.waiting.append(request)
        self.arrived.set()
        try:
            return list(await asyncio.gather(*futures))
        finally:
            request.clear()
            for future in futures:
                future.cancel()  # no-op for settled ones; the rest are skipped when their batch ends

    def take(self) -> list[Pending]:
        """Up to `max_batch` waiting clips, one of each request in turn."""
        batch = []
        while self.waiting and len(batch) < self.max_batch:
            request = self.waiting.popleft()
            if request:
                batch.append(request.popleft())
            if request:
                self.waiting.append(request)
        return batch

    async def prepare_batches(self) -> None:
        """Stage one: take a batch, featurise it in the feature thread, hand it to stage two."""
        loop = asyncio.get_running_loop()
        while True:
            batch = self.take()
            if not batch:
                self.arrived.clear()
                await self.arrived.wait()
                continue
            outcomes = await loop.run_in_executor(self.feature_thread, self.featurize_all, batch)
            ready = []
            for pending, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    settle(pending, error=outcome)
                else:
                    ready.append((pending, outcome))
            if ready:
                await self.featurised.put(ready)

    def featurize_all(self, batch: list[Pending]) -> list:
        """The features of each clip, or the error that refused it (runs in the feature thread)."""
        outcomes = []
        for pending in batch:
            try:
                outcomes.append(self.featurize(pending.clip))
            except Exception as err:
                outcomes.append(err)
        return outcomes

    async def run_batches(self) -> None:
        """Stage two: each featurised batch through the model, in the model thread."""
        while True:
            await self.predict_batch(await self.featurised.get())

    async def predict_batch(self, ready: list[tuple[Pending, torch.Tensor]]) -> None:
        """Settle each clip's future; a failing batch is retried clip by clip, so one bad clip fails
        only its own request."""
        loop = asyncio.get_running_loop()
        features, embeddings = [f for _, f in ready], any(pending.clip.embedding for pending, _ in ready)
        try:
            results = await loop.run_in_executor(self.model_thread, self.predict, features, embeddings)
        except Exception as err:
            if len(ready) > 1:
                for item in ready:
                    await self.predict_batch([item])
            else:
                settle(ready[0][0], error=err)
            return
        for (pending, _), result in zip(ready, results, strict=True):
            settle(pending, result)


def settle(pending: Pending, result=None, error: Exception | None = None) -> None:
    if pending.future.done():  # its request already failed, or went away
        return
    if error is not None:
        pending.future.set_exception(error)
    else:
        pending.future.set_result(result)


# ---------------------------------------------------------------- the model


class ServedModel(kserve.Model):
    """A tympan bundle as a KServe model: raw audio in; labels, probabilities and embeddings out."""

    def __init__(
        self,
        name: str,
        predictor: bundle.Predictor,
        max_duration: float = 30.0,
        max_batch: int = 16,
        max_clips: int = 64,
    ):
        super().__init__(name)
        self.predictor = predictor
        self.limits = Limits(predictor.sample_rate, max_duration, max_clips)
        self.batcher = MicroBatcher(self.featurize, predictor.predict_features, max_batch)
        self.labels_json = json.dumps(predictor.labels)
        self.embedding_dim = 0

    def load(self) -> bool:
        """Run one silent second through the model: warms it up and measures the embedding."""
        rate = self.predictor.sample_rate
        silence = self.predictor.features(np.zeros(rate, np.float32), rate)
        self.embedding_dim = len(self.predictor.predict_features([silence], embeddings=True)[0].embedding)
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        """Ready only while the model can answer: loaded, and its batcher running."""
        return self.ready and self.batcher.alive()

    async def preprocess(self, payload, headers=None) -> Job:
        if isinstance(payload, InferRequest):
            return Job(v2_clips(payload, self.limits), v2=payload)
        return Job(v1_clips(payload, self.limits))

    async def predict(self, job: Job, headers=None, response_headers=None) -> Job:
        job.results = await self.batcher.submit(job.clips)
        return job

    def featurize(self, clip: Clip) -> torch.Tensor:
        """Decode, resample and featurise one clip (in the batcher's feature thread). Huge samples
        give infinite log-Mels and NaN after normalisation: refused here, naming the input."""
        samples, rate = clip_audio(clip, self.limits)
        try:
            features = self.predictor.features(samples, rate)
        except (RuntimeError, ValueError) as err:  # e.g. fewer samples than one STFT frame needs
            reason = str(err).splitlines()[0][:120]
            raise InvalidInput(
                f"{clip.where}: audio too short? cannot compute features from {samples.size} samples"
                f" at {rate} Hz ({reason})"
            ) from None
        if not torch.isfinite(features).all():
            raise InvalidInput(f"{clip.where}: the audio gives non-finite features (samples far outside [-1, 1]?)")
        return features

    async def postprocess(self, job: Job, headers=None, response_headers=None) -> dict | InferResponse:
        if job.v2 is None:
            return {
                "predictions": [self.v1_prediction(clip, r) for clip, r in zip(job.clips, job.results, strict=True)]
            }
        return self.v2_response(job)

    def v1_prediction(self, clip: Clip, result: bundle.Prediction) -> dict:
        probabilities = dict(zip(self.predictor.labels, result.probabilities.tolist(), strict=True))
        out = {"label": result.label, "probabilities": probabilities}
        if clip.embedding:
            out["embedding"] = result.embedding.tolist()
        return out

    def v2_response(self, job: Job) -> InferResponse:
        n, results = len(job.results), job.results
        outputs = [
            InferOutput("label", [n], "BYTES", np.array([r.label for r in results], dtype=object)),
            InferOutput(
                "probabilities",
                [n, len(self.predictor.labels)],
                "FP32",
                np.stack([r.probabilities for r in results]).astype(np.float32),
                {"labels": self.labels_json},
            ),
        ]
        if job.clips[0].embedding:
            outputs.append(
                InferOutput(
                    "embedding",
                    [n, self.embedding_dim],
                    "FP32",
                    np.stack([r.embedding for r in results]).astype(np.float32),
                )
            )
        return InferResponse(
            response_id=job.v2.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=job.v2.use_binary_outputs,
            requested_outputs=job.v2.request_outputs,
        )

    def get_input_types(self) -> list[dict]:
        return [
            {"name": "audio", "datatype": "BYTES", "shape": [-1]},
            {"name": "samples", "datatype": "FP32", "shape": [-1, -1]},
        ]

    def get_output_types(self) -> list[dict]:
        return [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(self.predictor.labels)]},
            {"name": "embedding", "datatype": "FP32", "shape": [-1, self.embedding_dim]},
        ]

    def metadata(self) -> dict:
        """`GET /v2/models/NAME`: KServe's fields plus the parameters its schema has no room for."""
        inputs, outputs = self.get_input_types(), self.get_output_types()
        inputs[0]["parameters"] = {"content": "encoded audio files (WAV, FLAC, OGG, ...), one per element"}
        inputs[1]["parameters"] = {"content": "mono samples in [-1, 1]; give parameters.sample_rate"}
        outputs[1]["parameters"] = {"labels": self.labels_json}
        outputs[2]["parameters"] = {"content": "only when parameters.embeddings is true or the output is requested"}
        return {
            "name": self.name,
            "versions": [self.predictor.manifest["run_id"]],
            "platform": "tympan",
            "inputs": inputs,
            "outputs": outputs,
            "parameters": {
                "labels": self.labels_json,
                "task": self.predictor.manifest["task"],
                "sample_rate": self.predictor.sample_rate,
                "max_duration": self.limits.max_duration,
                "max_clips": self.limits.max_clips,
                "inputs": "exactly one per request: 'audio' (BYTES) or 'samples' (FP32)",
            },
        }


# ---------------------------------------------------------------- the server


def torch_threads() -> int:
    """Intra-op threads for torch: the CPU budget less one core for requests, at least one.

    The budget is `tympan.cpu.threads()`: OMP_NUM_THREADS when set (the usual way to pass a
    container's CPU limit), else the CPUs this process's affinity and cgroup quota allow. The event
    loop parses requests and the feature thread computes features while the model runs; if torch
    claims every core as well, its OpenMP threads wait for each other at every barrier (on a busy
    2-core machine one forward went from 4 ms to 190 ms).
    """
    from tympan import cpu

    budget = cpu.threads()
    return max(1, budget - 1)


def add_metadata_route(app, model: ServedModel) -> None:
    """Answer `GET /v2/models/NAME` ahead of KServe's route (routes match in the order they were
    added, and KServe adds its own when the server starts)."""

    async def model_metadata(model_name: str) -> dict:
        if model_name != model.name:
            raise ModelNotFound(model_name)
        return model.metadata()

    app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"], tags=["V2"])


class Server(kserve.ModelServer):
    """KServe's ModelServer (REST only, one worker) listening on `host`, with tympan's data plane.

    KServe binds every interface and offers no setting for it; `start()` builds its REST server and
    then sets up the event loop before running it, so the address is set in between."""

    def __init__(self, host: str, port: int):
        super().__init__(http_port=port, workers=1, enable_grpc=False, enable_latency_logging=False)
        self.host = host
        self.dataplane = TympanDataPlane(model_registry=self.registered_models)

    def setup_event_loop(self):
        self._rest_server.config.host = self.host
        super().setup_event_loop()


def check_options(**options) -> None:
    """Refuse limits that would refuse every request: each must be a positive number (clip and
    batch counts whole)."""
    for key, value in options.items():
        whole = key in ("max_batch", "max_clips")
        number = isinstance(value, int if whole else int | float) and not isinstance(value, bool)
        if not number or not value > 0 or not math.isfinite(value):
            kind = "a positive integer" if whole else "a positive number"
            raise ConfigError(f"serve: --{key.replace('_', '-')} must be {kind}, got {value!r}")


def serve(
    location: str,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_duration: float = 30.0,
    max_batch: int = 16,
    max_clips: int = 64,
    max_body_mb: float = 32.0,
    trust_code: bool = False,
) -> None:
    """Load the bundle at `location` (a directory, `s3://...` or `models:/NAME@ALIAS`) and serve it on
    `host:port` until SIGTERM or SIGINT. The default host answers this machine only; a container
    passes 0.0.0.0."""
    from kserve import model_server

    check_options(max_duration=max_duration, max_batch=max_batch, max_clips=max_clips, max_body_mb=max_body_mb)
    torch.set_num_threads(torch_threads())
    predictor = bundle.load(location, trust_code=trust_code)
    model = ServedModel(name or predictor.name, predictor, max_duration, max_batch, max_clips)
    model.load()
    server = Server(host, port)
    add_metadata_route(model_server.app, model)
    model_server.app.add_middleware(Guard, max_body=int(max_body_mb * 2**20))
    server.start([model])
