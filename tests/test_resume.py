"""A run killed with SIGKILL mid-epoch resumes and ends with the numbers of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from tympan import config as configuration
from tympan import stages


@pytest.mark.parametrize(
    ("training", "rows_before_kill"),
    [
        ({"epochs": 4}, 2),  # saved at epoch ends; killed well into epoch 3
        ({"steps": 50, "eval_every": 20, "save_every": 7}, 1),  # saved mid-epoch (32 steps an epoch)
    ],
    ids=["epochs", "steps"],
)
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tiny_workspace, tmp_path, training, rows_before_kill):
    root, raw = tiny_workspace
    raw = {**raw, "training": {**raw["training"], **training}}
    config_file = tmp_path / "exp.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "tympan.cli", "train", str(config_file), "--run-dir", str(tmp_path / "killed")]

    process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed/metrics.csv"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 1 + rows_before_kill):
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.4)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed/summary.json").exists()
    saved = torch.load(tmp_path / "killed/last/training_state.pt", weights_only=True)
    if "steps" in training:
        assert saved["step"] % 32 != 0 and 0 < saved["step"] < 50  # a mid-epoch state

    resumed = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"after step {saved['step']}" in resumed.stderr

    config = configuration.parse(raw)
    reference, _ = stages.train(config, tmp_path / "uninterrupted")
    for name in ("metrics.csv", "summary.json"):
        assert (tmp_path / "killed" / name).read_text() == (reference / name).read_text(), name

    again = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert "has finished already" in again.stderr and "dev: accuracy" in again.stdout
