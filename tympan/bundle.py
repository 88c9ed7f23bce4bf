"""The self-contained model bundle: what gets registered, served and used for inference.

A bundle is a directory:
  bundle.json          model and feature configs, normalisation, task, labels, input contract
  model.safetensors    the weights (nothing is unpickled)
`load(path)` gives a `Predictor` that takes raw audio at any sample rate and repeats the
training-time preprocessing exactly (resample, features, normalisation), so CLI inference,
the MLflow model and the KServe predictor cannot drift apart from training.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tympan import audio
from tympan.config import Component, Config
from tympan.errors import DataError
from tympan.fileio import write_json
from tympan.transforms.normalize import normalize

FORMAT = "tympan-bundle/1"
MANIFEST = "bundle.json"
WEIGHTS = "model.safetensors"


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
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, tmp / WEIGHTS)
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
    write_json(tmp / MANIFEST, manifest)
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory


@dataclass
class Prediction:
    """One clip's (or window's) result: class probabilities, the top label, and optionally the
    penultimate-layer embedding."""

    probabilities: np.ndarray
    label: str
    embedding: np.ndarray | None = None


class Predictor:
    """Raw audio in, predictions out, with the preprocessing of training."""

    def __init__(self, directory: str | Path, device: str = "cpu"):
        directory = Path(directory)
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            raise DataError(f"{directory}: not a tympan bundle (no {MANIFEST})")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise DataError(f"{manifest_path}: unsupported bundle format {self.manifest.get('format')!r}")
        self.directory = directory
        self.labels: list[str] = self.manifest["labels"]
        self.device = torch.device(device)
        self.extractor = Component(**self.manifest["features"]).build().eval()
        self.sample_rate: int = self.extractor.sample_rate
        self.frame_rate: float = self.manifest["input"]["frame_rate"]
        self.min_frames: int = self.manifest["input"]["min_frames"]
        self.model = Component(**self.manifest["model"]).build()
        self.model.load_state_dict(load_file(directory / WEIGHTS))
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


def resolve(location: str | Path) -> Path:
    """The local bundle directory behind `location`: a bundle directory, `s3://` URI of one
    (downloaded to the cache), `models:/NAME@ALIAS`, or an MLflow model directory holding a bundle
    among its artifacts (what KServe's storage initializer puts in /mnt/models)."""
    location = str(location)
    if location.startswith("models:/"):
        from tympan import registry

        return Path(registry.download_bundle(location))
    from tympan import storage

    directory = storage.localize(location)
    if (directory / MANIFEST).is_file() or not (directory / "MLmodel").is_file():
        return directory  # a bundle, or not one: Predictor says which
    manifests = sorted((directory / "artifacts").rglob(MANIFEST))
    if len(manifests) != 1:
        raise DataError(f"{location}: an MLflow model with {len(manifests)} tympan bundles in artifacts/ (need one)")
    return manifests[0].parent


def load(location: str | Path, device: str = "cpu") -> Predictor:
    """A bundle from a directory, an `s3://` URI, an MLflow model directory, or a model registry
    URI (`models:/NAME@ALIAS`)."""
    return Predictor(resolve(location), device)
