"""A run killed with SIGKILL mid-epoch resumes and ends with the numbers of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import yaml

from tympan import config as configuration
from tympan import stages


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tiny_workspace, tmp_path):
    root, raw = tiny_workspace
    raw = {**raw, "training": {**raw["training"], "epochs": 4}}
    config_file = tmp_path / "exp.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "tympan.cli", "train", str(config_file), "--run-dir", str(tmp_path / "killed")]

    process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed/metrics.csv"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 3):  # header + 2 epochs
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.4)  # well into epoch 3
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed/summary.json").exists()

    resumed = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr

    config = configuration.parse(raw)
    reference, _ = stages.train(config, tmp_path / "uninterrupted")
    for name in ("metrics.csv", "summary.json"):
        assert (tmp_path / "killed" / name).read_text() == (reference / name).read_text(), name

    again = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert "has finished already" in again.stderr and "dev: accuracy" in again.stdout
