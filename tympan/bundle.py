"""The self-contained model bundle: what gets registered, served and used for inference.

A bundle is a directory:
  bundle.json          model and feature configs, normalisation, task, labels, input contract
  model.safetensors    the weights (nothing is unpickled)
`load(path)` gives a `Predictor` that takes raw audio at any sample rate and repeats the
training-time preprocessing exactly (resample, features, normalisation), so CLI inference,
the MLflow model and the KServe predictor cannot drift apart from training.

A bundle is data: loading it never runs code it names. Its model and features targets must be
tympan's own classes (`tympan.models...:Class`, `tympan.transforms...:Class`), checked before
anything is imported, unless the caller passes `trust_code=True` for a bundle of its own custom
classes. An MLflow model directory is read the same way: its MLmodel must name tympan's loader
(`tympan.mlflow_pyfunc`), and only the bundle inside is read; nothing in it is unpickled.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tympan import audio
from tympan.config import Config, resolve_target
from tympan.errors import DataError
from tympan.fileio import atomic_dir, write_json
from tympan.transforms.normalize import normalize

FORMAT = "tympan-bundle/1"
MANIFEST = "bundle.json"
WEIGHTS = "model.safetensors"
MLMODEL = "MLmodel"
LOADER_MODULE = "tympan.mlflow_pyfunc"  # the pyfunc loader of models that `tympan register` logs
# where the classes a bundle may name without trust_code live, per role
PACKAGES = {"model": "tympan.models", "features": "tympan.transforms"}
NORMALIZE = ("none", "utterance")
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", re.ASCII)
TRUST_HINT = "pass --trust-code (trust_code=True) only for a bundle of your own custom classes"


class UntrustedCodeError(DataError):
    """A bundle or MLflow model names code that loading does not run without trust_code."""


def save(
    directory: Path,
    model: torch.nn.Module,
    config: Config,
    meta: dict,
    task: str,
    labels: list[str],
    metrics: dict,
) -> Path:
    """Write a bundle for `model` (already holding its best weights) into `directory`."""
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    manifest = {
        "format": FORMAT,
        "run_id": config.run_id(),
        "experiment": config.experiment,
        "task": task,
        "labels": labels,
        "model": {
            "target": config.model.target,
            "args": {**config.model.args, "n_mels": meta["n_bins"], "n_outputs": len(labels)},
        },
        "features": {"target": config.features.target, "args": config.features.all_args()},
        "normalize": config.features.normalize,
        "input": {
            "sample_rate": meta["sample_rate"],
            "frame_rate": meta["frame_rate"],
            "min_frames": int(getattr(model, "min_frames", 1)),
            # trained on clips of at most this long: the natural sliding window for long input
            "window": config.training.max_duration,
        },
        "metrics": metrics,
        "data": {"dataset": meta["dataset"], "features_key": meta["key"]},
    }
    with atomic_dir(directory) as tmp:
        save_file(weights, tmp / WEIGHTS)
        write_json(tmp / MANIFEST, manifest)
    return Path(directory)


@dataclass
class Prediction:
    """One clip's (or window's) result: class probabilities, the top label, and optionally the
    penultimate-layer embedding."""

    probabilities: np.ndarray
    label: str
    embedding: np.ndarray | None = None


def read_manifest(directory: str | Path) -> dict:
    """A bundle's bundle.json, checked for the keys and types loading needs (a DataError naming
    the file and the key otherwise)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise DataError(f"{directory}: not a tympan bundle (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: must hold a JSON object, not {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: unsupported bundle format {manifest.get('format')!r} (expected {FORMAT!r})")
    _check_types(path, manifest)
    return manifest


