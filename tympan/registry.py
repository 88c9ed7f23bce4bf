"""MLflow model registry: register a run's bundle as a pyfunc model, promote by alias, load back.

The registered model is an MLflow pyfunc whose data is the tympan bundle and whose loader is
`tympan.mlflow_pyfunc` (nothing pickled, no code shipped), so
`mlflow.pyfunc.load_model("models:/NAME@champion").predict(samples, params={"sample_rate": 8000})`
works on raw audio of any length, with the bundle's own preprocessing. Input: a float32
array (batch, time); rows of different lengths are right-padded with NaN, which is trimmed.
`download_model` (in `tympan.mlflow_store`, which `tympan.bundle` uses for `models:/`) fetches a
version into the cache, where `tympan.bundle` reads it as data.

MLflow calls fail within seconds when the tracking server is down (few retries, short
timeouts), as one RegistryError naming the tracking URI. MLflow is imported only inside functions
here, in `tympan.mlflow_store` and in tracking, so the rest of tympan works without it.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import asdict
from pathlib import Path

import numpy as np
import yaml

from tympan.bundle import LOADER_MODULE, Predictor
from tympan.config import flatten
from tympan.errors import ConfigError, DataError
from tympan.mlflow_store import RegistryError, connect, errors, unreachable
from tympan.mlflow_store import download_model as download_model  # public here too, as before
from tympan.results import BEFORE_TASKS, DIRECTIONS, best, describe, metric_values, ranking, tracking

log = logging.getLogger("tympan")
METRIC_TAG, DIRECTION_TAG = "tympan.metric", "tympan.direction"  # what a version is ranked on


def check_name(name) -> str:
    """A registered model name MLflow accepts, checked before anything is logged."""
    name = str(name) if isinstance(name, str | int) and not isinstance(name, bool) else None
    if not name or not name.strip():
        raise ConfigError("a registered model needs a name (--name NAME)")
    if "/" in name or ":" in name or posixpath.normpath(name) != name or name.startswith(".."):
        raise ConfigError(f"invalid model name {name!r}: MLflow names cannot contain '/' or ':' or be '.' or '..'")
    return name


def _signature(outputs: list[dict]):
    """The MLflow signature: raw audio in; the task's outputs in table form (`bundle.json`'s
    `outputs`: a string or number per output, or one number column per output column)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    # batch and time both variable: MLflow would otherwise freeze time to the example's length
    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, -1))])
    columns = []
    for output in outputs:
        kind = "string" if output["datatype"] == "BYTES" else "double"
        names = [f"{output['prefix']}{c}" for c in output["columns"]] if output.get("columns") else [output["name"]]
        columns += [ColSpec(kind, name) for name in names]
    outputs = Schema(columns)
    params = ParamSchema([ParamSpec("sample_rate", "long", 16000)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _read_run(run_dir: Path, trust_code: bool) -> tuple[dict, dict, dict]:
    """(manifest, summary, config) of a finished run whose bundle loads, or one DataError."""
    needed = [run_dir / "bundle" / "bundle.json", run_dir / "summary.json", run_dir / "config.yaml"]
    if not all(path.is_file() for path in needed):
        raise DataError(f"{run_dir}: not a finished run (needs bundle/, summary.json and config.yaml)")
    predictor = Predictor(run_dir / "bundle", trust_code=trust_code)  # never register what would not load
    try:
        summary = json.loads(needed[1].read_text())
        config = yaml.safe_load(needed[2].read_text())
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"{run_dir}: unreadable summary.json or config.yaml ({exc})") from None
    if not isinstance(summary, dict) or not isinstance(config, dict):
        raise DataError(f"{run_dir}: summary.json and config.yaml must each hold a mapping")
    outputs = [asdict(o) for o in predictor.outputs()]  # the task's, also for a bundle of an older format
    return {**predictor.manifest, "outputs": outputs}, summary, config


def register(run_dir: str | Path, name: str, uri: str | None = None, trust_code: bool = False) -> dict:
    """Log a finished run (params, metrics, tags, bundle as a pyfunc model) and register a new
    version of `name`. Returns {"name", "version", "run_id", "model_uri", "metrics"}.

    The version is tagged with its metrics and with what its run is ranked on (`tympan.metric`,
    e.g. dev.mae, and `tympan.direction`, max or min), which `promote` and `alias_metric` read.

    The bundle must load first; one of custom classes needs `trust_code` (and then loads only
    with trust, e.g. `mlflow.pyfunc.load_model(uri, model_config={"trust_code": True})`).
    """
    name = check_name(name)
    run_dir = Path(run_dir)
    manifest, summary, config = _read_run(run_dir, trust_code)
    metrics = metric_values(summary)
    metric, direction = tracking(summary, str(run_dir / "summary.json"))
    tags = {**{k: str(v) for k, v in metrics.items()}, METRIC_TAG: metric, DIRECTION_TAG: direction}
    mlflow = connect(uri)
    with errors(uri, f"registering {run_dir} as {name}"):
        return _log_and_register(mlflow, run_dir, name, manifest, config, metrics, tags)


def _log_and_register(
    mlflow, run_dir: Path, name: str, manifest: dict, config: dict, metrics: dict, tags: dict
) -> dict:
    summary_path = run_dir / "summary.json"
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
            loader_module=LOADER_MODULE,  # imported from the installed tympan: the model carries no code
            data_path=str(run_dir / "bundle"),
            # declared so that `load_model(uri, model_config={"trust_code": True})` may override it
            model_config={"trust_code": False},
            signature=_signature(manifest["outputs"]),
            pip_requirements=requirements(manifest),
            registered_model_name=name,
        )
    version = info.registered_model_version
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    # debug: `tympan register` prints it, and the pipeline's register step returns the version
    log.debug("registered %s version %s (run %s)", name, version, run.info.run_id)
    return {
        "name": name,
        "version": str(version),
        "run_id": run.info.run_id,
        "model_uri": info.model_uri,
        "metrics": metrics,
    }


