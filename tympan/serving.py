"""Serve a tympan bundle over HTTP with KServe: V1 and V2 / Open Inference Protocol.

`serve(location)` loads a bundle (a directory or `models:/NAME@ALIAS`) and starts a KServe
ModelServer on `port`; the model name in the URLs defaults to the bundle's experiment name.
Audio arrives as an encoded file (WAV, FLAC, OGG, ...) or as mono float samples with their
sample rate; the bundle resamples and computes the training-time features itself.

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
(class names as a JSON string, the sample rate, the duration limit).

Health as KServe defines it: `GET /` (alive), `/v2/health/live`, `/v2/health/ready`,
`/v2/models/NAME/ready`, `/v1/models/NAME`. Bad input gets a 400 whose `error` names the input
and what was wrong (FastAPI answers 422 for V2 JSON that does not fit the protocol's schema); it
never takes the server down.

Each request is decoded and featurised on arrival, on the event loop; a micro-batcher then
hands the waiting clips to one `Predictor.predict_features` call in a single worker thread, so
HTTP work and the model overlap. Results do not depend on what a clip was batched with.
Throughput is bounded by the CPU: on 2 cores, the forward on one core and HTTP + features on
the other (see bench/serve_latency.py); more throughput means more replicas.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import math
import os
import struct
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import kserve
import numpy as np
import soundfile as sf
import torch
from kserve.errors import InvalidInput, ModelNotFound
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput

from tympan import bundle
from tympan.audio import check_rates, decode_bytes
from tympan.errors import AudioError

OUTPUTS = ("label", "probabilities", "embedding")
FLOATS = {"FP32": np.float32, "FP64": np.float64}
BINARY_HEADER = "inference-header-content-length"
# torchaudio's resampling kernel has (new / gcd) * (old / gcd) taps and more: an odd rate such as
# 44101 Hz would ask for gigabytes. Rates below this product are served (44100, 22050, 11025: fine).


# ---------------------------------------------------------------- checks on one clip


@dataclass(frozen=True)
class Limits:
    """What the server accepts: the bundle's sample rate (to resample to) and the longest clip."""

    sample_rate: int
    max_duration: float


def check_rate(value, where: str, limits: Limits) -> int:
    """A sample rate as a positive integer that the bundle can resample from cheaply."""
    integral = isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()
    if not integral or value <= 0:
        raise InvalidInput(f"{where}: sample_rate must be a positive integer in Hz, got {value!r}")
    rate = int(value)
    try:
        check_rates(rate, limits.sample_rate)
    except ValueError as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    return rate


def check_duration(frames: int, rate: int, where: str, limits: Limits) -> None:
    if frames > limits.max_duration * rate:
        seconds = frames / rate
        raise InvalidInput(
            f"{where}: audio is {seconds:.1f} s long; this server takes at most {limits.max_duration:g} s"
        )


def check_samples(samples: np.ndarray, rate: int, where: str, limits: Limits) -> np.ndarray:
    """Mono float32 samples that are non-empty, finite and not too long."""
    if samples.size == 0:
        raise InvalidInput(f"{where}: empty audio (no samples)")
    check_duration(samples.size, rate, where, limits)
    if not np.isfinite(samples).all():
        raise InvalidInput(f"{where}: samples contain NaN or infinity")
    return samples.astype(np.float32, copy=False)


def decode_audio(data: bytes | str, where: str, limits: Limits) -> tuple[np.ndarray, int]:
    """Samples and rate of an encoded audio file given as raw bytes or as a base64 string."""
    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{where}: not valid base64") from None
    declared = header_frames(data)
    if declared:  # refuse a long file before decoding all of it
        check_duration(*declared, where, limits)
    try:
        samples, rate = decode_bytes(data, name=where)
    except AudioError as err:
        raise InvalidInput(str(err)) from None
    rate = check_rate(rate, where, limits)
    return check_samples(samples, rate, where, limits), rate


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


# ---------------------------------------------------------------- requests


