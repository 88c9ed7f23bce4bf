"""The `tympan` command: user mistakes give one clear line and a non-zero exit, never a traceback."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY

TYMPAN = [sys.executable, "-m", "tympan.cli"]
TWO_SPEAKERS = {"train_speakers": ["george"], "dev_speakers": ["yweweler"], "test_speakers": []}


def run(args, cwd, **env):
    result = subprocess.run(
        [*TYMPAN, *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **env}, timeout=300
    )
    return result


def assert_one_line_error(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("tympan: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def test_yaml_typo_is_one_line(tmp_path):
    config = write_config(tmp_path / "exp.yaml", {**TINY, "trainng": {"epochs": 1}})
    result = run(["config", str(config)], tmp_path)
    assert_one_line_error(result, "trainng: unknown key", "training")


def test_unknown_preset_is_one_line(tmp_path):
    config = write_config(tmp_path / "exp.yaml", {**TINY, "model": "Cnn99"})
    assert_one_line_error(run(["train", str(config)], tmp_path), "unknown model preset 'Cnn99'", "Cnn10")


def test_bad_override_is_one_line(tmp_path):
    config = write_config(tmp_path / "exp.yaml", TINY)
    assert_one_line_error(run(["config", str(config), "training.epochs=-1"], tmp_path), "training.epochs")


def test_train_before_preprocess_says_what_to_run(tmp_path):
    config = write_config(tmp_path / "exp.yaml", TINY)
    assert_one_line_error(run(["train", str(config)], tmp_path), "tympan preprocess")


@pytest.fixture
def small_dataset(fsdd_mirror, tmp_path):
    """A workspace whose FSDD copy holds one corrupt WAV and one empty file."""
    raw = {**TINY, "dataset": {**TINY["dataset"], "args": TWO_SPEAKERS}}
    config = write_config(tmp_path / "exp.yaml", raw)
    assert run(["fetch", str(config)], tmp_path, TYMPAN_DATA_MIRROR=str(fsdd_mirror)).returncode == 0
    recordings = tmp_path / "data/raw/fsdd/recordings"
    (recordings / "3_george_7.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    (recordings / "4_yweweler_1.wav").write_bytes(b"")
    return tmp_path, config, raw


def test_corrupt_audio_stops_preprocessing_naming_the_file(small_dataset):
    cwd, config, _ = small_dataset
    result = run(["preprocess", str(config)], cwd)
    assert_one_line_error(result, "3_george_7.wav")
    assert not any((cwd / "data/features").iterdir()), "no half-written feature store"


def test_unreadable_audio_can_be_skipped_and_reported(small_dataset):
    cwd, _, raw = small_dataset
    raw = {**raw, "dataset": {**raw["dataset"], "on_unreadable": "skip"}}
    config = write_config(cwd / "skip.yaml", raw)
    result = run(["preprocess", str(config)], cwd)
    assert result.returncode == 0, result.stderr
    store = next((cwd / "data/features").glob("fsdd-*"))
    report = (store / "skipped.csv").read_text()
    assert "3_george_7.wav" in report and "4_yweweler_1.wav" in report and "empty" in report
    train = (store / "train/index.csv").read_text()
    assert "3_george_7.wav" not in train and train.count("\n") == 500  # header + 499 clips


def test_fetch_preprocess_train_show(fsdd_mirror, tmp_path):
    raw = {**TINY, "dataset": {**TINY["dataset"], "args": TWO_SPEAKERS}}
    config = write_config(tmp_path / "exp.yaml", {**raw, "training": {**TINY["training"], "epochs": 1}})
    env = {"TYMPAN_DATA_MIRROR": str(fsdd_mirror)}
    for stage in ("fetch", "preprocess"):
        assert run([stage, str(config)], tmp_path, **env).returncode == 0
    result = run(["train", str(config), "seed=3", "--run-dir", "runs/one"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dev: accuracy" in result.stdout and "run: runs/one" in result.stdout
    assert "seed: 3" in (tmp_path / "runs/one/config.yaml").read_text()
    shown = run(["show", "runs/one"], tmp_path)
    assert shown.stdout.splitlines()[0] == result.stdout.splitlines()[0]
    shutil.rmtree(tmp_path / "runs/one/best")
    (tmp_path / "runs/one/summary.json").unlink()
    assert_one_line_error(run(["show", "runs/one"], tmp_path), "has not finished")