# what loading and running any bundle imports (tympan.bundle and its imports; tests/test_registry.py checks it)
BASE_REQUIREMENTS = (
    "torch", "torchaudio", "numpy", "pydantic", "PyYAML", "safetensors", "soundfile", "librosa", "tqdm"
)  # fmt: skip


def requirements(manifest: dict) -> list[str]:
    """The pip requirements of a registered model, pinned to what is installed: what any bundle
    needs, plus what its own classes import (a class's `requires`: timm, transformers, ...), and
    only that. A class outside tympan (a user's own) is not imported to find out: it is named in a warning."""
    from importlib.metadata import version

    from tympan.bundle import ROLES, named_items
    from tympan.targets import RefusedTarget, resolve_own

    names = set(BASE_REQUIREMENTS)
    for role, item in named_items(manifest):
        try:
            cls = resolve_own(item["target"], *ROLES[role])
        except RefusedTarget:
            log.warning("%s is not one of tympan's classes: add what it imports to the model's requirements", item)
            continue
        names.update(cls.requirements(item.get("args") or {}) if hasattr(cls, "requirements") else ())
    return [f"{name}=={version(name)}" for name in sorted(names, key=str.lower)]


def _versions(client, name: str) -> list:
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise RegistryError(f"no registered model {name!r} (register a run first)")
    return versions


def _alias_holder(mlflow, client, name: str, alias: str):
    """The version `name@alias` points at, or None (no such model or alias yet)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException as exc:
        if unreachable(exc):
            raise
        return None


def version_tracking(version) -> tuple[str, str]:
    """(metric, direction) a registered version is ranked on, from its tags; a version registered
    before tasks has none and was ranked on dev accuracy."""
    metric, direction = version.tags.get(METRIC_TAG), version.tags.get(DIRECTION_TAG)
    if metric is None and direction is None:
        return BEFORE_TASKS
    if not metric or direction not in DIRECTIONS:
        raise RegistryError(
            f"version {version.version} of {version.name}: bad tags {METRIC_TAG}={metric!r}, "
            f"{DIRECTION_TAG}={direction!r}"
        )
    return metric, direction


def alias_metric(name: str, metric: str | None = None, alias: str = "champion", uri: str | None = None):
    """The `metric` (default: the one it is ranked on) of the version `name@alias` points at; None
    when there is no such version yet. A version without that metric is a ConfigError: its
    score cannot be compared with others (a model of another task under the same name, say)."""
    mlflow = connect(uri)
    with errors(uri, f"reading {name}@{alias}"):
        holder = _alias_holder(mlflow, mlflow.MlflowClient(), name, alias)
    if holder is None:
        return None
    tracked = version_tracking(holder)
    metric = metric or tracked[0]
    value = holder.tags.get(metric)
    if value is None:
        raise ConfigError(
            f"{name}@{alias} (version {holder.version}) has no metric {metric!r}; it is ranked on {describe(*tracked)}"
        )
    return float(value)


def promote(
    name: str,
    metric: str | None = None,
    alias: str = "champion",
    version: str | int | None = None,
    direction: str | None = None,
    uri: str | None = None,
) -> dict:
    """Point `alias` at the version best on `metric` (or at `version`). Returns
    {"version", "previous", "changed", "metric", "direction", "value", "download_uri"}.

    `metric` defaults to the one the versions are ranked on (their `tympan.metric` tag) in its
    direction, so a lower-is-better metric such as dev.mae promotes the lowest; versions ranked
    on different metrics need an explicit one. See `results.ranking` for `direction`."""
    name = check_name(name)
    mlflow = connect(uri)
    with errors(uri, f"promoting {name}@{alias}"):
        return _promote(mlflow, name, metric, alias, version, direction)


def _promote(mlflow, name: str, metric: str | None, alias: str, version, direction: str | None) -> dict:
    client = mlflow.MlflowClient()
    versions = _versions(client, name)
    holder = _alias_holder(mlflow, client, name, alias)
    previous = str(holder.version) if holder else None
    if version is not None:
        chosen = next((v for v in versions if str(v.version) == str(version)), None)
        if chosen is None:
            raise RegistryError(f"{name} has no version {version} (has {sorted(int(v.version) for v in versions)})")
        metric, direction = ranking([version_tracking(chosen)], metric, direction)
    else:
        metric, direction = ranking([version_tracking(v) for v in versions], metric, direction)
        # the alias holder first: on a tie it stays, a newer version moves it only by being better
        ordered = sorted(versions, key=lambda v: str(v.version) != str(previous))
        scored = [(v, float(v.tags[metric])) for v in ordered if metric in v.tags]
        if not scored:
            known = sorted({k for v in versions for k in v.tags if "." in k and not k.startswith("tympan.")})
            raise ConfigError(f"no version of {name} has metric {metric!r}; known: {', '.join(known)}")
        chosen = best(scored, direction)[0]
    changed = str(chosen.version) != str(previous)
    if changed:
        client.set_registered_model_alias(name, alias, chosen.version)
    return {
        "version": str(chosen.version),
        "previous": previous,
        "changed": changed,
        "metric": metric,
        "direction": direction,
        "value": chosen.tags.get(metric),
        "download_uri": client.get_model_version_download_uri(name, chosen.version),
    }