@dataclass
class Clip:
    """One audio input of a request, decoded, and whether its embedding goes into the answer."""

    samples: np.ndarray
    rate: int
    where: str
    embedding: bool = False


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
        return Clip(*decode_audio(item["b64"], where, limits), where, embedding)
    if "sample_rate" not in item:
        raise InvalidInput(f"{where}: 'samples' need a 'sample_rate' (Hz)")
    rate = check_rate(item["sample_rate"], where, limits)
    samples = float_samples(item["samples"], where)
    if samples.ndim != 1:
        raise InvalidInput(f"{where}: 'samples' must be a flat list of numbers (mono audio)")
    return Clip(check_samples(samples, rate, where, limits), rate, where, embedding)


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
    clips = []
    for i, item in enumerate(items):
        where = f"input '{tensor.name}'[{i}]"
        if not isinstance(item, bytes | str):
            raise InvalidInput(f"{where}: expected an audio file (raw bytes, or a base64 string in JSON)")
        clips.append(Clip(*decode_audio(item, where, limits), where))
    return clips


def sample_clips(tensor: InferInput, request_parameters: dict, limits: Limits) -> list[Clip]:
    where = f"input '{tensor.name}'"
    rate = (tensor.parameters or {}).get("sample_rate", request_parameters.get("sample_rate"))
    if rate is None:
        raise InvalidInput(f"{where}: samples need 'parameters': {{'sample_rate': N}} on the input or the request")
    rate = check_rate(rate, where, limits)
    samples = float_samples(tensor.data, where, FLOATS[tensor.datatype])
    if len(tensor.shape) not in (1, 2) or samples.size != math.prod(tensor.shape):
        raise InvalidInput(f"{where}: expected shape [batch, time] that matches the data, got {tensor.shape}")
    rows = samples.reshape(tensor.shape) if len(tensor.shape) == 2 else samples[None]
    return [
        Clip(check_samples(row, rate, f"{where}[{i}]", limits), rate, f"{where}[{i}]") for i, row in enumerate(rows)
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


class BinaryAwareDataPlane(DataPlane):
    """KServe's data plane, with binary-data V2 requests parsed by `parse_binary_request`."""

    def decode_inference_request(self, body, headers, model_name):
        if isinstance(body, bytes):
            return parse_binary_request(body, headers, model_name)
        return super().decode_inference_request(body, headers, model_name)


# ---------------------------------------------------------------- batching


@dataclass
class Pending:
    clip: torch.Tensor
    embedding: bool
    future: asyncio.Future


class MicroBatcher:
    """Runs the clips of concurrent requests through the model together, in one worker thread.

    The model thread is the only one that runs forwards; while it works, the event loop keeps
    parsing requests, and their clips queue up. Each batch is whatever is queued (up to
    `max_batch`). Under concurrent load (the previous batch had more than one clip) the batcher
    also waits up to `wait_ms` for clips still being parsed; a lone request never waits.

    Measured on 2 CPU cores with 8 closed-loop clients (bench/serve_latency.py): batching what is
    queued gave 10-30% more requests/s than one clip per forward; waiting (2 ms) gave less, since
    every client is already in the batch and the model sits idle during the wait. Hence the
    default `wait_ms=0`.
    """

    def __init__(self, predictor: bundle.Predictor, max_batch: int, wait_ms: float):
        self.predictor = predictor
        self.max_batch = max(1, max_batch)
        self.wait = max(0.0, wait_ms) / 1000
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tympan-model")
        self.queue: asyncio.Queue[Pending] | None = None
        self.task: asyncio.Task | None = None
        self.busy = False

    async def submit(self, clips: list[torch.Tensor], embeddings: list[bool]) -> list[bundle.Prediction]:
        """Predictions for `clips` (features), in order; `embeddings` says which need theirs."""
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done():  # started inside the server's event loop
            self.queue = self.queue or asyncio.Queue()
            self.task = loop.create_task(self.run())
        futures = [loop.create_future() for _ in clips]
        for clip, embedding, future in zip(clips, embeddings, futures, strict=True):
            self.queue.put_nowait(Pending(clip, embedding, future))
        return list(await asyncio.gather(*futures))

    async def run(self) -> None:
        while True:
            await self.predict(await self.collect())

    async def collect(self) -> list[Pending]:
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        deadline = loop.time() + (self.wait if self.busy else 0)
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        self.busy = len(batch) > 1
        return batch

    async def predict(self, batch: list[Pending]) -> None:
        """Settle each pending clip's future; a failing batch is retried clip by clip, so one bad
        clip fails only its own request."""
        loop = asyncio.get_running_loop()
        clips, embeddings = [p.clip for p in batch], any(p.embedding for p in batch)
        try:
            results = await loop.run_in_executor(self.executor, self.predictor.predict_features, clips, embeddings)
        except Exception as err:
            if len(batch) > 1:
                for pending in batch:
                    await self.predict([pending])
            elif not batch[0].future.done():
                batch[0].future.set_exception(err)
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():  # done: the client went away
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
        batch_wait_ms: float = 0.0,
    ):
        super().__init__(name)
        self.predictor = predictor
        self.limits = Limits(predictor.sample_rate, max_duration)
        self.batcher = MicroBatcher(predictor, max_batch, batch_wait_ms)
        self.labels_json = json.dumps(predictor.labels)
        self.embedding_dim = 0

    def load(self) -> bool:
        """Run one silent second through the model: warms it up and measures the embedding."""
        rate = self.predictor.sample_rate
        silence = self.predictor.features(np.zeros(rate, np.float32), rate)
        self.embedding_dim = len(self.predictor.predict_features([silence], embeddings=True)[0].embedding)
        self.ready = True
        return self.ready

    async def preprocess(self, payload, headers=None) -> Job:
        if isinstance(payload, InferRequest):
            return Job(v2_clips(payload, self.limits), v2=payload)
        return Job(v1_clips(payload, self.limits))

    async def predict(self, job: Job, headers=None, response_headers=None) -> Job:
        features = [self.features(clip) for clip in job.clips]
        job.results = await self.batcher.submit(features, [clip.embedding for clip in job.clips])
        return job

    def features(self, clip: Clip) -> torch.Tensor:
        try:
            return self.predictor.features(clip.samples, clip.rate)
        except (RuntimeError, ValueError) as err:  # e.g. fewer samples than one STFT frame needs
            reason = str(err).splitlines()[0][:120]
            raise InvalidInput(
                f"{clip.where}: audio too short? cannot compute features from {clip.samples.size} samples"
                f" at {clip.rate} Hz ({reason})"
            ) from None

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
                "inputs": "exactly one per request: 'audio' (BYTES) or 'samples' (FP32)",
            },
        }


