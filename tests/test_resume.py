"""A run killed with SIGKILL mid-epoch resumes and ends with the numbers of an uninterrupted run."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from tests.conftest import kill_once_last_exists
from tympan import config as configuration
from tympan import postprocess, stages
from tympan.cli import main


@pytest.mark.parametrize(
    ("training", "rows_before_kill"),
    [
        ({"epochs": 4}, 2),  # saved at epoch ends; killed well into epoch 3
        ({"steps": 50, "eval_every": 20, "save_every": 7}, 1),  # saved mid-epoch (32 steps an epoch)
        ({"epochs": 3, "channels_last": True}, 1),  # NHWC weights and optimizer state saved and restored
    ],
    ids=["epochs", "steps", "channels-last"],
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


# save_every < eval_every: last/ states are written before metrics.csv has its first row
STATES_BEFORE_ROWS = {"steps": 10, "eval_every": 10, "save_every": 2}


@pytest.fixture(scope="module")
def uninterrupted(tiny_workspace, tmp_path_factory):
    _, raw = tiny_workspace
    config = configuration.parse({**raw, "training": {**raw["training"], **STATES_BEFORE_ROWS}})
    run_dir, _ = stages.train(config, tmp_path_factory.mktemp("reference") / "run")
    return run_dir


def _leave_swap_half_done(run_dir, both):
    """The disk as a kill inside `Checkpoints.save`'s swap leaves it (simulated, not raced): the
    complete state renamed to `.last.old` and the next one written in `.last.tmp` (here cut short),
    with no `last/`; or (`both`) the new `last/` already in place and `.last.old` half deleted."""
    if both:
        (run_dir / ".last.old").mkdir()
        shutil.copyfile(run_dir / "last/model.safetensors", run_dir / ".last.old/model.safetensors")
    else:
        (run_dir / "last").rename(run_dir / ".last.old")
        (run_dir / ".last.tmp").mkdir()
        data = (run_dir / ".last.old/model.safetensors").read_bytes()
        (run_dir / ".last.tmp/model.safetensors").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", ["no-metrics-yet", "swap-old-only", "swap-both"])
def test_sigkill_before_the_first_row_or_inside_the_swap_resumes(tiny_workspace, uninterrupted, tmp_path, damage):
    """A SIGKILL after the first last/ save and before the first metrics.csv row; then, for the
    swap cases, the state a kill between `Checkpoints.save`'s renames leaves. Every later save must
    work, and the resumed run must end with the numbers of the uninterrupted one."""
    root, raw = tiny_workspace
    raw = {**raw, "training": {**raw["training"], **STATES_BEFORE_ROWS}}
    config_file = tmp_path / "exp.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "tympan.cli", "train", str(config_file), "--run-dir", str(run_dir)]

    kill_once_last_exists(command, root, run_dir)
    assert not (run_dir / "metrics.csv").exists(), "killed too late: the first row was already written"
    saved = torch.load(run_dir / "last/training_state.pt", weights_only=True)
    if damage != "no-metrics-yet":
        _leave_swap_half_done(run_dir, both=damage == "swap-both")
    (run_dir / ".metrics.csv.0123456789ab.tmp").write_text("epoch,st")  # a write the kill cut short

    resumed = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"after step {saved['step']}" in resumed.stderr
    for name in ("metrics.csv", "summary.json"):
        assert (run_dir / name).read_text() == (uninterrupted / name).read_text(), name
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []
    assert torch.load(run_dir / "last/training_state.pt", weights_only=True)["step"] == STATES_BEFORE_ROWS["steps"]


def test_a_second_training_of_the_run_is_refused_naming_the_first_and_a_kill_frees_it(tiny_workspace, tmp_path, capsys):
    """Two identical trainings into one run directory: the second fails at once, with one line naming
    the pid of the first (held there by SIGSTOP, so nothing is raced); once the first is SIGKILLed
    the OS has released its lock, and the run resumes from its last state and finishes."""
    root, raw = tiny_workspace
    raw = {**raw, "training": {**raw["training"], "steps": 12, "eval_every": 12, "save_every": 2}}
    config_file, run_dir = tmp_path / "exp.yaml", tmp_path / "run"
    config_file.write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "tympan.cli", "train", str(config_file), "--run-dir", str(run_dir)]
    first = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (run_dir / "last").is_dir():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        assert (run_dir / "running.pid").read_text() == str(first.pid)
        assert main(["train", str(config_file), "--run-dir", str(run_dir)]) == 1
        errors = capsys.readouterr().err.splitlines()
        assert errors == [
            f"tympan: error: {run_dir}: another training (pid {first.pid}) is running in this run directory; "
            "wait for it to end, or use another --run-dir"
        ]
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert (run_dir / "running.pid").is_file() and postprocess.status(run_dir) == "stopped"  # left by the kill

    resumed = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and (run_dir / "summary.json").is_file()
    assert not (run_dir / "running.pid").exists()
