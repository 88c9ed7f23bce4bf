"""Experiment tracking beside the run directory: MLflow and TensorBoard, each switched on in
the config.

The run directory is always written and is the record of a run; tracking is a copy for
comparison in the MLflow UI or TensorBoard. So a tracking server that is down, or goes down
while training, costs a warning and never the run: calls stop after the first failure.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tympan.config import Config, flatten
from tympan.errors import ConfigError
from tympan.mlflow_store import fail_fast, tracking_uri
from tympan.results import metric_values

log = logging.getLogger("tympan")


class Tracker:
    """Does nothing; the interface the trainer calls."""

    def start(self, config: Config, run_dir: Path, resumed_at: int | None) -> None:
        """`resumed_at`: None for a new run, else the epoch (or step) of the last row kept."""

    def log_row(self, step: int, row: dict) -> None:
        """One metrics.csv row; `step` is the epoch, or the optimizer step when training counts steps."""

    def finish(self, summary: dict, run_dir: Path) -> None: ...


class MlflowTracker(Tracker):
    """Params, per-epoch metrics, tags (git commit, data version), the data report of the dataset's
    fetch (under `data/`) and the run's files in MLflow."""

    def __init__(self, uri: str | None, experiment: str | None, system_metrics: bool = False):
        self.uri = tracking_uri(uri)
        self.experiment = experiment
        self.system_metrics = system_metrics
        self.run = None
        self.failed = False
        fail_fast(timeout=5)  # a training step should not wait long on a server that is down

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

    def start(self, config: Config, run_dir: Path, resumed_at: int | None) -> None:
        import mlflow

        marker = run_dir / "mlflow_run_id"  # a resumed run continues its MLflow run

        def begin():
            mlflow.set_tracking_uri(self.uri)
            mlflow.set_experiment(self.experiment or config.experiment)
            previous = marker.read_text().strip() if resumed_at is not None and marker.is_file() else None
            self.run = mlflow.start_run(
                run_id=previous, run_name=None if previous else config.run_id(), log_system_metrics=self.system_metrics
            )
            marker.write_text(self.run.info.run_id)
            if previous:
                return
            mlflow.log_params(flatten(config.model_dump(mode="json")))
            mlflow.set_tags({"tympan.run_id": config.run_id(), "tympan.run_dir": str(run_dir.resolve()), **_versions()})
            for file in _data_report(config):
                mlflow.log_artifact(str(file), "data")

        self._call("starting the run", begin)

    def log_row(self, step: int, row: dict) -> None:
        import mlflow

        metrics = {k: float(v) for k, v in row.items() if k not in ("epoch", "step")}
        self._call(f"logging step {step}", lambda: mlflow.log_metrics(metrics, step=step))

    def finish(self, summary: dict, run_dir: Path) -> None:
        import mlflow

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


def _data_report(config: Config) -> list[Path]:
    """The data report files (JSON, Markdown) that the fetch of the config's dataset block saved
    beside its index; none where there are none (no raw copy here, or an older tympan's index)."""
    try:
        files = config.dataset.build_checked("dataset").report_files(config.dataset.root)
    except Exception as exc:  # noqa: BLE001 (the report is a copy for MLflow; training does not need it)
        log.debug("no data report to log: %s", exc)
        return []
    found = [file for file in files if file.is_file()]
    if not found:
        log.info("no data report in %s to log with the run (`tympan fetch` writes it)", files[0].parent)
    return found


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


class TensorBoardTracker(Tracker):
    """Scalars per row, the config as text and the final results, in <run dir>/tensorboard."""

    def __init__(self):
        self.writer = None

    def start(self, config: Config, run_dir: Path, resumed_at: int | None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError(
                "tracking.tensorboard needs the tensorboard package (pip install 'tympan[mlops]')"
            ) from exc
        # a resumed run drops what the killed one logged after its saved state
        purge = None if resumed_at is None else resumed_at + 1
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)
        if resumed_at is None:
            self.writer.add_text("config", "```yaml\n" + config.to_yaml() + "\n```")

    def log_row(self, step: int, row: dict) -> None:
        for key, value in row.items():
            if key not in ("epoch", "step"):
                self.writer.add_scalar(key.replace("_", "/", 1), float(value), step)
        self.writer.flush()

    def finish(self, summary: dict, run_dir: Path) -> None:
        for name, value in metric_values(summary).items():
            self.writer.add_scalar(f"final/{name}", value, 0)
        self.writer.close()


class Trackers(Tracker):
    """Every tracker the config switches on, called in turn."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def start(self, config: Config, run_dir: Path, resumed_at: int | None) -> None:
        for t in self.trackers:
            t.start(config, run_dir, resumed_at)

    def log_row(self, step: int, row: dict) -> None:
        for t in self.trackers:
            t.log_row(step, row)

    def finish(self, summary: dict, run_dir: Path) -> None:
        for t in self.trackers:
            t.finish(summary, run_dir)


def tracker(config: Config) -> Tracker:
    settings = config.tracking
    trackers: list[Tracker] = []
    if settings.mlflow:
        trackers.append(MlflowTracker(settings.mlflow_uri, settings.mlflow_experiment, settings.system_metrics))
    if settings.tensorboard:
        trackers.append(TensorBoardTracker())
    return Trackers(trackers)
