"""One lightweight component per stage. Each body imports tympan, calls one function of
`tympan.stages` and moves typed artifacts in and out; nothing else.

They run in the tympan images (images/images.env) with `install_kfp_package=False`, so a task
never pip-installs at run time (air-gapped clusters), and the same components run under
`kfp.local` in the current environment."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.images import BASE, SERVE, TRAIN

cpu_component = dsl.component(base_image=BASE, install_kfp_package=False)
train_component = dsl.component(base_image=TRAIN, install_kfp_package=False)
SERVE_IMAGE = SERVE


@cpu_component
def plan(config: str, grid: str, dataset_config: dsl.OutputPath(str), features_config: dsl.OutputPath(str)) -> list:
    """Resolve the config (YAML text or s3:// URI) and expand its grid: returns one config per run,
    and writes the dataset and dataset+features blocks that fetch and preprocess take."""
    from pathlib import Path

    from tympan import stages

    result = stages.plan(config, grid)
    Path(dataset_config).write_text(result["dataset"])
    Path(features_config).write_text(result["features"])
    return result["runs"]


@cpu_component
def fetch(dataset_config: str, s3_endpoint: str, raw: Output[Dataset], report: Output[Markdown]):
    """Fetch the dataset (its config block only, so the cache key is that block) as raw audio; its
    data report (files, duration, rates, channels and balance per split) is the Markdown output."""
    import shutil

    from tympan import stages

    stages.environment(s3_endpoint)
    config = stages.data_config(dataset_config, raw.path)
    path = stages.fetch(config)
    dataset = config.dataset.build_checked("dataset")
    shutil.copyfile(dataset.report_files(config.dataset.root)[1], report.path)
    splits = dataset.report(config.dataset.root)["splits"]
    raw.metadata.update(
        {
            "dataset": path.name,
            "samples": len(stages.index_of(config)),
            "samples_per_split": {split: found["files"] for split, found in splits.items()},
        }
    )


@cpu_component
def preprocess(features_config: str, raw: Input[Dataset], features: Output[Dataset]):
    """Extract the offline features of the fetched audio (dataset + features blocks as cache key)."""
    from tympan import stages
    from tympan.store import read_meta

    meta = read_meta(stages.preprocess(stages.data_config(features_config, raw.path, features.path)))
    features.metadata.update(
        {
            "dataset": meta["dataset"],
            "samples": sum(meta["clips"].values()),
            "samples_per_split": meta["clips"],
            "features_key": meta["key"],
        }
    )


@train_component
def train(config: str, features: Input[Dataset], model: Output[Model]):
    """Train one resolved run config on its store in the features artifact (found by config digest);
    the run directory (bundle included) is the Model."""
    from tympan import stages
    from tympan.results import metric_values

    _, summary = stages.train(stages.run_config(config, features.path), model.path, features.path)
    model.metadata.update(
        {"framework": "pytorch", "run_id": summary["run"]["id"], "mlflow_model_uri": "", **metric_values(summary)}
    )


@cpu_component
def collect(
    runs: Input[list[Model]],
    metric: str,
    direction: str,
    report: Output[Markdown],
    report_html: Output[HTML],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    best: Output[Model],
) -> NamedTuple("Collected", [("score", float), ("metric", str), ("direction", str)]):
    """Compare the grid's runs (postprocess report) and pick the best on `metric` in `direction`
    (empty: the runs' tracking metric and its direction). Returns its score and what it was
    ranked on. `metrics` holds the best run's scalar metrics (with `task.stratify`, each group's
    too: dev.speaker.jackson.accuracy, dev.accuracy.worst_speaker); `confusion` its dev confusion
    matrix, for a task that writes one (classification), else it stays empty."""
    import shutil
    import tempfile
    from collections import namedtuple

    from tympan import postprocess, stages

    out = tempfile.mkdtemp(prefix="collect-")
    result = stages.collect([r.path for r in runs], out, metric or None, direction or None)
    shutil.copyfile(result["report"] / "report.md", report.path)
    shutil.copyfile(result["report"] / "report.html", report_html.path)
    for name, value in result["metrics"].items():
        metrics.log_metric(name, value)
    found = postprocess.read_confusion(result["best"], "dev")
    if found is not None:
        confusion.log_confusion_matrix(found[0], found[1].tolist())
    shutil.copytree(result["best"], best.path)
    ranked = {"tympan.metric": result["metric"], "tympan.direction": result["direction"]}
    best.metadata.update({"framework": "pytorch", "mlflow_model_uri": "", **ranked, **result["metrics"]})
    collected = namedtuple("Collected", ["score", "metric", "direction"])
    return collected(result["score"], result["metric"], result["direction"])


@cpu_component
def champion(
    name: str, score: float, metric: str, direction: str, threshold: str, mlflow_uri: str, s3_endpoint: str
) -> bool:
    """The gate: whether `score` beats the registered champion's `metric` in `direction`, and
    `threshold` (a floor for max, a ceiling for min; empty: none)."""
    from tympan import stages

    stages.environment(s3_endpoint, mlflow_uri)
    bar = float(threshold) if threshold.strip() else None
    return stages.beats_champion(score, name, metric, direction, bar, uri=mlflow_uri or None)


@cpu_component
def register(
    best: Input[Model], name: str, metric: str, mlflow_uri: str, s3_endpoint: str, registered: Output[Model]
) -> str:
    """Register the best run in MLflow, move the champion alias to it; returns the version."""
    import shutil
    from pathlib import Path

    from tympan import stages

    stages.environment(s3_endpoint, mlflow_uri)
    result = stages.register_best(best.path, name, metric or None, uri=mlflow_uri or None)
    shutil.copytree(Path(best.path) / "bundle", registered.path)
    registered.metadata.update(
        {
            "framework": "pytorch",
            "mlflow_model_uri": f"models:/{name}/{result['version']}",
            "mlflow_logged_model_uri": result["model_uri"],
            "download_uri": result["download_uri"],
            "version": result["version"],
            **result["metrics"],
        }
    )
    return result["version"]


@cpu_component
def deploy(name: str, version: str, mlflow_uri: str, namespace: str, image: str, manifest: Output[Artifact]):
    """Write the KServe InferenceService for the registered version; apply it when inside a cluster."""
    from tympan import stages

    service = stages.inference_service(name, version, image, mlflow_uri, namespace)
    applied = stages.deploy(service, manifest.path)
    manifest.metadata.update({"kind": "InferenceService", "name": service["metadata"]["name"], "applied": applied})
