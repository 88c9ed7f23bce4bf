"""The self-contained model bundle: what gets registered, served and used for inference.

A bundle is a directory:
  bundle.json          the model config, the feature pipeline, the task and its fitted state
                       (labels, thresholds, target scaling), the input contract
  model.safetensors    the weights (nothing is unpickled)
  pipeline.safetensors the online transforms' fitted statistics and the offline ones' state (a
                       frozen backbone's weights), when there are any
`load(path)` gives a `Predictor` that takes raw audio at any sample rate and replays the
training-time pipeline exactly (it is the same `transforms.pipeline.Pipeline`), and decodes
outputs with the same task, so CLI inference, the MLflow model and the KServe predictor cannot
drift apart from training.

A bundle is data: loading it never runs code it names. `bundle.json` is checked field by field
first (`tympan.manifest`); its model, transform and task targets must then be tympan's own classes
of their role (`tympan.models...:Class`, `tympan.transforms...:Class`, `tympan.tasks...:Class`),
found through Python's import system and checked to lie inside the installed tympan package before
they are imported (`tympan.targets.resolve_own`), unless the caller passes `trust_code=True` for a
bundle of its own custom classes. An MLflow model directory is read the same way: its MLmodel must
name tympan's loader (`tympan.mlflow_pyfunc`), and only the bundle inside is read; nothing in it is
unpickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tympan import audio, flow
from tympan.config import Config
from tympan.errors import DataError
from tympan.fileio import atomic_dir, write_json
from tympan.manifest import FORMAT, MANIFEST, read_manifest
from tympan.models.base import sizes as model_sizes
from tympan.targets import RefusedTarget, resolve_own, resolve_target
from tympan.tasks.base import Output, Task
from tympan.transforms.pipeline import Pipeline
from tympan.transforms.spec import Transform

WEIGHTS = "model.safetensors"
PIPELINE_WEIGHTS = "pipeline.safetensors"
MLMODEL = "MLmodel"
LOADER_MODULE = "tympan.mlflow_pyfunc"  # the pyfunc loader of models that `tympan register` logs
# where the classes a bundle may name without trust_code live, per role, and what they must be
ROLES = {
    "model": ("tympan.models", torch.nn.Module),
    "features": ("tympan.transforms", Transform),
    "task": ("tympan.tasks", Task),
}
TRUST_HINT = "pass --trust-code (trust_code=True) only for a bundle of your own custom classes"


class UntrustedCodeError(DataError):
    """A bundle or MLflow model names code that loading does not run without trust_code."""


def save(
    directory: Path,
    model: torch.nn.Module,
    config: Config,
    pipeline: Pipeline,
    task: Task,
    model_args: dict,
    meta: dict,
    metrics: dict,
) -> Path:
    """Write a bundle for `model` (already holding its best weights) into `directory`; `model_args`
    are the arguments it was built with (the config's and the sizes training filled in)."""
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    statistics = {k: v.detach().cpu().contiguous() for k, v in pipeline.state_dict().items()}
    manifest = {
        "format": FORMAT,
        "run_id": config.run_id(),
        "experiment": config.experiment,
        "task": {"target": config.task.target, "args": config.task.args, "targets": task.targets,
                 "state": task.state()},
        "model": {"target": config.model.target, "args": model_args, **_provenance(model)},
        "features": pipeline.describe(),
        "pipeline": flow.resolve(config, pipeline),  # the record of what training did (read by people, not loading)
        "input": {
            "kind": pipeline.output.kind,
            "sample_rate": pipeline.sample_rate,
            "frame_rate": pipeline.output.frame_rate,
            "min_frames": int(getattr(model, "min_frames", 1)),
            # trained on clips of at most this long: the natural sliding window for long input
            "window": config.training.max_duration,
        },
        "outputs": [asdict(o) for o in task.outputs()],
        "metrics": metrics,
        "data": {"dataset": meta["dataset"], "features_key": meta["key"]},
    }  # fmt: skip
    with atomic_dir(directory) as tmp:
        save_file(weights, tmp / WEIGHTS)
        if statistics:
            save_file(statistics, tmp / PIPELINE_WEIGHTS)
        write_json(tmp / MANIFEST, manifest)
    return Path(directory)


@dataclass
class Prediction:
    """One clip's (or window's) result: the task's scores (probabilities, or values in original
    units), the task's named outputs for it, and optionally the penultimate-layer embedding."""

    scores: np.ndarray
    outputs: dict[str, Any]
    embedding: np.ndarray | None = None


def named_items(manifest: dict) -> list[tuple[str, dict]]:
    """(role, {target, args}) of every class a manifest names."""
    features = [item for place in ("offline", "online") for item in manifest["features"][place]]
    return [("model", manifest["model"]), ("task", manifest["task"])] + [("features", f) for f in features]


def named_classes(manifest: dict) -> list[tuple[str, str]]:
    """(role, target) of every class a manifest names."""
    return [(role, item["target"]) for role, item in named_items(manifest)]


def check_targets(path: Path, manifest: dict, trust_code: bool = False) -> None:
    """Refuse, before building anything, a bundle whose targets are not tympan's own classes of
    their role (no file outside the installed tympan package is imported to find out)."""
    if trust_code:
        return
    for role, target in named_classes(manifest):
        _resolver(path, role, trust_code)(target)


def _resolver(path: Path, role: str, trust_code: bool):
    """The class a bundle's target names for one role: without trust, only a class of the role's
    kind in tympan's package for it (`targets.resolve_own`); with trust, any class, as a config."""
    package, kind = ROLES[role]

    def resolve(target: str):
        if trust_code:
            try:
                return resolve_target(target)
            except ValueError as exc:
                raise DataError(f"{path}: {role}: {exc}") from None
        try:
            return resolve_own(target, package, kind)
        except RefusedTarget as exc:
            raise UntrustedCodeError(
                f"{path}: refusing to load: the {role} target {target!r} names code outside tympan's own "
                f"{package} classes ({exc}), and loading a bundle runs no other code; {TRUST_HINT}"
            ) from None

    return resolve


def _provenance(model: torch.nn.Module) -> dict:
    """The record of the pretrained weights the model started from (name and sha256), if any."""
    provenance = getattr(model, "provenance", None)
    return {"pretrained": provenance.as_dict()} if provenance is not None else {}


def _build(path: Path, role: str, target: str, args: dict, trust_code: bool, **fixed):
    cls = _resolver(path, role, trust_code)(target)
    try:
        return cls(**args, **fixed)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: cannot build the {role} {target} from its args ({exc})") from None


def _read_weights(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DataError(f"{path}: missing (the bundle's {what})")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{path}: not a readable safetensors file ({exc})") from None


def _check_fit(module, weights: dict[str, torch.Tensor], path: Path, target: str) -> None:
    """Refuse weights that do not match the module key for key and shape for shape."""
    expected = module.state_dict()
    problems = []
    if missing := sorted(expected.keys() - weights.keys()):
        problems.append(f"missing {_some(missing)}")
    if unexpected := sorted(weights.keys() - expected.keys()):
        problems.append(f"unexpected {_some(unexpected)}")
    for key, value in expected.items():
        if key in weights and weights[key].shape != value.shape:
            problems.append(f"{key} has shape {tuple(weights[key].shape)}, the model needs {tuple(value.shape)}")
    if problems:
        raise DataError(f"{path}: the weights do not fit {target}: {'; '.join(problems[:3])}")


def _check_consistent(path: Path, manifest: dict, pipeline: Pipeline, task: Task) -> None:
    """The manifest's fields that restate what the pipeline, the task and the model arguments
    build must say the same (a tampered copy would mislead people or break at predict time)."""
    fields = manifest["input"]
    output = pipeline.output
    built = {"kind": output.kind, "sample_rate": pipeline.sample_rate, "frame_rate": output.frame_rate}
    for key, value in built.items():
        if fields[key] != value:
            raise DataError(f"{path}: 'input.{key}' is {fields[key]!r}, but the feature pipeline gives {value!r}")
    model_args = manifest["model"]["args"]
    if "pretrained" in model_args:
        raise DataError(f"{path}: 'model.args.pretrained': a bundle's weights are its own; it names no other file")
    for name, value in model_sizes(output, task.n_outputs).items():
        if name in model_args and model_args[name] != value:
            raise DataError(
                f"{path}: 'model.args.{name}' is {model_args[name]!r}, but the features and the task give {value}"
            )
    outputs = [asdict(o) for o in task.outputs()]
    if manifest.get("outputs") is not None and json_form(manifest["outputs"]) != json_form(outputs):
        raise DataError(f"{path}: 'outputs' are not the outputs of its task and state")
    record = manifest.get("pipeline")
    if record is not None:
        for key, value in {"sample_rate": pipeline.sample_rate, "transforms": pipeline.resolved}.items():
            if json_form(record.get(key)) != json_form(value):
                raise DataError(f"{path}: 'pipeline.{key}' is not what its 'features' build")


def json_form(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists), for comparing with a manifest."""
    return json.loads(json.dumps(value, default=str))


def _some(keys: list[str]) -> str:
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return f"key(s) {', '.join(keys[:3])}{more}"


class Predictor:
    """Raw audio in, predictions out, through the pipeline and the task of training.

    Only tympan's own model, transform and task classes are built unless `trust_code` is set (see
    the module's docstring); a tampered or broken bundle is a DataError naming the file and the cause.
    """

    def __init__(self, directory: str | Path, device: str = "cpu", trust_code: bool = False):
        directory = Path(directory)
        self.manifest = manifest = read_manifest(directory)
        path = directory / MANIFEST
        check_targets(path, manifest, trust_code)
        self.directory = directory
        self.device = torch.device(device)
        features = manifest["features"]
        try:
            self.pipeline = Pipeline(
                features["sample_rate"],
                features["offline"],
                features["online"],
                _resolver(path, "features", trust_code),
            )
        except ValueError as exc:
            raise DataError(f"{path}: the feature pipeline does not build ({exc})") from None
        if self.pipeline.state_dict():  # fitted statistics (e.g. train-split normalisation)
            statistics = _read_weights(directory / PIPELINE_WEIGHTS, "fitted feature statistics")
            try:
                self.pipeline.load_state_dict(statistics)
            except (ValueError, RuntimeError) as exc:
                raise DataError(
                    f"{directory / PIPELINE_WEIGHTS}: the statistics do not fit the pipeline ({exc})"
                ) from None
        spec = manifest["task"]
        self.task: Task = _build(path, "task", spec["target"], spec["args"], trust_code, targets=spec["targets"])
        try:
            self.task.load_state(spec["state"])
        except (ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{path}: task.state: {exc}") from None
        self.sample_rate: int = self.pipeline.sample_rate
        self.frame_rate: float | None = self.pipeline.output.frame_rate
        self.min_frames: int = manifest["input"]["min_frames"]
        _check_consistent(path, manifest, self.pipeline, self.task)
        model = manifest["model"]
        weights = _read_weights(directory / WEIGHTS, "weights")
        with torch.device("meta"):  # sized from data: nothing is allocated until it fits the weights file
            shell = _build(path, "model", model["target"], model["args"], trust_code)
        if not isinstance(shell, torch.nn.Module):
            raise DataError(f"{path}: the model target {model['target']!r} did not build a torch module")
        _check_fit(shell, weights, directory / WEIGHTS, model["target"])
        if int(getattr(shell, "min_frames", 1)) != self.min_frames:
            raise DataError(
                f"{path}: 'input.min_frames' is {self.min_frames}, but {model['target']} needs "
                f"{int(getattr(shell, 'min_frames', 1))}"
            )
        self.model = _build(path, "model", model["target"], model["args"], trust_code)
        self.model.load_state_dict(weights)
        self.model.to(self.device).eval()

    @property
    def name(self) -> str:
        return self.manifest["experiment"]

    def outputs(self) -> list[Output]:
        return self.task.outputs()

    def features(self, samples: np.ndarray, sample_rate: int) -> torch.Tensor:
        """The model input for mono float samples: resampled, then the offline and online
        transforms, exactly as training saw a stored clip (without augmentation)."""
        samples = audio.resample(np.asarray(samples, dtype=np.float32), sample_rate, self.sample_rate)
        try:
            stored = self.pipeline.extract(samples)
        except RuntimeError as err:  # e.g. fewer samples than the STFT's padding needs
            raise ValueError(
                f"audio too short for the features ({len(samples)} samples at {self.sample_rate} Hz)"
            ) from err
        return self.pipeline.apply(torch.from_numpy(stored))

    @torch.no_grad()
    def predict_features(self, clips: list[torch.Tensor], embeddings: bool = False) -> list[Prediction]:
        """Predict a list of model inputs (from `features`). Clips of equal shape run as one batch;
        others run alone, so a result never depends on what it was batched with."""
        results: list[Prediction | None] = [None] * len(clips)
        groups: dict[tuple, list[int]] = {}
        for i, clip in enumerate(clips):
            groups.setdefault(tuple(clip.shape), []).append(i)
        for indices in groups.values():
            x, lengths = self.pipeline.pad([clips[i] for i in indices], self.min_frames)
            embedding = self.model.embed(x.to(self.device), lengths.to(self.device))
            scores = self.task.scores(self.model.head(embedding).float()).cpu().numpy()
            for j, (i, outputs) in enumerate(zip(indices, self.decode(scores), strict=True)):
                vector = embedding[j].float().cpu().numpy() if embeddings else None
                results[i] = Prediction(scores=scores[j], outputs=outputs, embedding=vector)
        return results

    def decode(self, scores: np.ndarray) -> list[dict[str, Any]]:
        """(batch, n_outputs) scores -> each clip's named outputs."""
        decoded = self.task.decode(scores)
        return [{name: values[i] for name, values in decoded.items()} for i in range(len(scores))]

    def as_row(self, prediction: Prediction) -> dict:
        """The prediction in table form (`label`, `prob_<class>` ...): CLI inference and MLflow share it."""
        return self.task.rows({name: np.asarray([value]) for name, value in prediction.outputs.items()})[0]

    def predict(self, samples: np.ndarray, sample_rate: int, embeddings: bool = False) -> Prediction:
        return self.predict_features([self.features(samples, sample_rate)], embeddings)[0]

    def predict_windows(
        self, samples: np.ndarray, sample_rate: int, window: float, hop: float, embeddings: bool = False
    ) -> tuple[list[tuple[float, float]], list[Prediction], Prediction]:
        """Sliding-window predictions over a long recording, and their mean scores as the file's result.

        Where the model input has a time axis, windows are cut from the input of the whole file,
        so each frame is computed once; otherwise (vectors, images) each window of the waveform
        goes through the pipeline. The last window ends at the end of the recording.
        """
        if window <= 0 or hop <= 0:
            raise ValueError(f"window and hop must be positive, got {window} and {hop}")
        if self.pipeline.output.variable_length:
            features = self.features(samples, sample_rate)
            rate = self.frame_rate
        else:
            features = torch.from_numpy(audio.resample(np.asarray(samples, np.float32), sample_rate, self.sample_rate))
            rate = float(self.sample_rate)
        size = max(self.min_frames if self.pipeline.output.variable_length else 1, round(window * rate))
        step = max(1, round(hop * rate))
        starts = list(range(0, max(1, len(features) - size + 1), step))
        if starts[-1] + size < len(features):
            starts.append(len(features) - size)
        pieces = [features[s : s + size] for s in starts]
        if not self.pipeline.output.variable_length:
            pieces = [self.features(piece.numpy(), self.sample_rate) for piece in pieces]
        predictions = self.predict_features(pieces, embeddings)
        spans = [(s / rate, min(s + size, len(features)) / rate) for s in starts]
        mean = np.mean([p.scores for p in predictions], axis=0)
        mean_embedding = np.mean([p.embedding for p in predictions], axis=0) if embeddings else None
        return spans, predictions, Prediction(mean, self.decode(mean[None])[0], mean_embedding)


def resolve(location: str | Path, trust_code: bool = False) -> Path:
    """The local bundle directory behind `location`: a bundle directory, `s3://` URI of one
    (downloaded to the cache), `models:/NAME@ALIAS`, or an MLflow model directory holding a bundle
    (what KServe's storage initializer puts in /mnt/models)."""
    location = str(location)
    if location.startswith("models:/"):
        from tympan.mlflow_store import download_model

        directory = download_model(location)
    else:
        from tympan import storage

        directory = storage.localize(location)
    if (directory / MANIFEST).is_file() or not (directory / MLMODEL).is_file():
        return directory  # a bundle, or not one: Predictor says which
    return mlflow_bundle(directory, trust_code)


def mlflow_bundle(directory: Path, trust_code: bool = False) -> Path:
    """The bundle inside an MLflow model directory, found by reading its MLmodel as data.

    Only a model logged by `tympan register` is accepted: its pyfunc flavor names tympan's loader
    and ships no code. Anything else (a pickled `python_model`, other loaders, code paths) is
    refused, since `mlflow.pyfunc.load_model` would run it; with `trust_code` the single bundle
    among its files is used, still without running any of its code.
    """
    path = directory / MLMODEL
    try:
        mlmodel = yaml.safe_load(path.read_text())
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: not valid YAML ({exc})") from None
    flavors = mlmodel.get("flavors") if isinstance(mlmodel, dict) else None
    pyfunc = flavors.get("python_function") if isinstance(flavors, dict) else None
    if not isinstance(pyfunc, dict):
        raise DataError(f"{path}: no python_function flavor: not an MLflow pyfunc model")
    loader, data = pyfunc.get("loader_module"), pyfunc.get("data")
    if loader == LOADER_MODULE and not pyfunc.get("code") and isinstance(data, str):
        bundle_dir = (directory / data).resolve()
        if not bundle_dir.is_relative_to(directory.resolve()):
            raise DataError(f"{path}: its data path {data!r} leads outside the model directory")
        return bundle_dir
    if not trust_code:
        if pyfunc.get("python_model"):
            why = f"it is a pickled Python model ({pyfunc['python_model']}) that loading would unpickle"
        elif pyfunc.get("code"):
            why = f"it ships code ({pyfunc['code']}/) that loading would import"
        else:
            why = f"its loader_module is {loader!r}, not tympan's {LOADER_MODULE}"
        raise UntrustedCodeError(
            f"{path}: refusing to load: {why}; tympan loads only models logged by `tympan register` "
            "(register the run again), or with --trust-code (trust_code=True) the tympan bundle inside, "
            "never its pickled or code files"
        )
    manifests = sorted(directory.rglob(MANIFEST))
    if len(manifests) != 1:
        raise DataError(f"{directory}: an MLflow model with {len(manifests)} tympan bundles (need one)")
    return manifests[0].parent


def load(location: str | Path, device: str = "cpu", trust_code: bool = False) -> Predictor:
    """A bundle from a directory, an `s3://` URI, an MLflow model directory, or a model registry
    URI (`models:/NAME@ALIAS`). Only tympan's own classes are built unless `trust_code` is set."""
    return Predictor(resolve(location, trust_code), device, trust_code)
