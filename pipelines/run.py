"""Compile the training pipeline, run it on this machine with kfp.local, or submit it to a
Kubeflow Pipelines server. `tympan pipeline compile|run-local|submit` call these."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from pathlib import Path

from pipelines import cluster as clusters
from pipelines import training
from tympan.errors import ConfigError, TympanError

log = logging.getLogger("tympan")
COMPILED = Path(__file__).with_name("compiled") / "training.yaml"


class SubmitError(TympanError):
    """The Kubeflow Pipelines server refused or could not be reached."""


def compile_pipeline(output: str | Path = COMPILED, cluster: str | Path | None = None) -> Path:
    """Write the pipeline IR YAML (atomically) with the cluster settings applied."""
    from kfp import compiler

    from tympan.fileio import atomic_path

    output = Path(output)
    if output.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"{output}: the compiled pipeline is YAML; name it *.yaml")
    pipeline = training.build(clusters.load(cluster))
    with atomic_path(output) as tmp:
        compiled = tmp.with_suffix(".yaml")
        try:
            compiler.Compiler().compile(pipeline, str(compiled))
            os.replace(compiled, tmp)
        finally:
            compiled.unlink(missing_ok=True)
    return output


def read_config(config: str) -> str:
    """A local config file's text; an s3:// URI is passed through for the plan step to fetch."""
    if "://" in config:
        return config
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"{config}: no such config file")
    return path.read_text(encoding="utf-8")


def arguments(
    config: str, grid: str = "", mlflow_uri: str = "", s3_endpoint: str = "", threshold: float | None = None, **extra
) -> dict:
    """The pipeline's run-time parameters (secrets never: those come from Kubernetes secrets).
    Unset ones (None) take the pipeline's defaults; `threshold` travels as text ("": none)."""
    from tympan.results import DIRECTIONS

    if extra.get("direction") not in (None, *DIRECTIONS):
        raise ConfigError(f"direction must be max or min, got {extra['direction']!r}")
    args = {"config": read_config(config), "grid": grid, "mlflow_uri": mlflow_uri, "s3_endpoint": s3_endpoint}
    if threshold is not None:
        args["threshold"] = _number(threshold, "threshold")
    if "://" not in config:
        from tympan import stages

        stages.plan(args["config"], grid)  # a bad config or grid fails here, naming the key, not in a task
    return {**args, **{k: v for k, v in extra.items() if v is not None}}


def _number(value, name: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return repr(number)


@contextlib.contextmanager
def _cwd(path: Path):
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run_local(
    config: str,
    root: str | Path = "runs/pipeline",
    grid: str = "",
    mlflow_uri: str | None = None,
    threshold: float | None = None,
    model_name: str = "tympan",
    metric: str | None = None,
    cache: bool = True,
    direction: str | None = None,
) -> dict:
    """Run the pipeline with kfp.local (one subprocess per task, in this environment).

    Runs are ranked on their tracking metric unless `metric` (and `direction`) name another;
    `threshold` is a floor (higher-is-better) or ceiling (lower-is-better) the best must beat.

    Resource limits and kfp-kubernetes settings are ignored locally. The grid runs one task at a
    time (sqlite MLflow stores do not take parallel writers). Returns {"best": the best run's
    directory, "tracking_uri", "pipeline_root"}."""
    import warnings

    from kfp import local

    root = Path(root).resolve()
    uri = mlflow_uri or f"sqlite:///{root / 'mlflow.db'}"
    params = arguments(
        config, grid, uri, threshold=threshold, model_name=model_name, metric=metric, direction=direction
    )
    root.mkdir(parents=True, exist_ok=True)
    pipeline = training.build(clusters.Cluster(parallelism=1))
    mirror = os.environ.get("TYMPAN_DATA_MIRROR")
    if mirror:  # the tasks run in `root`: a relative mirror path would point elsewhere there
        os.environ["TYMPAN_DATA_MIRROR"] = str(Path(mirror).resolve())
    # the tasks run with this working directory: MLflow's default artifact store lands in the root
    with _cwd(root), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(custom or non-Python base image|ignored).*")
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(root / "kfp"),
            raise_on_error=True,
            enable_caching=cache,
        )
        try:
            task = pipeline(**params)
        except RuntimeError as exc:
            raise TympanError(f"the local pipeline run failed: {exc}") from None
    return {"best": Path(task.output.path), "tracking_uri": uri, "pipeline_root": root / "kfp"}


def submit(
    host: str,
    config: str,
    grid: str = "",
    mlflow_uri: str = "",
    s3_endpoint: str = "",
    threshold: float | None = None,
    model_name: str | None = None,
    metric: str | None = None,
    package: str | Path | None = None,
    cluster: str | Path | None = None,
    experiment: str = "tympan",
    run_name: str | None = None,
    namespace: str | None = None,
    cron: str | None = None,
    token: str | None = None,
    direction: str | None = None,
) -> dict:
    """Upload the pipeline and start a run, or with `cron` (6 fields, seconds first) a recurring run.

    `package` is a compiled pipeline YAML; without it the pipeline is compiled with `cluster`.
    Returns {"run_id"} or {"recurring_run_id"}, plus "experiment_id"."""
    import kfp

    if cron is not None and len(str(cron).split()) != 6:
        raise ConfigError(f"--cron {cron!r}: KFP cron expressions have 6 fields, seconds first (0 0 2 * * *)")
    params = arguments(
        config, grid, mlflow_uri, s3_endpoint, threshold, model_name=model_name, metric=metric, direction=direction
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(package) if package else compile_pipeline(Path(tmp) / "training.yaml", cluster)
        if not path.is_file():
            raise ConfigError(f"{path}: no such compiled pipeline")
        try:
            client = kfp.Client(host=host, existing_token=token, namespace=namespace or "kubeflow")
            ns = {"namespace": namespace} if namespace else {}
            exp = client.create_experiment(experiment, **ns)
            name = run_name or training.NAME
            if cron is None:
                # the compiled spec travels inline with the run: no pipeline registry entry to clean up
                run = client.create_run_from_pipeline_package(
                    str(path), arguments=params, run_name=name, experiment_id=exp.experiment_id, **ns
                )
                return {"experiment_id": exp.experiment_id, "run_id": run.run_id}
            job = client.create_recurring_run(
                experiment_id=exp.experiment_id,
                job_name=name,
                cron_expression=cron,
                params=params,
                pipeline_package_path=str(path),
                max_concurrency=1,
                no_catchup=True,
            )
            return {"experiment_id": exp.experiment_id, "recurring_run_id": job.recurring_run_id}
        except Exception as exc:  # kfp_server_api raises ApiException, urllib3 MaxRetryError, ...
            if isinstance(exc, TympanError):
                raise
            reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
            raise SubmitError(f"{host}: {type(exc).__name__}: {reason}") from None
