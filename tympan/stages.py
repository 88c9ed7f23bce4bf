"""The pipeline stages. The CLI, dvc.yaml and the Kubeflow components all call these and
nothing else: fetch -> preprocess -> train."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from pydantic import ValidationError

from tympan import cpu, store
from tympan.config import Config, DataConfig, expand_grid
from tympan.datasets.base import AudioDataset, Index
from tympan.errors import ConfigError

log = logging.getLogger("tympan")


def dataset_of(config: Config | DataConfig) -> AudioDataset:
    return config.dataset.build_checked("dataset")


def fetch(config: Config | DataConfig) -> Path:
    """Download (or copy from the offline mirror) the dataset and write this dataset block's index."""
    return dataset_of(config).fetch(config.dataset.root, config.dataset.on_unreadable)


def data_report(config: Config | DataConfig) -> dict | None:
    """The data report that this config's dataset block's fetch saved beside its index (see
    `tympan.datasets.report`); None when there is none (a copy indexed by an older tympan)."""
    return dataset_of(config).report(config.dataset.root)


def index_of(config: Config | DataConfig) -> Index:
    """The index this config's dataset block made when fetched (never another block's: see
    `AudioDataset.index`); every stage that reads an index reads it from here."""
    return dataset_of(config).index(config.dataset.root)


def preprocess(config: Config | DataConfig, progress: bool = True, workers: int | None = None) -> Path:
    """Extract offline features for every split into the packed feature store. Worker processes:
    `workers`, else one per CPU this process is given (the config's `training.threads`; a
    pipeline's DataConfig has none, and OMP_NUM_THREADS, affinity and CPU quota decide)."""
    training = getattr(config, "training", None)
    if workers is None:
        workers = cpu.threads(training.threads if training else None)
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a whole number of processes, at least 1, not {workers!r}")
    dataset = dataset_of(config)
    index = dataset.index(config.dataset.root)
    shown = progress and (not training or training.progress)
    return store.build(config, dataset, index, progress=shown, workers=workers)


def default_run_dir(config: Config) -> Path:
    return Path("runs") / config.experiment / config.run_id()


def train(config: Config, run_dir: str | Path | None = None, features: str | Path | None = None) -> tuple[Path, dict]:
    """Train on the preprocessed features; returns the run directory and its summary.

    `features`: the store to train on, or a folder of stores named by config digest (a pipeline's
    features artifact); default: the config's store (`tympan.store.store_dir`). Only the store is
    read, never the raw audio or its index, and it must be this config's."""
    cpu.configure(config.training.threads)
    run_dir = Path(run_dir) if run_dir else default_run_dir(config)
    name = dataset_of(config).name
    if features is None:
        features = store.store_dir(config, name)
    elif not (Path(features) / "meta.json").is_file():
        features = store.store_in(features, config, name)
    from tympan import training  # here, not above: preprocess starts without the training stack

    summary = training.train(config, Path(features), run_dir)
    return run_dir, summary


# ---- the stages after training, and the helpers the Kubeflow components need ------------------
# Components (components/) only move typed artifacts in and out of these calls.


def _read_config_text(config: str) -> tuple[dict, str]:
    """A config given as YAML text, or as a URI in object storage (s3://...)."""
    from tympan import storage
    from tympan.config import from_yaml

    text, source = config, "pipeline config"
    if "\n" not in config.strip() and storage.is_remote(config.strip()):
        path = storage.localize(config.strip())
        if not path.is_file():
            raise ConfigError(f"{config.strip()}: a prefix, not a config file")
        text, source = path.read_text(encoding="utf-8"), config.strip()
    return from_yaml(text, source), source


