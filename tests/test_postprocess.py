"""Postprocessing a grid, finished or not, and run housekeeping."""

import shutil
import subprocess
import sys

from tympan import config as configuration
from tympan import postprocess, stages


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