def _check_types(path: Path, manifest: dict) -> None:
    expected = {
        "experiment": str, "labels": list, "model": dict, "features": dict, "normalize": str, "input": dict,
        "model.target": str, "model.args": dict, "features.target": str, "features.args": dict,
        "input.frame_rate": int | float, "input.min_frames": int,
    }  # fmt: skip
    for key, kind in expected.items():
        parent, _, child = key.rpartition(".")
        holder = manifest[parent] if parent else manifest
        if child not in holder:
            raise DataError(f"{path}: missing key {key!r}")
        if not isinstance(holder[child], kind) or isinstance(holder[child], bool):
            raise DataError(f"{path}: {key!r} has the wrong type ({type(holder[child]).__name__})")
    if not manifest["labels"] or not all(isinstance(label, str) for label in manifest["labels"]):
        raise DataError(f"{path}: 'labels' must be a non-empty list of strings")
    if manifest["normalize"] not in NORMALIZE:
        raise DataError(f"{path}: 'normalize' is {manifest['normalize']!r}; expected one of {', '.join(NORMALIZE)}")


def _is_tympan_target(target: str, role: str) -> bool:
    """Whether `target` is `tympan.<role package>[.module]:Class`, judged on the string alone."""
    module, sep, name = target.partition(":")
    dotted = _DOTTED.fullmatch(module) is not None
    return bool(sep) and name.isidentifier() and dotted and _in_package(module, PACKAGES[role])


def _in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def check_targets(path: Path, manifest: dict, trust_code: bool = False) -> None:
    """Refuse, before importing anything, a bundle whose targets name code outside tympan."""
    if trust_code:
        return
    for role in PACKAGES:
        target = manifest[role]["target"]
        if not _is_tympan_target(target, role):
            raise UntrustedCodeError(
                f"{path}: refusing to load: the {role} target {target!r} names code outside tympan's own "
                f"{PACKAGES[role]} classes, and loading a bundle runs no other code; {TRUST_HINT}"
            )


def _build(path: Path, manifest: dict, role: str, trust_code: bool) -> torch.nn.Module:
    """The model or features module a checked manifest names, built from its args."""
    target, args = manifest[role]["target"], manifest[role]["args"]
    try:
        cls = resolve_target(target)
    except ValueError as exc:
        raise DataError(f"{path}: {role}: {exc}") from None
    package = PACKAGES[role]
    is_module = isinstance(cls, type) and issubclass(cls, torch.nn.Module)
    if not trust_code and not (is_module and _in_package(cls.__module__, package)):
        raise UntrustedCodeError(
            f"{path}: refusing to load: the {role} target {target!r} is not a torch module class of {package}; "
            f"{TRUST_HINT}"
        )
    try:
        built = cls(**args)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: cannot build the {role} {target} from its args ({exc})") from None
    if not isinstance(built, torch.nn.Module):
        raise DataError(f"{path}: the {role} target {target!r} did not build a torch module")
    return built


def _load_weights(model: torch.nn.Module, path: Path, target: str) -> None:
    """Load safetensors weights that match the model key for key and shape for shape."""
    if not path.is_file():
        raise DataError(f"{path}: missing (the bundle's weights)")
    try:
        weights = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{path}: not a readable safetensors file ({exc})") from None
    expected = model.state_dict()
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
    model.load_state_dict(weights)


def _some(keys: list[str]) -> str:
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return f"key(s) {', '.join(keys[:3])}{more}"