# ---------------------------------------------------------------- the server


def torch_threads() -> int:
    """Intra-op threads for torch: the CPU budget less one core for the event loop, at least one.

    The budget is OMP_NUM_THREADS when set (the usual way to pass a container's CPU limit), else
    the CPUs this process may use. The event loop parses requests and computes features while
    the model runs; if torch claims every core as well, its OpenMP threads wait for each other at
    every barrier (on a busy 2-core machine one forward went from 4 ms to 190 ms).
    """
    from kserve.utils.utils import cpu_count

    try:
        budget = int(os.environ["OMP_NUM_THREADS"])
    except (KeyError, ValueError):
        budget = cpu_count()
    return max(1, budget - 1)


def add_metadata_route(app, model: ServedModel) -> None:
    """Answer `GET /v2/models/NAME` ahead of KServe's route (routes match in the order they were
    added, and KServe adds its own when the server starts)."""

    async def model_metadata(model_name: str) -> dict:
        if model_name != model.name:
            raise ModelNotFound(model_name)
        return model.metadata()

    app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"], tags=["V2"])


def serve(
    location: str,
    name: str | None = None,
    port: int = 8080,
    max_duration: float = 30.0,
    max_batch: int = 16,
    batch_wait_ms: float = 0.0,
    trust_code: bool = False,
) -> None:
    """Load the bundle at `location` (a directory, `s3://...` or `models:/NAME@ALIAS`) and serve it on `port`
    (all interfaces) until SIGTERM or SIGINT."""
    from kserve import model_server

    torch.set_num_threads(torch_threads())
    predictor = bundle.load(location, trust_code=trust_code)
    model = ServedModel(name or predictor.name, predictor, max_duration, max_batch, batch_wait_ms)
    model.load()
    server = kserve.ModelServer(http_port=port, workers=1, enable_grpc=False, enable_latency_logging=False)
    server.dataplane = BinaryAwareDataPlane(model_registry=server.registered_models)
    add_metadata_route(model_server.app, model)
    server.start([model])
