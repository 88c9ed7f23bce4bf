"""MLflow model registry: register a run's bundle as a pyfunc model, promote by alias, load back.

The registered model is an MLflow pyfunc that wraps the tympan bundle, so
`mlflow.pyfunc.load_model("models:/NAME@champion").predict(samples, params={"sample_rate": 8000})`
works on raw audio of any length, with the bundle's own preprocessing. Input: a float32
array (batch, time); rows of different lengths are right-padded with NaN, which is trimmed.
MLflow is imported only here, so the rest of tympan works without it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import yaml

from tympan.errors import ConfigError, DataError, TympanError

log = logging.getLogger("tympan")
DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
TRACKING_ENV = "MLFLOW_TRACKING_URI"


class RegistryError(TympanError):
    """The registry has no such model, version or alias, or cannot be reached."""


def tracking_uri(uri: str | None = None) -> str:
    """The given URI, else $MLFLOW_TRACKING_URI, else a sqlite store in the working directory."""
    return uri or os.environ.get(TRACKING_ENV) or DEFAULT_TRACKING_URI


def _mlflow(uri: str | None):
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(uri))
    return mlflow


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"optimizer.args.lr": "0.003", ...} for MLflow params."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return out


def metric_values(summary: dict) -> dict[str, float]:
    """{"dev": {"accuracy": 0.9}} -> {"dev.accuracy": 0.9}; the names `promote --metric` takes."""
    return {
        f"{split}.{name}": float(value)
        for split, metrics in summary.items()
        if split != "run"
        for name, value in (metrics or {}).items()
    }


def _signature(labels: list[str]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    # batch and time both variable: MLflow would otherwise freeze time to the example's length
    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, -1))])
    outputs = Schema([ColSpec("string", "label"), *[ColSpec("double", f"prob_{label}") for label in labels]])
    params = ParamSchema([ParamSpec("sample_rate", "long", 16000)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _pyfunc_model():
    """The PythonModel class, defined lazily so that importing tympan does not import MLflow."""
    import mlflow.pyfunc

    class BundleModel(mlflow.pyfunc.PythonModel):
        """A tympan bundle as an MLflow pyfunc: raw audio rows in, labels and probabilities out."""

        def load_context(self, context):
            from tympan.bundle import Predictor

            self.predictor = Predictor(context.artifacts["bundle"])

        def predict(self, context, model_input, params=None):
            import pandas as pd

            rate = int((params or {}).get("sample_rate", self.predictor.sample_rate))
            rows = np.atleast_2d(np.asarray(model_input, dtype=np.float32))
            clips = [self.predictor.features(row[~np.isnan(row)], rate) for row in rows]
            predictions = self.predictor.predict_features(clips)
            return pd.DataFrame.from_records([self.predictor.as_row(p) for p in predictions])

    return BundleModel


def register(run_dir: str | Path, name: str, uri: str | None = None) -> dict:
    """Log a finished run (params, metrics, tags, bundle as a pyfunc model) and register a new
    version of `name`. Returns {"name", "version", "run_id", "model_uri", "metrics"}."""
    run_dir = Path(run_dir)
    bundle_dir = run_dir / "bundle"
    summary_path = run_dir / "summary.json"
    if not (bundle_dir / "bundle.json").is_file() or not summary_path.is_file():
        raise DataError(f"{run_dir}: not a finished run (needs bundle/ and summary.json)")
    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    summary = json.loads(summary_path.read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = metric_values(summary)

    mlflow = _mlflow(uri)
    import tympan

    mlflow.set_experiment(manifest["experiment"])
    with mlflow.start_run(run_name=manifest["run_id"]) as run:
        mlflow.log_params(flatten(config))
        mlflow.log_metrics(metrics)
        mlflow.set_tags(
            {
                "tympan.run_id": manifest["run_id"],
                "tympan.dataset": manifest["data"]["dataset"],
                "tympan.features_key": manifest["data"]["features_key"],
                "tympan.run_dir": str(run_dir.resolve()),
            }
        )
        mlflow.log_artifact(str(run_dir / "config.yaml"))
        mlflow.log_artifact(str(summary_path))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_pyfunc_model()(),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(Path(tympan.__file__).parent)],
            signature=_signature(manifest["labels"]),
            pip_requirements=_requirements(),
            registered_model_name=name,
        )
    version = info.registered_model_version
    client = mlflow.MlflowClient()
    for key, value in metrics.items():
        client.set_model_version_tag(name, version, key, str(value))
    log.info("registered %s version %s (run %s)", name, version, run.info.run_id)
    return {
        "name": name,
        "version": str(version),
        "run_id": run.info.run_id,
        "model_uri": info.model_uri,
        "metrics": metrics,
    }


def _requirements() -> list[str]:
    from importlib.metadata import version

    names = ["torch", "torchaudio", "torchlibrosa", "librosa", "soundfile", "numpy", "pydantic", "pyyaml",
             "safetensors", "scikit-learn", "tqdm", "matplotlib"]  # fmt: skip
    return [f"{n}=={version(n)}" for n in names]


def _versions(client, name: str) -> list:
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise RegistryError(f"no registered model {name!r} (register a run first)")
    return versions


def _alias_holder(mlflow, client, name: str, alias: str):
    """The version `name@alias` points at, or None (no such model or alias yet)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None


