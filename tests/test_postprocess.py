"""Postprocessing a grid, finished or not, and run housekeeping."""

import csv
import json
import shutil
import subprocess
import sys

import matplotlib.image
import pytest
import yaml

from tympan import cli, postprocess, results, stages
from tympan import config as configuration
from tympan.errors import ConfigError, DataError


def make_grid(tiny_workspace, root, lrs=(0.003, 0.001), seeds=(1, 2)):
    _, raw = tiny_workspace
    runs = []
    for lr in lrs:
        for seed in seeds:
            optimizer = {**raw["optimizer"], "args": {"lr": lr}}
            config = configuration.parse(
                {**raw, "seed": seed, "optimizer": optimizer, "training": {**raw["training"], "epochs": 1}}
            )
            runs.append(stages.train(config, root / f"lr{lr}-seed{seed}"))
    return runs


def test_report_aggregates_over_seeds_and_skips_unfinished_runs(tiny_workspace, tmp_path):
    root = tmp_path / "runs"
    runs = make_grid(tiny_workspace, root)
    # an unfinished run: it got killed before writing its summary
    partial = root / "killed"
    shutil.copytree(runs[0][0], partial)
    (partial / "summary.json").unlink()
    (partial / "running.pid").write_text("999999999")
    config = yaml.safe_load((partial / "config.yaml").read_text())
    (partial / "config.yaml").write_text(yaml.safe_dump({**config, "seed": 3}, sort_keys=False))  # its own run

    out = postprocess.report(root)
    groups = (out / "groups.csv").read_text().splitlines()
    assert groups[0].startswith("optimizer.args.lr,runs,dev.accuracy mean,dev.accuracy std")
    by_lr = {line.split(",")[0]: line.split(",") for line in groups[1:]}
    assert set(by_lr) == {"0.003", "0.001"} and all(row[1] == "2" for row in by_lr.values())
    accuracies = [s["dev"]["accuracy"] for _, s in runs[:2]]
    assert float(by_lr["0.003"][2]) == sum(accuracies) / 2
    report = (out / "report.md").read_text()
    assert "5 runs, 4 finished" in report and "stopped" in report
    assert (out / "curves.png").stat().st_size > 0 and len((out / "best.csv").read_text().splitlines()) == 3

    # confusion matrices summed over the seeds of each learning rate, from what the runs wrote
    labels, first = postprocess.read_confusion(runs[0][0])
    _, second = postprocess.read_confusion(runs[1][0])
    assert first.sum() == second.sum() == 500 and (first != second).any()  # 500 dev clips each
    loaded = [postprocess.load_run(r) for r, _ in runs]
    confusions = postprocess.summed_confusions(loaded, ["optimizer.args.lr"], tmp_path)
    groups = [(c["group"], c["runs"]) for c in confusions]
    assert groups == [("optimizer.args.lr=0.003", 2), ("optimizer.args.lr=0.001", 2)]
    assert (confusions[0]["counts"] == first + second).all() and labels == [str(d) for d in range(10)]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # curves + one matrix per learning rate
    assert "<td>stopped</td>" in page and "Mean ± std over seed" in page
    assert sorted(p.name for p in out.glob("confusion_*.png")) == ["confusion_1.png", "confusion_2.png"]


def test_runs_and_clean_commands(tiny_workspace, tmp_path):
    root = tmp_path / "runs"
    (finished, _), *_ = make_grid(tiny_workspace, root, lrs=(0.003,), seeds=(1,))
    stopped = root / "stopped"
    shutil.copytree(finished, stopped)
    (stopped / "summary.json").unlink()

    def tympan(*args):
        return subprocess.run([sys.executable, "-m", "tympan.cli", *args], capture_output=True, text=True, timeout=120)

    listing = tympan("runs", str(root)).stdout
    assert f"finished  {finished}" in listing and f"stopped   {stopped}" in listing
    tympan("clean", str(root), "--stopped", "--states")
    assert not stopped.exists() and not (finished / "best").exists() and not (finished / "last").exists()
    assert (finished / "summary.json").is_file() and (finished / "bundle/model.safetensors").is_file()
    assert tympan("clean", str(root)).returncode == 1


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def copy_like_the_pipeline_and_mlflow(run_dir, root):
    """The copies of one training that a local pipeline run leaves below its root: the train task's
    output, the collect task's best run (states left out) and MLflow's artifacts of that run."""
    pipeline = root / "kfp/tympan-training-2026-01-01-00-00-00-000000"
    shutil.copytree(run_dir, pipeline / "for-loop-1-iteration-0/train/model")
    shutil.copytree(run_dir, pipeline / "collect/best", ignore=shutil.ignore_patterns("best", "last"))
    artifacts = root / "mlruns/1/0123456789abcdef0123456789abcdef/artifacts"
    artifacts.mkdir(parents=True)
    for name in ("config.yaml", "metrics.csv", "summary.json"):
        shutil.copy(run_dir / name, artifacts)
    shutil.copytree(run_dir / "bundle", artifacts / "bundle")
    return pipeline / "for-loop-1-iteration-0/train/model"


