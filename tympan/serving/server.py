"""The KServe side: the bundle as a KServe model, health, the metadata route and `serve()`."""

from __future__ import annotations

import json
import math
import re
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
from tympan.serving.inputs import MAX_SAMPLES, Clip, Job, Limits, clip_audio, v1_clips
from tympan.serving.refusals import Guard, quiet_refusals
from tympan.serving.v2 import INPUTS, v2_clips

# Model input per batch, in seconds of audio's worth: one 30 s clip of the default SmallCNN takes
# about 0.2 s of one core, so a one-clip request waits at most about that long for the model.
MAX_BATCH_SECONDS = 30.0


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
        max_samples: int = MAX_SAMPLES,
        max_batch_seconds: float = MAX_BATCH_SECONDS,
    ):
        super().__init__(name)
        self.predictor = predictor
        self.limits = Limits(predictor.sample_rate, max_duration, max_clips, max_samples)
        self.second_size = 1  # the model input size of one second of audio, measured by load()
        self.batcher = MicroBatcher(
            self.featurize, predictor.predict_features, max_batch, max_batch_seconds, cost=self.seconds
        )
        self.outputs = predictor.outputs()
        self.embedding_dim = 0

    def load(self) -> bool:
        """Run one silent second through the model: warms it up, measures the embedding and the
        size of a second's model input (what a batch's cost is counted in)."""
        rate = self.predictor.sample_rate
        silence = self.predictor.features(np.zeros(rate, np.float32), rate)
        self.second_size = silence.numel()
        self.embedding_dim = len(self.predictor.predict_features([silence], embeddings=True)[0].embedding)
        self.ready = True
        return self.ready

    def seconds(self, features: torch.Tensor) -> float:
        """A clip's cost in the model: its input size in seconds of audio's worth (features of a
        fixed size cost the same for every clip)."""
        return features.numel() / self.second_size

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
        """The V2 inputs, exactly as `v2` checks requests against them."""
        return [spec.metadata() for spec in INPUTS.values()]

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
        for tensor, spec in zip(inputs, INPUTS.values(), strict=True):
            tensor["parameters"] = {"content": spec.content}
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
                "max_samples": self.limits.max_samples,
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


def check_options(port, **options) -> None:
    """Refuse a port that is not one, and limits that would refuse every request: each must be a
    positive number (clip, batch and sample counts whole)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ConfigError(f"serve: --port must be an integer from 1 to 65535, got {port!r}")
    for key, value in options.items():
        whole = key in ("max_batch", "max_clips", "max_samples")
        number = isinstance(value, int if whole else int | float) and not isinstance(value, bool)
        if not number or not value > 0 or not math.isfinite(value):
            kind = "a positive integer" if whole else "a positive number"
            raise ConfigError(f"serve: --{key.replace('_', '-')} must be {kind}, got {value!r}")


# A served name is one segment of the URL path /v2/models/NAME/infer.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name, what: str) -> str:
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise ConfigError(
            f"serve: {what} {name!r} cannot name a model in /v2/models/NAME/infer: use up to 128 letters,"
            " digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def registered_name(location: str) -> str | None:
    """NAME of a registry location, `models:/NAME@ALIAS` or `models:/NAME/VERSION`; None for others."""
    if not location.startswith("models:/"):
        return None
    return re.split(r"[@/]", location.removeprefix("models:/"), maxsplit=1)[0]


def served_name(location: str, name: str | None, predictor: bundle.Predictor) -> str:
    """`--name`, else a registered model's name, else the bundle's experiment name."""
    if name is not None:
        return name
    registered = registered_name(location)
    if registered is not None:
        return check_name(registered, "the registered name (pass --name NAME)")
    return check_name(predictor.name, "the bundle's experiment name (pass --name NAME)")


def serve(
    location: str,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_duration: float = 30.0,
    max_batch: int = 16,
    max_clips: int = 64,
    max_samples: int = MAX_SAMPLES,
    max_body_mb: float = 32.0,
    trust_code: bool = False,
) -> None:
    """Load the bundle at `location` (a directory, `s3://...` or `models:/NAME@ALIAS`) and serve it on
    `host:port` until SIGTERM or SIGINT, as `name` (default: a registered model's name, else the
    bundle's experiment name). The default host answers this machine only; a container passes
    0.0.0.0."""
    from kserve import model_server

    limits = {"max_duration": max_duration, "max_batch": max_batch, "max_clips": max_clips}
    check_options(port, **limits, max_samples=max_samples, max_body_mb=max_body_mb)
    if name is not None:
        check_name(name, "--name")
    torch.set_num_threads(torch_threads())
    predictor = bundle.load(location, trust_code=trust_code)
    model = ServedModel(served_name(str(location), name, predictor), predictor, **limits, max_samples=max_samples)
    model.load()
    server = Server(host, port)
    add_metadata_route(model_server.app, model)
    quiet_refusals(model_server.app)
    model_server.app.add_middleware(Guard, max_body=int(max_body_mb * 2**20))
    server.start([model])