def plan(config: str, grid: str = "") -> dict:
    """Resolve a pipeline's config (YAML text or s3:// URI) and its grid into what the stages take:
    {"dataset": a DataConfig of the dataset block, "features": one of dataset+features (YAML
    text each, for `data_config`), "runs": [YAML of each resolved run config, for `run_config`]}.
    `grid` (YAML mapping) replaces the config's own `grid:` block.

    Fetching and preprocessing happen once per pipeline run, so the grid may not vary the dataset
    or the features (their cache keys are exactly those blocks)."""
    import yaml

    raw, source = _read_config_text(config)
    if grid and grid.strip():
        block = yaml.safe_load(grid)
        if not isinstance(block, dict):
            raise ConfigError(f"grid: expected a mapping of config keys to lists of values, got {grid!r}")
        raw = {**raw, "grid": block}
    bad = [k for k in (raw.get("grid") or {}) if k.split(".")[0] in ("dataset", "features")]
    if bad:
        raise ConfigError(f"grid: {', '.join(bad)}: the pipeline preprocesses once, so the grid cannot vary them")
    configs = expand_grid(raw, source)
    return {
        "dataset": configs[0].data(features=False).to_yaml(),
        "features": configs[0].data().to_yaml(),
        "runs": [c.to_yaml() for c in configs],
    }


def _in_folder(features: dict, root: str | Path) -> dict:
    """A features block whose store lies in `root` under its digest name: a pipeline's artifact
    folder, not the path (`features.store`) the config names on the machine that wrote it."""
    return {**{k: v for k, v in features.items() if k != "store"}, "root": str(root)}


def data_config(text: str, raw_root: str | Path, features_root: str | Path | None = None) -> DataConfig:
    """A DataConfig of `plan` (YAML text), rooted in the given directories."""
    from tympan.config import from_yaml

    raw = from_yaml(text, "data config")
    raw["dataset"] = {**raw.get("dataset", {}), "root": str(raw_root)}
    if features_root is not None:
        raw["features"] = _in_folder(raw.get("features", {}), features_root)
    try:
        return DataConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"data config: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None


def run_config(text: str, features_root: str | Path) -> Config:
    """One resolved run config of `plan` (YAML text) on the features below `features_root`.

    Per-run MLflow tracking is switched off: parallel runs must not write one store at once;
    the registered run is logged to MLflow by `register_best`."""
    from tympan import config as configuration

    raw = configuration.from_yaml(text, "run config")
    raw["features"] = _in_folder(raw.get("features", {}), features_root)
    raw["tracking"] = {**(raw.get("tracking") or {}), "mlflow": False}
    return configuration.parse(raw, "run config")


def collect(
    run_dirs: list[str | Path], out: str | Path, metric: str | None = None, direction: str | None = None
) -> dict:
    """Gather finished runs below `out/runs/`, write the comparison report (postprocess) and return
    {"best": run dir of the best run, "score", "metric", "direction", "metrics", "report"}.

    Runs are ranked on their tracking metric in its direction (summary.json), unless `metric`
    names another; see `results.ranking`."""
    import json

    from tympan import postprocess, results
    from tympan.errors import DataError

    runs = {}
    for run_dir in map(Path, run_dirs):
        if not (run_dir / "summary.json").is_file():
            raise DataError(f"{run_dir}: not a finished run (no summary.json)")
        runs[run_dir] = json.loads((run_dir / "summary.json").read_text())
    if not runs:
        raise DataError("no runs to collect")
    trackings = [results.tracking(summary, str(run_dir / "summary.json")) for run_dir, summary in runs.items()]
    metric, direction = results.ranking(trackings, metric, direction)
    root, scored = Path(out) / "runs", []
    for run_dir, summary in runs.items():
        metrics = results.metric_values(summary)
        if metric not in metrics:
            raise ConfigError(f"metric {metric!r} is not in {run_dir / 'summary.json'}; it has: {', '.join(metrics)}")
        scored.append(((run_dir, root / summary["run"]["id"], metrics), metrics[metric]))
    for run_dir, copy, _ in (item for item, _ in scored):
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("best", "last", ".*"), dirs_exist_ok=True)
    (_, best, metrics), score = results.best(scored, direction)
    report = postprocess.report(root, None, metric, direction=direction)
    return {
        "best": best,
        "score": score,
        "metric": metric,
        "direction": direction,
        "metrics": metrics,
        "report": report,
    }