class Predictor:
    """Raw audio in, predictions out, with the preprocessing of training.

    Only tympan's own model and feature classes are built unless `trust_code` is set (see the
    module's docstring); a tampered or broken bundle is a DataError naming the file and the cause.
    """

    def __init__(self, directory: str | Path, device: str = "cpu", trust_code: bool = False):
        directory = Path(directory)
        self.manifest = read_manifest(directory)
        manifest_path = directory / MANIFEST
        check_targets(manifest_path, self.manifest, trust_code)
        self.directory = directory
        self.labels: list[str] = self.manifest["labels"]
        self.device = torch.device(device)
        self.extractor = _build(manifest_path, self.manifest, "features", trust_code).eval()
        self.sample_rate: int = self.extractor.sample_rate
        self.frame_rate: float = self.manifest["input"]["frame_rate"]
        self.min_frames: int = self.manifest["input"]["min_frames"]
        self.model = _build(manifest_path, self.manifest, "model", trust_code)
        _load_weights(self.model, directory / WEIGHTS, self.manifest["model"]["target"])
        self.model.to(self.device).eval()

    @property
    def name(self) -> str:
        return self.manifest["experiment"]

    def features(self, samples: np.ndarray, sample_rate: int) -> torch.Tensor:
        """(frames, bins) features of mono float samples, exactly as the feature store holds them
        plus the bundle's normalisation."""
        samples = audio.resample(np.asarray(samples, dtype=np.float32), sample_rate, self.sample_rate)
        try:
            with torch.no_grad():
                features = self.extractor(torch.from_numpy(np.ascontiguousarray(samples)))[0]
        except RuntimeError as err:  # e.g. fewer samples than the STFT's padding needs
            raise ValueError(
                f"audio too short for the features ({len(samples)} samples at {self.sample_rate} Hz)"
            ) from err
        return normalize(features, self.manifest["normalize"])

    @torch.no_grad()
    def predict_features(self, clips: list[torch.Tensor], embeddings: bool = False) -> list[Prediction]:
        """Predict a list of (frames, bins) feature tensors. Clips of equal length run as one batch;
        others run alone, so a result never depends on what it was batched with."""
        results: list[Prediction | None] = [None] * len(clips)
        groups: dict[int, list[int]] = {}
        for i, clip in enumerate(clips):
            groups.setdefault(len(clip), []).append(i)
        for indices in groups.values():
            batch = torch.stack([self._pad(clips[i]) for i in indices]).to(self.device)
            embedding = self.model.embed(batch)
            probabilities = torch.softmax(self.model.head(embedding).float(), dim=1).cpu().numpy()
            for row, i in enumerate(indices):
                results[i] = Prediction(
                    probabilities=probabilities[row],
                    label=self.labels[int(probabilities[row].argmax())],
                    embedding=embedding[row].float().cpu().numpy() if embeddings else None,
                )
        return results

    def as_row(self, prediction: Prediction) -> dict:
        """`{"label": ..., "prob_<class>": ...}`: the table form CLI inference and MLflow share."""
        probabilities = zip(self.labels, prediction.probabilities.tolist(), strict=True)
        return {"label": prediction.label, **{f"prob_{label}": p for label, p in probabilities}}

    def _pad(self, clip: torch.Tensor) -> torch.Tensor:
        missing = self.min_frames - len(clip)
        if missing <= 0:
            return clip
        return torch.nn.functional.pad(clip, (0, 0, 0, missing), value=float(clip.min()))

    def predict(self, samples: np.ndarray, sample_rate: int, embeddings: bool = False) -> Prediction:
        return self.predict_features([self.features(samples, sample_rate)], embeddings)[0]

    def predict_windows(
        self, samples: np.ndarray, sample_rate: int, window: float, hop: float, embeddings: bool = False
    ) -> tuple[list[tuple[float, float]], list[Prediction], Prediction]:
        """Sliding-window predictions over a long recording, and their mean as the file's result.

        Windows are cut from the features of the whole file, so each frame is computed once;
        the last window ends at the end of the recording.
        """
        if window <= 0 or hop <= 0:
            raise ValueError(f"window and hop must be positive, got {window} and {hop}")
        features = self.features(samples, sample_rate)
        size = max(self.min_frames, round(window * self.frame_rate))
        step = max(1, round(hop * self.frame_rate))
        starts = list(range(0, max(1, len(features) - size + 1), step))
        if starts[-1] + size < len(features):
            starts.append(len(features) - size)
        clips = [features[s : s + size] for s in starts]
        predictions = self.predict_features(clips, embeddings)
        spans = [(s / self.frame_rate, min(s + size, len(features)) / self.frame_rate) for s in starts]
        mean = np.mean([p.probabilities for p in predictions], axis=0)
        mean_embedding = np.mean([p.embedding for p in predictions], axis=0) if embeddings else None
        return spans, predictions, Prediction(mean, self.labels[int(mean.argmax())], mean_embedding)


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
