"""Per-group metrics (`task.stratify`) and the tracking metric's choice (`task.tracking`), on real
FSDD trainings: a small speaker-identification workspace (FSDDSpeakers: of each of the five
speakers, one take of every digit in dev and one in test), so dev holds several speakers and each
digit every speaker."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.conftest import TINY, kill_once_last_exists
from tympan import config as configuration
from tympan import postprocess, results, stages
from tympan.config import run_id_of
from tympan.errors import ConfigError, DataError
from tympan.results import group_metric_name, metric_values, parse_tracking, read_summary
from tympan.store import store_dir
from tympan.tasks import Classification, MultiLabel, Regression
from tympan.tasks.groups import group_metrics
from tympan.training import Trainer

SPEAKERS = ["george", "jackson", "lucas", "nicolas", "yweweler"]


@pytest.fixture(scope="module")
def workspace(fsdd_mirror, tmp_path_factory):
    """(raw config, its store) of a speaker-identification experiment: 200 train clips, 50 dev, 50 test."""
    root = tmp_path_factory.mktemp("stratify")
    args = {"dev_takes": [0, 1], "test_takes": [1, 2], "train_takes": [2, 6]}
    raw = {
        **TINY,
        "dataset": {"preset": "FSDDSpeakers", "args": args, "root": str(root / "raw")},
        "features": {**TINY["features"], "root": str(root / "features")},
        "task": {"preset": "classification"},
        "augmentation": [],
        "training": {**TINY["training"], "epochs": 3, "batch_size": 8},  # batches of 8: it learns in 3 epochs
    }
    config = configuration.parse(raw)
    os.environ["TYMPAN_DATA_MIRROR"] = str(fsdd_mirror)
    stages.fetch(config)
    stages.preprocess(config)
    return raw, store_dir(config, "fsdd")


def _with_task(raw: dict, **task) -> dict:
    return {**raw, "task": {**raw["task"], **task}}


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def plain(workspace, tmp_path_factory):
    """A run without stratify or tracking: (run dir, summary)."""
    raw, _ = workspace
    return stages.train(configuration.parse(raw), tmp_path_factory.mktemp("plain") / "run")


@pytest.fixture(scope="module")
def stratified(workspace, tmp_path_factory):
    """The same run stratified by speaker and digit, tracked in MLflow (sqlite): (trainer, summary,
    dev results of its best state as the trainer evaluates them, MLflow URI)."""
    import mlflow

    raw, store = workspace
    folder, tracked = tmp_path_factory.mktemp("stratified"), tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tracked / 'mlflow.db'}"
    mlflow.MlflowClient(uri).create_experiment("stratify", artifact_location=str(tracked / "artifacts"))
    tracking = {"mlflow": True, "mlflow_uri": uri, "mlflow_experiment": "stratify"}
    config = configuration.parse({**_with_task(raw, stratify=["speaker", "label"]), "tracking": tracking})
    trainer = Trainer(config, store, folder / "run")
    summary = trainer.fit()
    return trainer, summary, trainer.evaluate("dev"), uri


def test_stratify_leaves_training_and_the_split_metrics_as_they_were(plain, stratified):
    run_dir, summary = plain
    trainer, stratified_summary, _, _ = stratified
    assert (trainer.run_dir / "metrics.csv").read_bytes() == (run_dir / "metrics.csv").read_bytes()
    for split in ("dev", "test"):
        own = {k: v for k, v in stratified_summary[split].items() if results.WORST not in k}
        assert own == summary[split]
    assert stratified_summary["run"]["best_epoch"] == summary["run"]["best_epoch"]
    assert "groups" not in summary and set(stratified_summary["groups"]) == {"dev", "test"}
    assert read_summary(trainer.run_dir / "summary.json") == stratified_summary


def test_evaluation_index_maps_each_output_to_its_index_row(stratified):
    trainer, _, dev, _ = stratified
    index = dev["index"]
    assert sorted(index.tolist()) == list(range(len(trainer.splits["dev"])))
    assert index.tolist() != sorted(index.tolist())  # evaluated by length, not in index order
    assert (dev["targets"] == trainer.targets["dev"][index]).all()


def test_group_metrics_equal_those_recomputed_by_hand_from_each_clip(stratified):
    trainer, summary, dev, _ = stratified
    rows = trainer.splits["dev"].rows
    predicted = np.empty(len(rows), dtype=np.int64)
    predicted[dev["index"]] = dev["scores"].argmax(axis=1)  # back in index order
    truth = np.array([trainer.task.labels.index(row["speaker"]) for row in rows])
    correct = predicted == truth
    for column, clips in (("speaker", 10), ("label", 5)):  # one take of each digit a speaker: 10, 5 speakers a digit
        found = summary["groups"]["dev"][column]
        values = np.array([row[column] for row in rows])
        assert sorted(found["metrics"]) == sorted(set(values.tolist()))
        for group, metrics in found["metrics"].items():
            assert found["clips"][group] == (values == group).sum() == clips
            assert metrics["accuracy"] == pytest.approx(correct[values == group].mean(), abs=1e-12)
        weighted = sum(found["clips"][g] * m["accuracy"] for g, m in found["metrics"].items()) / len(rows)
        assert weighted == pytest.approx(summary["dev"]["accuracy"], abs=1e-12)
        worst = min(found["metrics"], key=lambda g: found["metrics"][g]["accuracy"])  # first of ties, as sorted
        assert found["worst"]["accuracy"] == worst
        assert summary["dev"][f"accuracy.worst_{column}"] == found["metrics"][worst]["accuracy"]
    # a speaker's accuracy is the recall of its class: the confusion matrix's row, as training wrote it
    labels, counts = postprocess.read_confusion(trainer.run_dir, "dev")
    for speaker, metrics in summary["groups"]["dev"]["speaker"]["metrics"].items():
        row = counts[labels.index(speaker)]
        assert metrics["accuracy"] == pytest.approx(row[labels.index(speaker)] / row.sum())
    assert sorted(summary["groups"]["test"]["speaker"]["metrics"]) == SPEAKERS


def test_group_metrics_reach_mlflow_collect_and_the_report(stratified, tmp_path):
    import mlflow

    trainer, summary, _, uri = stratified
    values, groups = metric_values(summary), summary["groups"]
    assert values["dev.speaker.jackson.accuracy"] == groups["dev"]["speaker"]["metrics"]["jackson"]["accuracy"]
    assert values["test.label.7.uar"] == groups["test"]["label"]["metrics"]["7"]["uar"]
    run = mlflow.MlflowClient(uri).get_run((trainer.run_dir / "mlflow_run_id").read_text())
    logged = run.data.metrics
    assert logged["dev.speaker.jackson.accuracy"] == values["dev.speaker.jackson.accuracy"]
    assert logged["dev.accuracy.worst_speaker"] == summary["dev"]["accuracy.worst_speaker"]

    collected = stages.collect([trainer.run_dir], tmp_path / "collect")  # the Kubeflow collect step's metrics
    assert collected["metrics"] == values and collected["metric"] == "dev.accuracy"

    out = postprocess.report(trainer.run_dir.parent, output=tmp_path / "report")
    report = (out / "report.md").read_text()
    assert "### accuracy per speaker" in report and "### uar per label" in report
    jackson = summary["groups"]["dev"]["speaker"]["metrics"]["jackson"]["accuracy"]
    header, _, *lines = report.split("### accuracy per speaker\n")[1].strip().split("\n\n")[0].splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in [header, *lines]]
    assert cells[0] == ["runs", "split", *SPEAKERS, "worst speaker"]  # dev and test hold the same speakers here
    assert [c[:2] for c in cells[1:]] == [["all runs", "dev"], ["all runs", "test"]]
    assert cells[1][2 + SPEAKERS.index("jackson")] == f"{jackson:.4f} ± 0.0000"
    assert cells[2][-1] == f"{summary['test']['accuracy.worst_speaker']:.4f} ± 0.0000"
    plots = sorted(p.name for p in out.glob("groups_*.png"))
    tables = report.count("### ") - 1  # less the labels table
    assert len(plots) == tables == 2 * 4  # speaker and label, by the ranking metric and the task's headline
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 2 + tables  # + curves, confusion
    (run,) = _rows(out / "runs.csv")
    assert float(run["dev.speaker.jackson.accuracy"]) == jackson


def test_tracking_the_worst_group_picks_its_best_epoch_and_adds_only_its_column(workspace, plain, tmp_path):
    raw, _ = workspace
    config = configuration.parse(_with_task(raw, stratify=["label"], tracking="dev.accuracy.worst_label"))
    run_dir, summary = stages.train(config, tmp_path / "run")
    rows, before = _rows(run_dir / "metrics.csv"), _rows(plain[0] / "metrics.csv")
    assert [{k: v for k, v in r.items() if k != "dev_accuracy.worst_label"} for r in rows] == before
    assert list(rows[0])[-1] == "dev_accuracy.worst_label"
    tracked = [float(r["dev_accuracy.worst_label"]) for r in rows]
    assert summary["run"]["best_epoch"] == 1 + tracked.index(max(tracked))
    assert summary["task"]["tracking_metric"] == "accuracy.worst_label" and summary["task"]["direction"] == "max"
    assert summary["dev"]["accuracy.worst_label"] == pytest.approx(max(tracked))
    assert results.tracking(summary) == ("dev.accuracy.worst_label", "max")
    assert config.run_id() != configuration.parse(raw).run_id()


def test_sigkill_then_resume_with_a_tracked_worst_group_equals_uninterrupted(workspace, tmp_path):
    raw, _ = workspace
    raw = {**_with_task(raw, stratify=["label"], tracking="dev.accuracy.worst_label"), "training": {
        **raw["training"], "epochs": 4}}  # fmt: skip
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "tympan.cli", "train", "exp.yaml", "--run-dir", "killed"]
    kill_once_last_exists(command, tmp_path, tmp_path / "killed")  # after epoch 1, its row in metrics.csv
    assert not (tmp_path / "killed/summary.json").exists()
    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr
    reference, _ = stages.train(configuration.parse(raw), tmp_path / "uninterrupted")
    for name in ("metrics.csv", "summary.json"):
        assert (tmp_path / "killed" / name).read_text() == (reference / name).read_text(), name


def test_tracking_the_loss_picks_the_lowest(workspace, tmp_path):
    raw, _ = workspace
    config = configuration.parse(_with_task(raw, tracking="dev.loss"))
    run_dir, summary = stages.train(config, tmp_path / "run")
    losses = [float(r["dev_loss"]) for r in _rows(run_dir / "metrics.csv")]
    assert summary["run"]["best_epoch"] == 1 + losses.index(min(losses))
    assert summary["task"]["tracking_metric"] == "loss" and summary["task"]["direction"] == "min"
    assert summary["dev"]["loss"] == pytest.approx(min(losses), rel=1e-5) and "groups" not in summary


def test_tracking_direction_drives_the_plateau_scheduler(workspace, tmp_path):
    raw, store = workspace
    for tracking, mode in (("dev.loss", "min"), ("dev.uar", "max")):
        config = configuration.parse({**_with_task(raw, tracking=tracking), "scheduler": "Plateau"})
        trainer = Trainer(config, store, tmp_path / tracking)
        assert trainer.task.direction == mode and trainer.scheduler.mode == mode


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"tracking": "dev.acuracy"}, "task.tracking: 'dev.acuracy': Classification gives no metric 'acuracy'; "
         "choose dev.<metric> with <metric> one of: accuracy, uar, balanced_accuracy, macro_f1, weighted_f1, "
         "f1_<item>, loss"),
        ({"tracking": "dev.accuracy.worst_speaker"}, "task.tracking: 'dev.accuracy.worst_speaker' needs 'speaker' "
         "under task.stratify (stratified: none)"),
        ({"stratify": ["label"], "tracking": "dev.accuracy.worst_speaker"}, "needs 'speaker' under task.stratify "
         "(stratified: label)"),
        ({"stratify": ["speaker"], "tracking": "dev.loss.worst_speaker"}, "gives no per-group metric 'loss'; choose "
         "dev.<metric>.worst_speaker with <metric> one of: accuracy,"),
        ({"tracking": "test.accuracy"}, "task.tracking: must be dev.<metric> (e.g. dev.uar) or "
         "dev.<metric>.worst_<stratify column>"),
        ({"tracking": "accuracy"}, "task.tracking: must be dev.<metric>"),
        ({"stratify": ["speaker", "speaker"]}, "task.stratify: must be distinct, non-empty index column names"),
        ({"stratify": "speaker"}, "task.stratify: Input should be a valid list"),
    ],
)  # fmt: skip
def test_bad_choices_fail_at_config_load(task, message):
    raw = {"dataset": "FSDD", "task": {"preset": "classification", **task}}
    with pytest.raises(ConfigError, match="^config: ") as caught:
        configuration.parse(raw)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"stratify": ["speaker", "accent"]}, "task.stratify: the train split's index has no column 'accent' "
         "(its columns: path, split, label, speaker, duration, sample_rate, channels)"),
        ({"tracking": "dev.f1_nobody"}, "task.tracking: 'dev.f1_nobody': the classification task gives no metric "
         "'f1_nobody'; choose dev.<metric> with <metric> one of: accuracy, uar, balanced_accuracy, macro_f1, "
         "weighted_f1, f1_george, f1_jackson, f1_lucas, f1_nicolas, f1_yweweler, loss"),
    ],
)  # fmt: skip
def test_bad_choices_that_need_the_data_fail_before_training(workspace, tmp_path, task, message):
    raw, store = workspace
    with pytest.raises(ConfigError) as caught:
        Trainer(configuration.parse(_with_task(raw, **task)), store, tmp_path / "run")
    assert str(caught.value) == message and not (tmp_path / "run").exists()


def test_per_item_metrics_can_be_tracked(workspace, tmp_path):
    raw, store = workspace
    trainer = Trainer(configuration.parse(_with_task(raw, tracking="dev.f1_lucas")), store, tmp_path / "run")
    assert (trainer.task.tracking_metric, trainer.task.direction) == ("f1_lucas", "max")


def test_unset_keys_keep_run_ids():
    config = configuration.parse({"dataset": "FSDD"})
    dumped = config.model_dump(mode="json")
    assert dumped["task"]["stratify"] == [] and dumped["task"]["tracking"] is None
    before = {**dumped, "task": {k: v for k, v in dumped["task"].items() if k not in ("stratify", "tracking")}}
    assert run_id_of(before) == config.run_id()


def _fitted(cls, **args):
    rows = [{"label": str(i % 3), "a": str(i), "b": str(2 * i), "x": str(i % 2), "y": str(1 - i % 2)} for i in range(6)]
    return cls(**args).fit(rows)


def test_every_task_knows_its_metrics_and_their_directions():
    tasks = [
        (_fitted(Classification, targets=["label"]), np.eye(3)[[0, 1, 2, 0, 1, 2]], np.array([0, 1, 2, 0, 2, 1])),
        (_fitted(MultiLabel, targets=["x", "y"]), np.full((6, 2), 0.6), np.eye(2)[[0, 1, 0, 1, 0, 1]]),
        (_fitted(Regression, targets=["a", "b"]), np.ones((6, 2)), np.zeros((6, 2), dtype=np.float32)),
    ]
    for task, scores, targets in tasks:
        assert sorted(task.known_metrics()) == sorted([*task.metrics(scores, targets), "loss"])
        forms = type(task).metric_forms()
        assert all(m in forms or m.partition("_")[0] + "_<item>" in forms for m in task.known_metrics())
    classification, _, regression = (t for t, _, _ in tasks)
    assert [regression.metric_direction(m) for m in ("mae", "mse_b", "ccc", "pearson_a", "loss")] == [
        "min", "min", "max", "max", "min",
    ]  # fmt: skip
    assert regression.metric_direction("mae.worst_site") == "min"
    assert classification.metric_direction("f1_2") == classification.metric_direction("uar.worst_speaker") == "max"
    regression.track("ccc_a")
    assert (regression.tracking_metric, regression.direction) == ("ccc_a", "max")


class LowestWins(Classification):
    """A task of someone's own that tracks a lower-is-better metric and lists no others."""

    tracking_metric, direction, metric_names = "errors", "min", ()


