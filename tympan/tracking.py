"""Experiment tracking beside the run directory: MLflow when switched on in the config.

The run directory is always written and is the record of a run; tracking is a copy for
comparison in the MLflow UI. So a tracking server that is down, or goes down while training,
costs a warning and never the run: calls stop after the first failure.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tympan.config import Config

log = logging.getLogger("tympan")


class Tracker:
    """Does nothing; the interface the trainer calls."""

    def start(self, config: Config, run_dir: Path, resuming: bool) -> None: ...

    def log_epoch(self, epoch: int, row: dict) -> None: ...

    def finish(self, summary: dict, run_dir: Path) -> None: ...


class MlflowTracker(Tracker):
    """Params, per-epoch metrics, tags (git commit, data version) and the run's files in MLflow."""

    def __init__(self, uri: str | None, experiment: str | None, system_metrics: bool = False):
        from tympan.registry import tracking_uri

        self.uri = tracking_uri(uri)
        self.experiment = experiment
        self.system_metrics = system_metrics
        self.run = None
        self.failed = False
        # fail fast instead of MLflow's minutes of retries when the server is down
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")

    def _call(self, what: str, action) -> None:
        if self.failed:
            return
        try:
            action()
        except Exception as exc:  # any tracking failure: the run itself must go on
            self.failed = True
            log.warning(
                "MLflow tracking at %s failed while %s (%s); training continues and the run directory "
                "stays complete, but this run is not tracked from here on",
                self.uri, what, str(exc).splitlines()[0][:200],
            )  # fmt: skip

    def start(self, config: Config, run_dir: Path, resuming: bool) -> None:
        import mlflow

        from tympan.registry import flatten

        marker = run_dir / "mlflow_run_id"  # a resumed run continues its MLflow run

        def begin():
            mlflow.set_tracking_uri(self.uri)
            mlflow.set_experiment(self.experiment or config.experiment)
            previous = marker.read_text().strip() if resuming and marker.is_file() else None
            self.run = mlflow.start_run(
                run_id=previous, run_name=None if previous else config.run_id(), log_system_metrics=self.system_metrics
            )
            marker.write_text(self.run.info.run_id)
            if previous:
                return
            mlflow.log_params(flatten(config.model_dump(mode="json")))
            mlflow.set_tags({"tympan.run_id": config.run_id(), "tympan.run_dir": str(run_dir.resolve()), **_versions()})

        self._call("starting the run", begin)

    def log_epoch(self, epoch: int, row: dict) -> None:
        import mlflow

        metrics = {k: float(v) for k, v in row.items() if k != "epoch"}
        self._call(f"logging epoch {epoch}", lambda: mlflow.log_metrics(metrics, step=epoch))

    def finish(self, summary: dict, run_dir: Path) -> None:
        import mlflow

        from tympan.registry import metric_values

        def end():
            mlflow.log_metrics(metric_values(summary))
            for name in ("config.yaml", "metrics.csv", "summary.json"):
                mlflow.log_artifact(str(run_dir / name))
            mlflow.log_artifacts(str(run_dir / "plots"), "plots")
            mlflow.log_artifacts(str(run_dir / "bundle"), "bundle")
            mlflow.end_run()

        self._call("finishing the run", end)
        if self.failed and mlflow.active_run() is not None:
            try:
                mlflow.end_run(status="FAILED")
            except Exception:  # noqa: S110 (the server is down; nothing more to do)
                pass


def _versions() -> dict[str, str]:
    """Git commit of the working tree and DVC data version, where they can be read."""
    import subprocess

    tags = {}
    for tag, command in (
        ("git_commit", ["git", "rev-parse", "HEAD"]),
        ("dvc_lock", ["git", "log", "-1", "--format=%H", "--", "dvc.lock"]),
    ):
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=5)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip():
            tags[tag] = out.stdout.strip()
    return tags


def tracker(config: Config) -> Tracker:
    settings = config.tracking
    if not settings.mlflow:
        return Tracker()
    return MlflowTracker(settings.mlflow_uri, settings.mlflow_experiment, settings.system_metrics)
