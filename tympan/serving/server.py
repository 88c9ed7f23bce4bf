"""The KServe side: the bundle as a KServe model, health, the ASGI guard, the metadata route and `serve()`."""

from __future__ import annotations

import json
import math
import uuid

import kserve
import numpy as np
import torch
from kserve.errors import InvalidInput, ModelNotFound, ServerNotLive
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from tympan import bundle
from tympan.errors import ConfigError
from tympan.serving.batcher import MicroBatcher
from tympan.serving.binary import BinaryAwareDataPlane
from tympan.serving.inputs import Clip, Job, Limits, clip_audio, v1_clips, v2_clips

# KServe's model-repository API: load and unload any model, open to every client.
REPOSITORY_ROUTES = "/v2/repository"


# ---------------------------------------------------------------- the model


class ServedModel(kserve.Model):
    """A tympan bundle as a KServe model: raw audio in; the task's outputs (e.g. label and
    probabilities, or one value per regression target) and embeddings out."""

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
        self.outputs = predictor.outputs()
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
            return Job(v2_clips(payload, self.limits, [t["name"] for t in self.get_output_types()]), v2=payload)
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
        """Each output of the task: a value, or {column: value} for one with columns."""
        out = {}
        for spec in self.outputs:
            value = result.outputs[spec.name]
            if spec.columns is not None:
                out[spec.name] = dict(zip(spec.columns, np.asarray(value, dtype=float).tolist(), strict=True))
            else:
                out[spec.name] = value.item() if isinstance(value, np.generic) else value
        if clip.embedding:
            out["embedding"] = result.embedding.tolist()
        return out

    def v2_response(self, job: Job) -> InferResponse:
        n, results = len(job.results), job.results
        outputs = []
        for spec in self.outputs:
            values = [r.outputs[spec.name] for r in results]
            if spec.datatype == "BYTES":
                data = np.array([str(v) for v in values], dtype=object)
            else:
                data = np.stack([np.asarray(v, dtype=np.float32) for v in values])
            shape = [n] if spec.columns is None else [n, len(spec.columns)]
            parameters = {"labels": json.dumps(list(spec.columns))} if spec.columns is not None else None
            outputs.append(InferOutput(spec.name, shape, spec.datatype, data, parameters))
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
        """The task's outputs, then the embedding."""
        types = [
            {"name": o.name, "datatype": o.datatype, "shape": [-1] if o.columns is None else [-1, len(o.columns)]}
            for o in self.outputs
        ]
        return [*types, {"name": "embedding", "datatype": "FP32", "shape": [-1, self.embedding_dim]}]

    def metadata(self) -> dict:
        """`GET /v2/models/NAME`: KServe's fields plus the parameters its schema has no room for."""
        inputs, outputs = self.get_input_types(), self.get_output_types()
        inputs[0]["parameters"] = {"content": "encoded audio files (WAV, FLAC, OGG, ...), one per element"}
        inputs[1]["parameters"] = {"content": "mono samples in [-1, 1]; give parameters.sample_rate"}
        for output, spec in zip(outputs, self.outputs, strict=False):
            if spec.columns is not None:
                output["parameters"] = {"labels": json.dumps(list(spec.columns))}
        outputs[-1]["parameters"] = {"content": "only when parameters.embeddings is true or the output is requested"}
        task = self.predictor.task
        columns = [o.columns for o in self.outputs if o.columns is not None]  # e.g. the class names
        return {
            "name": self.name,
            "versions": [self.predictor.manifest["run_id"]],
            "platform": "tympan",
            "inputs": inputs,
            "outputs": outputs,
            "parameters": {
                **({"labels": json.dumps(list(columns[0]))} if columns else {}),
                "task": task.name,
                "targets": json.dumps(task.targets),
                "sample_rate": self.predictor.sample_rate,
                "max_duration": self.limits.max_duration,
                "max_clips": self.limits.max_clips,
                "inputs": "exactly one per request: 'audio' (BYTES) or 'samples' (FP32)",
            },
        }


class TympanDataPlane(BinaryAwareDataPlane):
    """The binary-aware data plane with health that follows the model: ready only while every model
    can answer, live only while no batcher has stopped (a stopped batcher never answers again, so the
    container should be restarted)."""

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
