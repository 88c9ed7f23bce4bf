"""Serve a tympan bundle over HTTP with KServe: V1 and V2 / Open Inference Protocol.

`serve(location)` loads a bundle (a directory or `models:/NAME@ALIAS`) and starts a KServe
ModelServer on `host:port` (127.0.0.1 by default: this machine only; the serving image and the chart
pass 0.0.0.0); the model name in the URLs is `name`, else the registered model's name, else the
bundle's experiment name (one URL path segment: letters, digits, '.', '_', '-'). Audio arrives
as an encoded file (WAV, FLAC, OGG, ...) or as mono float samples with their sample rate; the
bundle resamples and computes the training-time features itself.

V1, `POST /v1/models/NAME:predict`::

    {"instances": [{"b64": "<base64 of an audio file>"},
                   {"samples": [0.01, -0.02, ...], "sample_rate": 8000, "embeddings": true}],
     "parameters": {"embeddings": false}}                                 # optional
    -> {"predictions": [{"label": "3", "probabilities": {"0": 0.01, ..., "9": 0.02}},
                        {"label": "7", "probabilities": {...}, "embedding": [0.31, ...]}]}

An instance gets an `embedding` when it, or the request's `parameters`, say `"embeddings": true`.

V2, `POST /v2/models/NAME/infer`, with exactly one input, held strictly to the protocol (`v2`):

- `audio`, BYTES, shape `[batch]`: encoded audio files, as base64 strings in JSON or as raw bytes
  with the binary-data extension (`tritonclient.http` with `binary_data=True`);
- `samples`, FP32, shape `[batch, time]`: samples in [-1, 1] (JSON numbers or binary float32),
  with the rate in `"parameters": {"sample_rate": 8000}` on the input or on the request.

Outputs: `label` (BYTES `[batch]`), `probabilities` (FP32 `[batch, n_classes]`; its
`parameters.labels` is the JSON-encoded list of class names in column order) and `embedding`
(FP32 `[batch, dim]`) when the request has `"parameters": {"embeddings": true}` or asks for that
output by name. Requested `outputs` (and their `binary_data` flags) are honoured.

`GET /v2/models/NAME` describes these tensors. KServe's metadata schema drops `parameters`, so
the server answers that route itself with KServe's fields plus tensor and model `parameters`
(class names as a JSON string, the sample rate and the request limits).

Health: `GET /` and `/v2/health/live` (alive while the batcher runs), `/v2/health/ready`,
`/v2/models/NAME/ready` and `/v1/models/NAME` (ready only while the model can answer: loaded, and
its batcher running). KServe's model-repository routes (`/v2/repository/...`: load and unload) are
refused with a 403: this server serves the one model it was started with, and any client could
otherwise unload it.

Bounded work: a body over `max_body_mb` gets a 413 before it is read; a request has at most
`max_clips` clips, each at most `max_duration` seconds at a sample rate of at most 768 kHz that the
bundle can resample cheaply, and its audio decodes to at most `max_samples` samples (frames x
channels, plus resampling to the model's rate; read from each file's header before anything is
decoded, 413 past it). Bad input gets a 400 whose `error` names the input and what was wrong
(FastAPI answers 422 for V2 JSON that does not fit the protocol's schema); it never takes the
server down, and it is one line in the log (`refusals`).

The event loop only parses requests and writes answers: decoding, resampling and features run in
the batcher's feature thread, one clip at a time with requests taking turns, and the forward in
its model thread, each batch one clip of each request in turn up to 30 s of audio (see
`MicroBatcher`): a one-clip request waits for no other request's decoding, and for at most about
one batch (bench/serve_fairness.py). Results do not depend on what a clip was batched with.
Throughput is bounded by the CPU (see bench/serve_latency.py); more throughput means more replicas.

The parts: `inputs` (limits, request parsing into clips, V1), `v2` (the V2 inputs), `binary` (the
binary-data extension), `batcher` (the micro-batcher), `refusals` (the guard, 413s, one log line
per refusal) and `server` (the KServe model and `serve`).
"""

from tympan.serving.batcher import MicroBatcher, Pending
from tympan.serving.inputs import Clip, Job, Limits
from tympan.serving.server import ServedModel, Server, TympanDataPlane, serve, torch_threads

__all__ = [
    "Clip",
    "Job",
    "Limits",
    "MicroBatcher",
    "Pending",
    "ServedModel",
    "Server",
    "TympanDataPlane",
    "serve",
    "torch_threads",
]
