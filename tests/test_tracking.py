"""Training tracked in a real `mlflow server`, and training through a tracking outage."""

import logging

import pytest

from tests.conftest import free_port
from tympan import config as configuration
from tympan import stages


def tracked(raw, uri, epochs=2):
    tracking = {"mlflow": True, "mlflow_uri": uri, "mlflow_experiment": "tracked"}
    return configuration.parse({**raw, "tracking": tracking, "training": {**raw["training"], "epochs": epochs}})


def test_params_metrics_and_files_reach_the_server(mlflow_server, tiny_workspace, tmp_path):
    import mlflow

    _, raw = tiny_workspace
    config = tracked(raw, mlflow_server)
    run_dir, summary = stages.train(config, tmp_path / "run")
    client = mlflow.MlflowClient(mlflow_server)
    run = client.get_run((run_dir / "mlflow_run_id").read_text())
    assert run.info.status == "FINISHED" and run.data.tags["tympan.run_id"] == config.run_id()
    assert run.data.params["optimizer.args.lr"] == "0.003" and run.data.params["seed"] == "1"
    history = client.get_metric_history(run.info.run_id, "dev_accuracy")
    assert [m.step for m in history] == [1, 2]
    assert run.data.metrics["dev.accuracy"] == summary["dev"]["accuracy"]
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.csv", "summary.json", "plots", "bundle", "data"} <= files
    report_json, report_md = stages.dataset_of(config).report_files(config.dataset.root)  # what the fetch saved
    data = {f.path: f.file_size for f in client.list_artifacts(run.info.run_id, "data")}
    assert data == {
        f"data/{report_json.name}": report_json.stat().st_size,
        f"data/{report_md.name}": report_md.stat().st_size,
    }
    assert config.run_id() == configuration.parse(raw).run_id()  # tracking does not change the run id


def test_outage_costs_a_warning_not_the_run(tiny_workspace, tmp_path, caplog):
    _, raw = tiny_workspace
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="tympan"):
        run_dir, summary = stages.train(tracked(raw, dead, epochs=1), tmp_path / "run")
    assert (run_dir / "summary.json").is_file() and (run_dir / "bundle/bundle.json").is_file()
    warnings = [r.message for r in caplog.records if "MLflow tracking" in r.message]
    assert len(warnings) == 1 and "training continues" in warnings[0]


def test_tensorboard_holds_every_row_of_metrics_csv(tiny_workspace, tmp_path):
    import csv

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, raw = tiny_workspace
    training = {**raw["training"], "steps": 40, "eval_every": 15}
    config = configuration.parse({**raw, "training": training, "tracking": {"tensorboard": True}})
    run_dir, summary = stages.train(config, tmp_path / "run")
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [15, 30, 40]
    logged = events.Scalars("dev/accuracy")
    assert [e.step for e in logged] == [15, 30, 40]
    assert [round(e.value, 5) for e in logged] == [round(float(r["dev_accuracy"]), 5) for r in rows]
    assert events.Scalars("final/dev.accuracy")[0].value == pytest.approx(summary["dev"]["accuracy"])
    assert "config/text_summary" in events.Tags()["tensors"]