def champion_score(name: str, metric: str | None = None, alias: str = "champion", uri: str | None = None):
    """The `metric` (default: its own tracking metric) of the version `name@alias` points at;
    None when there is no such model yet."""
    from tympan import registry

    return registry.alias_metric(name, metric, alias, uri)


def beats_champion(
    score: float,
    name: str,
    metric: str,
    direction: str,
    threshold: float | None = None,
    alias: str = "champion",
    uri: str | None = None,
) -> bool:
    """The pipeline's gate: whether a run scoring `score` on `metric` replaces `name@alias`.

    It must be strictly better than the champion's score on the same metric (any score beats no
    champion) and than `threshold`, which is a floor for a higher-is-better metric and a ceiling
    for a lower-is-better one (dev.mae 12.5: register only below 12.5); None sets no threshold."""
    from tympan.results import better

    champion = champion_score(name, metric, alias, uri)
    beats = better(score, champion, direction) and better(score, threshold, direction)
    verdict = "beats" if beats else "does not beat"
    log.info("%s %s@%s (%s %s; champion %s, threshold %s)", verdict, name, alias, metric, score, champion, threshold)
    return beats


def register_best(
    run_dir: str | Path, name: str, metric: str | None = None, alias: str = "champion", uri: str | None = None
):
    """Register a run as a new version of `name` and move `alias` to it (the pipeline calls this only
    when the run beat the champion). Returns registry.register's dict plus "download_uri"."""
    from tympan import registry

    result = registry.register(run_dir, name, uri)
    promoted = registry.promote(name, metric, alias, result["version"], uri=uri)
    return {**result, "alias": alias, "download_uri": promoted["download_uri"]}


def inference_service(name: str, version: str, image: str, tracking_uri: str, namespace: str = "default") -> dict:
    """A KServe InferenceService that serves `models:/name/version` with the tympan serving image."""
    service = name.lower().replace("_", "-").replace(".", "-")
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": service,
            "namespace": namespace,
            "labels": {"tympan/model": service, "tympan/version": str(version)},
        },
        "spec": {
            "predictor": {
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": image,
                        # the serving image's entrypoint is `tympan serve` (images/serve/Dockerfile)
                        "args": [f"models:/{name}/{version}", "--host", "0.0.0.0", "--port", "8080", "--name", service],
                        "env": [{"name": "MLFLOW_TRACKING_URI", "value": tracking_uri}],
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    }
                ]
            }
        },
    }


def deploy(manifest: dict, out: str | Path) -> bool:
    """Write the InferenceService manifest to `out`; apply it only inside a cluster
    (KUBERNETES_SERVICE_HOST set). Returns whether it was applied."""
    import os

    import yaml

    from tympan.fileio import write_text

    write_text(out, yaml.safe_dump(manifest, sort_keys=False))
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        log.info("not in a cluster: wrote the InferenceService manifest to %s without applying it", out)
        return False
    from kubernetes import client, config

    config.load_incluster_config()
    api = client.CustomObjectsApi()
    group, version = manifest["apiVersion"].split("/")
    where = {"group": group, "version": version, "namespace": manifest["metadata"]["namespace"]}
    try:
        api.create_namespaced_custom_object(plural="inferenceservices", body=manifest, **where)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
        name = manifest["metadata"]["name"]
        api.patch_namespaced_custom_object(plural="inferenceservices", name=name, body=manifest, **where)
    log.info("applied InferenceService %s", manifest["metadata"]["name"])
    return True


def environment(s3_endpoint: str = "", mlflow_uri: str = "") -> None:
    """Point boto3 and MLflow at the pipeline's endpoints (credentials come from the environment)."""
    import os

    if s3_endpoint:
        os.environ["AWS_ENDPOINT_URL"] = s3_endpoint
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = s3_endpoint
    if mlflow_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