def test_mixed_runs_count_once_with_short_labels_and_a_readable_plot(tiny_workspace, tiny_run, tmp_path):
    """A default-like run beside a pipeline's run of another config (a dozen keys differ, the
    features' normalisation among them), with the copies the pipeline and MLflow make of it."""
    _, raw = tiny_workspace
    root = tmp_path / "runs"
    shutil.copytree(tiny_run[0], root / "default")
    other = {
        **raw,
        "seed": 7,
        "features": {**raw["features"], "online": []},  # no per-instance normalisation
        "model": {**raw["model"], "args": {"channels": [4, 8, 8]}},
        "optimizer": {**raw["optimizer"], "args": {"lr": 0.01, "weight_decay": 0.001}},
        "augmentation": [{"target": "tympan.augmentations:SpeedPerturb"}],
        "task": {"preset": "classification", "args": {"label_smoothing": 0.1}},
        "training": {**raw["training"], "epochs": 2, "batch_size": 16, "grad_clip": 1.0},
    }
    trained, summary = stages.train(configuration.parse(other), tmp_path / "pipeline-run")
    real = copy_like_the_pipeline_and_mlflow(trained, root / "pipeline")

    out = postprocess.report(root)
    runs = {r["id"]: r for r in read_csv(out / "runs.csv")}  # one row per training: copies count once
    assert set(runs) == {summary["run"]["id"], json.loads((tiny_run[0] / "summary.json").read_text())["run"]["id"]}
    assert runs[summary["run"]["id"]]["run"] == str(real)  # the pipeline's own run dir is the one read
    assert [g["runs"] for g in read_csv(out / "groups.csv")] == ["1", "1"]
    report = (out / "report.md").read_text()
    assert "2 runs, 2 finished" in report and "2 more directories are copies" in report
    assert "Warning: these runs differ in their data or features (features.online)" in report
    # labels are the run ids; the labels table beside the plot maps them to directories and configs
    assert all(f"| {i} | {i} | " in report for i in runs)
    assert f"| {summary['run']['id']} | {summary['run']['id']} | {real} | " in report
    assert "optimizer.args.lr=0.01; optimizer.args.weight_decay=0.001" in report
    rows = [line for line in report.split("## Training curves")[0].splitlines() if line.startswith("|")]
    assert max(map(len, rows)) < 200  # the tables above the plot carry labels, not configs
    # the legend stays inside a figure of fixed width: the tight bounding box would grow with it
    height, width, _ = matplotlib.image.imread(out / "curves.png").shape
    assert width <= 1100 and height <= 600

    # --by: the groups are labelled by that key's values; a key no run has is an error naming it
    out = postprocess.report(root, ["optimizer.args.lr"], output=tmp_path / "by-lr")
    groups = (out / "report.md").read_text()
    assert "| optimizer.args.lr=0.003 | 1 |" in groups and "| optimizer.args.lr=0.01 | 1 |" in groups
    with pytest.raises(ConfigError, match="--by optimizer.lr: no run has this config key"):
        postprocess.report(root, ["optimizer.lr"], output=tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


# ---- ranking on the task's tracking metric, in its direction ---------------------------------


def test_a_summary_gives_its_metrics_and_what_it_is_ranked_on():
    regression = {
        "task": {"name": "regression", "tracking_metric": "mae", "direction": "min"},
        "run": {"id": "abc", "best_epoch": 2},
        "dev": {"mae": 2.5, "ccc": 0.1},
        "test": {"mae": 3.0},
    }
    assert results.metric_values(regression) == {"dev.mae": 2.5, "dev.ccc": 0.1, "test.mae": 3.0}
    assert results.tracking(regression) == ("dev.mae", "min")
    before_tasks = {"run": {"id": "def"}, "dev": {"accuracy": 0.9}, "test": {}}  # summaries of older runs
    assert results.metric_values(before_tasks) == {"dev.accuracy": 0.9}
    assert results.tracking(before_tasks) == ("dev.accuracy", "max")
    with pytest.raises(DataError, match=r"runs/x/summary.json: the task block needs .* direction \(max or min\)"):
        results.tracking({"task": {"tracking_metric": "mae", "direction": "down"}}, "runs/x/summary.json")

    scored = [("a", 3.0), ("b", 1.0), ("c", 1.0), ("d", 3.0)]
    assert results.best(scored, "min") == ("b", 1.0) and results.best(scored, "max") == ("a", 3.0)  # ties: first
    assert results.better(1.0, None, "min") and not results.better(1.0, 1.0, "min") and results.better(2.0, 1.0, "max")

    mae, accuracy = ("dev.mae", "min"), ("dev.accuracy", "max")
    assert results.ranking([mae, mae]) == mae and results.ranking([]) == accuracy
    assert results.ranking([mae], "dev.mae") == mae  # the tracked metric keeps its task's direction
    assert results.ranking([mae], "dev.pearson") == ("dev.pearson", "max")  # any other: higher is better...
    assert results.ranking([mae], "dev.mse", "min") == ("dev.mse", "min")  # ...unless said otherwise
    both = r"track different metrics \(dev.accuracy \(higher is better\); dev.mae \(lower is better\)\)"
    with pytest.raises(ConfigError, match=both):
        results.ranking([accuracy, mae])
    with pytest.raises(ConfigError, match="dev.mae is ranked min by the runs' task; direction max contradicts it"):
        results.ranking([mae], None, "max")
    with pytest.raises(ConfigError, match="direction must be max or min, got 'lowest'"):
        results.ranking([mae], None, "lowest")


def retrain(workspace, root, seed):
    """Another tiny regression run of the workspace's config, one epoch, with its own seed."""
    _, raw = workspace
    config = configuration.parse({**raw, "seed": seed, "training": {**raw["training"], "epochs": 1}})
    return stages.train(config, root / f"seed{seed}")


def test_report_ranks_a_lower_is_better_metric_lowest(toy_regression_workspace, toy_regression_run, tmp_path, capsys):
    root = tmp_path / "runs"
    shutil.copytree(toy_regression_run[0], root / "seed1")
    summaries = [toy_regression_run[1], retrain(toy_regression_workspace, root, 2)[1]]
    summaries.append(retrain(toy_regression_workspace, root, 3)[1])
    maes = {s["run"]["id"]: s["dev"]["mae"] for s in summaries}
    assert len(set(maes.values())) == 3

    out = postprocess.report(root, [])  # one group: the best of all three
    [best] = read_csv(out / "best.csv")
    assert best["id"] == min(maes, key=maes.get) and float(best["dev.mae"]) == min(maes.values())
    report = (out / "report.md").read_text()
    assert "Best runs are ranked on dev.mae (lower is better);" in report
    assert "## Best run per group, on dev.mae (lower is better)" in report

    # another metric: higher is better unless --lower-is-better says otherwise
    mses = {s["run"]["id"]: s["dev"]["mse"] for s in summaries}
    [best] = read_csv(postprocess.report(root, [], "dev.pearson", tmp_path / "pearson") / "best.csv")
    assert best["id"] == max(summaries, key=lambda s: s["dev"]["pearson"])["run"]["id"]
    assert cli.main(["postprocess", str(root), "--by", "seed", "--metric", "dev.mse", "--lower-is-better"]) == 0
    assert "Best run per group, on dev.mse (lower is better)" in capsys.readouterr().out
    assert len(read_csv(root / "report/best.csv")) == 3  # one run per seed
    assert cli.main(["postprocess", str(root), "--by", "", "--metric", "dev.mse", "--lower-is-better"]) == 0
    assert read_csv(root / "report/best.csv")[0]["id"] == min(mses, key=mses.get)
    with pytest.raises(ConfigError, match="--metric dev.mea: no run has it; they have dev.ccc, "):
        postprocess.report(root, [], "dev.mea", tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_runs_of_other_tracking_metrics_need_a_metric_and_old_summaries_rank_on_accuracy(
    toy_regression_run, tiny_run, tmp_path, capsys
):
    before_tasks = tmp_path / "old/classification"
    shutil.copytree(tiny_run[0], before_tasks, ignore=shutil.ignore_patterns("best", "last"))
    summary = json.loads((before_tasks / "summary.json").read_text())
    del summary["task"]  # what a run trained before tasks wrote
    (before_tasks / "summary.json").write_text(json.dumps(summary))
    out = postprocess.report(tmp_path / "old")
    assert "ranked on dev.accuracy (higher is better)" in (out / "report.md").read_text()
    assert float(read_csv(out / "best.csv")[0]["dev.accuracy"]) == summary["dev"]["accuracy"]

    shutil.copytree(toy_regression_run[0], tmp_path / "old/regression", ignore=shutil.ignore_patterns("best", "last"))
    assert cli.main(["postprocess", str(tmp_path / "old"), "--output", str(tmp_path / "mixed")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "these runs track different metrics" in err[0]
    assert "dev.accuracy (higher is better)" in err[0] and "dev.mae (lower is better)" in err[0]
    assert not (tmp_path / "mixed").exists()
    # naming the metric compares them on it: only the runs that have it are ranked
    out = postprocess.report(tmp_path / "old", [], "dev.accuracy", tmp_path / "on-accuracy")
    assert [r["id"] for r in read_csv(out / "best.csv")] == [summary["run"]["id"]]


def corrupt_copies(run_dir, root):
    """A good copy of a finished run beside copies with a corrupt file each: {name: the file}."""
    broken = {
        "cut-summary": ("summary.json", lambda text: text[: len(text) // 2]),
        "list-summary": ("summary.json", lambda text: "[1, 2]\n"),
        "word-metric": ("summary.json", lambda text: json.dumps({**json.loads(text), "dev": {"accuracy": "high"}})),
        "bad-config": ("config.yaml", lambda text: "seed: [1\n"),
        "scalar-config": ("config.yaml", lambda text: "42\n"),
        "bad-metrics": ("metrics.csv", lambda text: text.replace("\n", "\nzero,", 1)),
    }
    ignore = shutil.ignore_patterns("best", "last")
    shutil.copytree(run_dir, root / "good", ignore=ignore)
    files = {}
    for name, (file, damage) in broken.items():
        shutil.copytree(run_dir, root / name, ignore=ignore)
        path = root / name / file
        path.write_text(damage(path.read_text()))
        files[name] = path
    return files


@pytest.mark.parametrize("command", ["show", "runs", "postprocess"])
def test_a_corrupt_run_is_skipped_with_a_warning_naming_its_file(tiny_run, tmp_path, command):
    root = tmp_path / "runs"
    files = corrupt_copies(tiny_run[0], root)
    result = subprocess.run(
        [sys.executable, "-m", "tympan.cli", command, str(root)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("skipped a run: ")]
    read = {n: f for n, f in files.items() if command != "show" or f.name == "summary.json"}  # show reads summaries
    assert len(warnings) == len(read), result.stderr
    for path in read.values():
        assert sum(w.startswith(f"skipped a run: {path}: not a") for w in warnings) == 1, warnings
    assert str(root / "good") in (result.stdout if command != "postprocess" else (root / "report/runs.csv").read_text())
    if command == "show":  # the runs whose summary is fine are shown, whatever their other files
        assert result.stdout.count("run: ") == 1 + len(files) - len(read)


def test_show_of_one_corrupt_run_is_one_line_naming_the_file(tiny_run, tmp_path, capsys):
    files = corrupt_copies(tiny_run[0], tmp_path)
    assert cli.main(["show", str(tmp_path / "cut-summary")]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"tympan: error: {files['cut-summary']}: not a readable summary")