def alias_metric(name: str, metric: str = "dev.accuracy", alias: str = "champion", uri: str | None = None):
    """The `metric` tag of the version `name@alias` points at; None when there is none yet."""
    mlflow = _mlflow(uri)
    holder = _alias_holder(mlflow, mlflow.MlflowClient(), name, alias)
    value = holder.tags.get(metric) if holder else None
    return float(value) if value is not None else None


def promote(
    name: str,
    metric: str = "dev.accuracy",
    alias: str = "champion",
    version: str | int | None = None,
    lower_is_better: bool = False,
    uri: str | None = None,
) -> dict:
    """Point `alias` at the version best on `metric` (or at `version`). Returns
    {"version", "previous", "changed", "metric", "value", "download_uri"}."""
    mlflow = _mlflow(uri)
    client = mlflow.MlflowClient()
    versions = _versions(client, name)
    holder = _alias_holder(mlflow, client, name, alias)
    previous = str(holder.version) if holder else None
    if version is not None:
        chosen = next((v for v in versions if str(v.version) == str(version)), None)
        if chosen is None:
            raise RegistryError(f"{name} has no version {version} (has {sorted(int(v.version) for v in versions)})")
    else:
        scored = [(v, v.tags.get(metric)) for v in versions]
        scored = [(v, float(s)) for v, s in scored if s is not None]
        if not scored:
            known = sorted({k for v in versions for k in v.tags if "." in k})
            raise ConfigError(f"no version of {name} has metric {metric!r}; known: {', '.join(known)}")
        sign = -1 if lower_is_better else 1
        # best value first; on ties, the newer version wins only if strictly better, so keep the holder
        chosen = max(scored, key=lambda vs: (sign * vs[1], str(vs[0].version) == str(previous)))[0]
    changed = str(chosen.version) != str(previous)
    if changed:
        client.set_registered_model_alias(name, alias, chosen.version)
    return {
        "version": str(chosen.version),
        "previous": previous,
        "changed": changed,
        "metric": metric,
        "value": chosen.tags.get(metric),
        "download_uri": client.get_model_version_download_uri(name, chosen.version),
    }


def download_bundle(model_uri: str, uri: str | None = None) -> Path:
    """Fetch a registered model (`models:/NAME@ALIAS` or `models:/NAME/VERSION`) and return the
    directory of its tympan bundle."""
    mlflow = _mlflow(uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tempfile.mkdtemp()))
    except mlflow.exceptions.MlflowException as exc:
        raise RegistryError(f"{model_uri}: {exc.message}") from None
    manifests = sorted(local.rglob("bundle.json"))
    if not manifests:
        raise RegistryError(f"{model_uri}: the model holds no tympan bundle")
    return manifests[0].parent
