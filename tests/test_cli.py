"""The `tympan` command: user mistakes give one clear line and a non-zero exit, never a traceback."""

import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import TINY
from tympan.cli import Commands, main

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


def test_train_before_fetch_or_preprocess_says_what_to_run(fsdd_mirror, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(fsdd_mirror))
    config = write_config(tmp_path / "exp.yaml", {**TINY, "dataset": {**TINY["dataset"], "args": TWO_SPEAKERS}})
    # training reads the store alone: without one it says how one is made
    assert_one_line_error(tympan_here(capsys, "train", str(config)), "no feature store", "tympan fetch")
    assert_one_line_error(tympan_here(capsys, "preprocess", str(config)), "fetch the dataset first")
    assert tympan_here(capsys, "fetch", str(config)).returncode == 0
    assert_one_line_error(tympan_here(capsys, "train", str(config)), "tympan preprocess")


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


def test_fetch_preprocess_train_show(fsdd_mirror, tmp_path, monkeypatch, capsys):
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
    monkeypatch.chdir(tmp_path)
    assert tympan_here(capsys, "show", "runs").stdout == shown.stdout  # a folder of runs: each finished one
    shutil.rmtree(tmp_path / "runs/one/best")
    (tmp_path / "runs/one/summary.json").unlink()
    assert_one_line_error(run(["show", "runs/one"], tmp_path), "has not finished")
    assert_one_line_error(tympan_here(capsys, "show", "runs"), "runs: no finished run")


def tympan_here(capsys, *args):
    """The CLI in this process (no interpreter start-up): returncode, stdout and stderr as `run` gives them;
    an exception that escapes main() fails the test, as a traceback would."""
    returncode = main(list(args))
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=returncode, stdout=captured.out, stderr=captured.err)


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("training.epochs=[1", ["override 'training.epochs=[1'", "not valid YAML"]),
        ("training.epochs=true", ["training.epochs", "valid integer", "True"]),
        ("optimizer.args.lr=-1", ["optimizer.args", "Invalid learning rate: -1"]),
        ("model.args.channels=abc", ["model.args", "channels", "'abc'"]),
        ("model.args.channels=[]", ["model.args", "channels", "[]"]),
        ("features.sample_rate=-16000", ["features.sample_rate", "greater than 0", "-16000"]),
    ],
)
def test_bad_values_fail_at_load_in_one_line(override, needles, tmp_path, monkeypatch, capsys):
    """`train` in an empty folder: a config that passed load would fail later, asking for the data."""
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "exp.yaml", TINY)
    result = tympan_here(capsys, "train", str(config), override)
    assert_one_line_error(result, *needles)
    assert "fetch" not in result.stderr and "preprocess" not in result.stderr


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("import tympan_no_such_module\n", "ModuleNotFoundError: No module named 'tympan_no_such_module'"),
        ("def broken(:\n", "SyntaxError"),
        ("raise RuntimeError('boom')\n", "RuntimeError: boom"),
    ],
)
def test_user_target_file_that_fails_to_import_is_one_line(source, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_model.py").write_text(source)
    config = write_config(tmp_path / "exp.yaml", {**TINY, "model": {"target": "./my_model.py:Net"}})
    assert_one_line_error(tympan_here(capsys, "config", str(config)), "model.target", "my_model.py", needle)


def test_grid_whose_exclude_removes_everything_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = {"seed": [1, 2], "exclude": [{"seed": 1}, {"seed": 2}]}
    config = write_config(tmp_path / "grid.yaml", {**TINY, "grid": grid})
    result = tympan_here(capsys, "train", str(config), "--grid")
    assert_one_line_error(result, "grid.yaml", "grid.exclude removes all 2 combinations")
    assert not (tmp_path / "runs").exists()


def test_help_lists_every_command(tmp_path, capsys):
    commands = [name for name in dir(Commands) if not name.startswith("_")]
    result = run(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    shown = result.stdout + result.stderr  # fire writes --help to stderr
    listed = {line.strip() for line in shown.splitlines() if line.startswith("     ")}
    assert set(commands) <= listed, shown
    assert "Train one model into runs/<experiment>/<run id>/" in shown
    alone = tympan_here(capsys)  # `tympan` with no command lists them too
    assert alone.returncode == 0 and all(f"     {name}\n" in alone.stdout for name in commands)


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["train", "exp.yaml", "-h"], ["pipeline", "-h"]])
def test_help_is_only_help(tmp_path, monkeypatch, capsys, args):
    """No "INFO: Showing help with the command 'tympan -- --help'" line before it, nothing run."""
    monkeypatch.chdir(tmp_path)
    result = tympan_here(capsys, *args)
    shown = result.stdout + result.stderr
    assert result.returncode == 0 and shown.startswith("NAME\n") and "INFO" not in shown, shown
    assert list(tmp_path.iterdir()) == []


def test_train_help_shows_the_config_as_its_first_positional_argument(capsys):
    """As the README passes it (`tympan train params.yaml`), not as the flag -c/--config only."""
    shown = tympan_here(capsys, "train", "--help").stderr
    assert "tympan train CONFIG <flags> [OVERRIDES]..." in shown
    positional = shown.split("POSITIONAL ARGUMENTS")[1].split("FLAGS")[0]
    assert "CONFIG" in positional and "(default: params.yaml)" in positional and "OVERRIDES" in positional
    assert "--config" not in shown and "--run_dir" in shown
    # the config is still optional and still a flag too
    assert inspect.signature(Commands.train).parameters["config"].default == "params.yaml"


def test_a_switch_does_not_swallow_the_override_after_it(tmp_path, monkeypatch, capsys):
    """fire reads `--grid training.epochs=true` as grid='training.epochs=true' unless told it is a switch."""
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "grid.yaml", {**TINY, "grid": {"seed": [1, 2]}})
    assert_one_line_error(
        tympan_here(capsys, "train", str(config), "--grid", "training.epochs=true"), "training.epochs"
    )
    assert_one_line_error(
        tympan_here(capsys, "train", str(config), "--grid", "--run-dir", "x"), "--run-dir names one run"
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--window", "0"], "--window must be a positive number of seconds, got 0"),
        (["--window", "-0.5"], "--window must be a positive number of seconds, got -0.5"),
        (["--window", "nan"], "--window must be a positive number of seconds, got 'nan'"),
        (["--window", "0.4", "--hop", "0"], "--hop must be a positive number of seconds, got 0"),
        (["--hop", "0.2"], "--hop sets the step between sliding windows: it needs --window"),
    ],
)
def test_inference_window_and_hop_are_argument_errors(tiny_run, fsdd_mirror, tmp_path, capsys, args, needle):
    """Checked before the bundle or any file is read: one argument error, not a failure of every file."""
    run_dir, _ = tiny_run
    clip = str(fsdd_mirror / "fsdd/recordings/7_yweweler_0.wav")
    for model in (run_dir / "bundle", tmp_path / "no-such-bundle"):
        result = tympan_here(capsys, "inference", str(model), clip, *args)
        assert result.returncode == 1 and not result.stdout
        assert_one_line_error(result, needle)
        assert "failed and were skipped" not in result.stderr


def test_output_cut_short_by_a_pipe_is_no_error(tmp_path):
    """`tympan config ... | head -1`: the reader closing the pipe ends the command quietly."""
    config = write_config(tmp_path / "exp.yaml", TINY)
    tympan = Path(sys.executable).parent / "tympan"
    result = subprocess.run(
        f"'{tympan}' config '{config}' | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.startswith("experiment: tiny") and not result.stderr
