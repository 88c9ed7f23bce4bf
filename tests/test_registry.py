"""MLflow registry with a local sqlite store and a real `mlflow server` on 127.0.0.1."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import yaml

from tests.conftest import free_port
from tympan import audio, bundle, registry
from tympan.cli import main
from tympan.errors import ConfigError


@pytest.fixture
def sqlite_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts a sqlite store's artifacts under ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def with_dev(run_dir, copy, **figures):
    """The same run with other dev figures in its summary: another candidate for promotion."""
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("best", "last"))
    summary = json.loads((copy / "summary.json").read_text())
    summary["dev"].update(figures)
    (copy / "summary.json").write_text(json.dumps(summary))
    return copy


def better_copy(run_dir, tmp_path, accuracy):
    return with_dev(run_dir, tmp_path / f"run-{accuracy}", accuracy=accuracy)


def dev_clips(tiny_workspace, n=4):
    root, _ = tiny_workspace
    files = sorted((root / "data/raw/fsdd/recordings").glob("*_yweweler_2*.wav"))[:n]
    return [audio.load(f)[0] for f in files]


def test_register_promote_and_load_anywhere(sqlite_store, tiny_run, tiny_workspace, tmp_path, monkeypatch):
    import mlflow

    run_dir, summary = tiny_run
    first = registry.register(run_dir, "digits")
    assert first["version"] == "1" and first["metrics"]["dev.accuracy"] == summary["dev"]["accuracy"]
    promoted = registry.promote("digits")
    assert promoted["changed"] and promoted["version"] == "1" and promoted["previous"] is None
    again = registry.promote("digits")
    assert not again["changed"] and again["version"] == "1"

    registry.register(better_copy(run_dir, tmp_path, 0.99), "digits")
    registry.register(better_copy(run_dir, tmp_path, 0.01), "digits")
    moved = registry.promote("digits")
    assert moved["changed"] and (moved["previous"], moved["version"]) == ("1", "2")
    assert not moved["download_uri"].startswith("models:/") and "artifacts" in moved["download_uri"]
    forced = registry.promote("digits", version=3)
    assert forced["version"] == "3" and forced["changed"]
    with pytest.raises(registry.RegistryError, match="no version 9"):
        registry.promote("digits", version=9)
    with pytest.raises(registry.RegistryError, match="no registered model 'nope'"):
        registry.promote("nope")
    registry.promote("digits", version=2)

    # the champion loads as a bundle and as an MLflow pyfunc, on clips of different lengths
    clips = dev_clips(tiny_workspace)
    local = bundle.load(run_dir / "bundle")
    expected = [local.predict(c, 8000).outputs["label"] for c in clips]
    cache, scratch = tmp_path / "cache", tmp_path / "tmp"
    scratch.mkdir()
    with monkeypatch.context() as patch:
        patch.setenv("TYMPAN_CACHE", str(cache))
        patch.setattr(tempfile, "tempdir", str(scratch))
        for _ in range(2):
            assert [bundle.load("models:/digits@champion").predict(c, 8000).outputs["label"] for c in clips] == expected
        assert bundle.load("models:/digits/2").directory == bundle.load("models:/digits@champion").directory
    assert list(scratch.iterdir()) == [], "a models:/ load leaves nothing in the temp directory"
    [copy] = (cache / "mlflow").iterdir()  # one download of version 2, reused
    # the registered model is data: tympan's loader over the bundle, nothing pickled, no code
    flavor = yaml.safe_load((copy / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "tympan.mlflow_pyfunc" and flavor["data"] == "data/bundle"
    assert not flavor.get("code") and "python_model" not in flavor and not list(copy.rglob("*.pkl"))
    model = mlflow.pyfunc.load_model("models:/digits@champion")
    padded = np.full((len(clips), max(map(len, clips))), np.nan, np.float32)
    for row, clip in zip(padded, clips, strict=True):
        row[: len(clip)] = clip
    table = model.predict(padded, params={"sample_rate": 8000})
    assert list(table["label"]) == expected
    assert table.filter(like="prob_").sum(axis=1).round(5).eq(1).all()


def test_cli_register_and_promote(sqlite_store, tiny_run, tmp_path):
    def tympan(*args):
        return subprocess.run(
            [sys.executable, "-m", "tympan.cli", *args], capture_output=True, text=True, cwd=tmp_path, timeout=300
        )

    registered = tympan("register", str(tiny_run[0]), "--name", "kws")
    assert registered.returncode == 0, registered.stderr
    assert "registered kws version 1" in registered.stdout
    assert (registered.stdout + registered.stderr).count("registered kws version 1") == 1  # said once
    promoted = tympan("promote", "--name", "kws", "--print-uri")
    assert promoted.returncode == 0 and "kws@champion -> version 1" in promoted.stdout
    assert promoted.stdout.strip().splitlines()[-1].endswith("artifacts")
    stays = tympan("promote", "--name", "kws")
    assert "stays at version 1" in stays.stdout
    missing = tympan("promote", "--name", "kws", "--metric", "dev.recall")
    assert missing.returncode == 1 and "no version of kws has metric 'dev.recall'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_remote_tracking_server(mlflow_server, tiny_run, tiny_workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    result = registry.register(tiny_run[0], "remote-digits")
    assert result["version"] == "1"
    promoted = registry.promote("remote-digits")
    assert promoted["download_uri"].startswith("mlflow-artifacts:")
    clip = dev_clips(tiny_workspace, 1)[0]
    served = bundle.load("models:/remote-digits@champion").predict(clip, 8000)
    assert served.outputs["label"] == bundle.load(tiny_run[0] / "bundle").predict(clip, 8000).outputs["label"]
    local = set(os.listdir(tmp_path)) - {"server.db", "artifacts"}  # the server's own files
    assert local == set(), "nothing tracked locally"


def test_register_refuses_a_name_mlflow_refuses(sqlite_store, tiny_run, tmp_path, capsys):
    assert main(["register", str(tiny_run[0]), "--name", "a/b"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == (
        "tympan: error: invalid model name 'a/b': MLflow names cannot contain '/' or ':' or be '.' or '..'"
    )
    assert not (tmp_path / "mlruns.db").exists() and not (tmp_path / "mlruns").exists(), "nothing was logged"


def test_a_tracking_server_that_is_down_fails_fast(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    down = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", down)
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)  # MLflow's defaults: minutes of retries
    start = time.monotonic()
    assert main(["register", str(tiny_run[0]), "--name", "digits"]) == 1
    assert time.monotonic() - start < 20
    err = capsys.readouterr().err.strip().splitlines()
    reason = f"cannot reach the MLflow tracking server at {down} (registering {tiny_run[0]} as digits)"
    assert err == [f"tympan: error: {reason}: is it running?"]
    calls = {
        "promoting digits@champion": lambda: registry.promote("digits"),
        "downloading models:/digits@champion": lambda: bundle.load("models:/digits@champion"),
        "reading digits@champion": lambda: registry.alias_metric("digits"),
    }
    for what, call in calls.items():
        start = time.monotonic()
        with pytest.raises(registry.RegistryError) as error:
            call()
        assert time.monotonic() - start < 20
        assert str(error.value) == f"cannot reach the MLflow tracking server at {down} ({what}): is it running?"


def test_a_lower_is_better_metric_promotes_the_lowest(
    mlflow_server, toy_regression_run, tiny_run, tmp_path, monkeypatch, capsys
):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    run_dir, _ = toy_regression_run  # tracks dev.mae, lower is better
    for number, (mae, pearson) in {"1": (30.0, 0.9), "2": (10.0, 0.5), "3": (50.0, 0.7)}.items():
        candidate = with_dev(run_dir, tmp_path / f"candidate-{number}", mae=mae, pearson=pearson)
        assert registry.register(candidate, "tones")["version"] == number
    tags = mlflow.MlflowClient(mlflow_server).get_model_version("tones", "1").tags
    assert (tags["tympan.metric"], tags["tympan.direction"], tags["dev.mae"]) == ("dev.mae", "min", "30.0")

    promoted = registry.promote("tones")
    assert (promoted["version"], promoted["metric"], promoted["direction"]) == ("2", "dev.mae", "min")
    assert registry.alias_metric("tones") == 10.0
    # another metric is higher-is-better unless said otherwise; the tracked one keeps its task's direction
    assert registry.promote("tones", "dev.pearson")["version"] == "1"
    assert registry.promote("tones", "dev.pearson", direction="min")["version"] == "2"
    assert not registry.promote("tones", "dev.mae")["changed"]
    with pytest.raises(ConfigError, match="dev.mae is ranked min by the runs' task; direction max contradicts it"):
        registry.promote("tones", direction="max")
    other_task = r"tones@champion \(version 2\) has no metric 'dev.accuracy'; it is ranked on dev.mae \(lower is"
    with pytest.raises(ConfigError, match=other_task):
        registry.alias_metric("tones", "dev.accuracy")
    assert main(["promote", "--name", "tones", "--metric", "dev.mse", "--lower-is-better"]) == 0  # all equal: stays
    assert main(["promote", "--name", "tones", "--metric", "dev.pearson"]) == 0
    assert main(["promote", "--name", "tones"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3].startswith("tones@champion stays at version 2 (dev.mse ")
    assert out[-2:] == [
        "tones@champion -> version 1 (dev.pearson 0.9) (was 2)",
        "tones@champion -> version 2 (dev.mae 10.0) (was 1)",
    ]

    # a version of another task under the same name: no comparison without naming the metric
    assert registry.register(tiny_run[0], "tones")["version"] == "4"
    capsys.readouterr()  # MLflow's own log lines
    assert main(["promote", "--name", "tones"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "tympan: error: these runs track different metrics (dev.accuracy (higher is better); dev.mae (lower is "
        "better)): name the one to compare with --metric"
    ]
    assert registry.promote("tones", "dev.mae")["version"] == "2"


def test_versions_registered_before_tasks_rank_on_dev_accuracy(mlflow_server, tiny_run, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    client = mlflow.MlflowClient(mlflow_server)
    for number, accuracy in {"1": 0.8, "2": 0.2}.items():
        registry.register(with_dev(tiny_run[0], tmp_path / f"v{number}", accuracy=accuracy), "old")
        for tag in ("tympan.metric", "tympan.direction"):  # such versions have only their metrics as tags
            client.delete_model_version_tag("old", number, tag)
    assert "tympan.metric" not in client.get_model_version("old", "2").tags
    promoted = registry.promote("old")
    assert (promoted["version"], promoted["metric"], promoted["direction"]) == ("1", "dev.accuracy", "max")
    assert registry.alias_metric("old") == 0.8