def test_a_task_that_lists_no_metrics_keeps_its_own_direction():
    assert LowestWins.metric_forms() == ["errors", "f1_<item>", "loss"]
    task = _fitted(LowestWins, targets=["label"])
    task.track("loss")
    assert task.metric_direction("errors") == "min" and task.metric_direction("uar") == "max"
    assert task.known_metrics() == ["errors", "f1_0", "f1_1", "f1_2", "loss"]


def test_worst_group_follows_each_metrics_direction():
    task = _fitted(Regression, targets=["a"])
    targets = task.encode([{"a": str(v)} for v in (1, 2, 3, 4, 5, 6)])
    scores = np.array([[1.0], [2.0], [3.5], [4.5], [9.0], [1.0]])  # site p exact, q off by 0.5, r by 4 and 5
    found = group_metrics(task, scores, targets, ["p", "p", "q", "q", "r", "r"])
    assert found["clips"] == {"p": 2, "q": 2, "r": 2}
    assert [found["metrics"][g]["mae"] for g in "pqr"] == pytest.approx([0.0, 0.5, 4.5], abs=1e-6)  # float32 targets
    assert found["worst"]["mae"] == found["worst"]["mse"] == "r"  # the highest error
    assert found["worst"]["ccc"] == "r" and found["metrics"]["p"]["ccc"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="5 group values for 6 clips"):
        group_metrics(task, scores, targets, ["p"] * 5)


def test_tracking_names_and_flat_group_names():
    assert parse_tracking("dev.uar") == ("uar", None)
    assert parse_tracking("dev.mae_speed.worst_site") == ("mae_speed", "site")
    assert group_metric_name("dev", "device", "mic/2 (old)", "accuracy") == "dev.device.mic_2 _old_.accuracy"
    assert group_metric_name("test", "site", "", "mae") == "test.site._.mae"


def test_a_summary_with_a_malformed_groups_block_is_refused(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"dev": {"accuracy": 0.5}, "groups": {"dev": {"speaker": {"metrics": {"a": 1}}}}}))
    with pytest.raises(DataError, match="its 'groups' block must map"):
        read_summary(path)
