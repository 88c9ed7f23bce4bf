"""tympan.storage against a real S3-compatible server (moto, own process) on 127.0.0.1."""

import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import S3_BUCKET, free_port
from tympan import audio, bundle, storage
from tympan.cli import main
from tympan.storage import StorageError


def files_under(directory):
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def tree(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in files_under(directory)}


def test_local_paths_pass_through(tmp_path):
    assert not storage.is_remote(tmp_path) and storage.is_remote("s3://b/k")
    assert storage.localize(tmp_path) == tmp_path
    with pytest.raises(StorageError, match="no bucket"):
        storage.localize("s3:///key")


def test_file_round_trip(s3_server, tmp_path):
    source = tmp_path / "clip.bin"
    source.write_bytes(np.random.default_rng(0).bytes(3000))
    uri = storage.upload(source, f"s3://{S3_BUCKET}/files/")
    assert uri == f"s3://{S3_BUCKET}/files/clip.bin"
    local = storage.localize(uri, tmp_path / "cache")
    assert local.name == "clip.bin" and local.read_bytes() == source.read_bytes()
    # no temporary leftovers beside it, only the copy and its completion marker
    assert sorted(p.name for p in local.parent.iterdir()) == [".clip.bin.complete.json", "clip.bin"]


def test_directory_round_trip_and_default_cache(s3_server, tmp_path, monkeypatch):
    source = tmp_path / "dir"
    (source / "a/b").mkdir(parents=True)
    (source / "top.txt").write_text("top")
    (source / "a/b/deep.txt").write_text("deep")
    assert storage.upload(source, f"s3://{S3_BUCKET}/dirs/one") == f"s3://{S3_BUCKET}/dirs/one"
    monkeypatch.setenv("TYMPAN_CACHE", str(tmp_path / "envcache"))
    local = storage.localize(f"s3://{S3_BUCKET}/dirs/one/")
    assert local.is_relative_to(tmp_path / "envcache")
    assert tree(local) == tree(source)


def test_cache_is_reused_then_refreshed_when_the_remote_changes(s3_server, tmp_path):
    source = tmp_path / "dir"
    source.mkdir()
    (source / "x.txt").write_text("one")
    uri = storage.upload(source, f"s3://{S3_BUCKET}/refresh")
    cache = tmp_path / "cache"
    first = storage.localize(uri, cache)
    stamp = (first / "x.txt").stat().st_mtime_ns
    time.sleep(0.01)
    assert storage.localize(uri, cache) == first
    assert (first / "x.txt").stat().st_mtime_ns == stamp  # reused, not downloaded again

    (source / "x.txt").write_text("two, longer")
    (source / "y.txt").write_text("new")
    storage.upload(source, uri)
    second = storage.localize(uri, cache)
    assert tree(second) == {"x.txt": b"two, longer", "y.txt": b"new"}

    # a copy without its completion marker (an interrupted download) is never trusted
    next(second.parent.glob(".refresh.complete.json")).unlink()
    (second / "x.txt").write_text("half")
    assert tree(storage.localize(uri, cache)) == {"x.txt": b"two, longer", "y.txt": b"new"}


def test_endpoint_down_fails_fast_and_leaves_no_cache(s3_server, tmp_path, monkeypatch):
    down = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", down)
    cache = tmp_path / "cache"
    start = time.monotonic()
    with pytest.raises(StorageError, match=f"cannot reach S3 endpoint {down}.*is the server running") as err:
        storage.localize(f"s3://{S3_BUCKET}/files/clip.bin", cache)
    assert time.monotonic() - start < 10
    assert f"s3://{S3_BUCKET}/files/clip.bin" in str(err.value)
    assert files_under(cache) == []
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(StorageError, match="cannot reach S3 endpoint"):
        storage.upload(tmp_path / "f.txt", f"s3://{S3_BUCKET}/up/f.txt")


def test_endpoint_falls_back_to_mlflow_variable(s3_server, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    (tmp_path / "f.txt").write_text("via mlflow env")
    uri = storage.upload(tmp_path / "f.txt", f"s3://{S3_BUCKET}/mlflowenv/f.txt")
    assert storage.localize(uri, tmp_path / "cache").read_text() == "via mlflow env"


@pytest.mark.parametrize("variable", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"])
def test_wrong_credentials_name_access(s3_server, tmp_path, monkeypatch, variable):
    (tmp_path / "f.txt").write_text("secret")
    uri = storage.upload(tmp_path / "f.txt", f"s3://{S3_BUCKET}/creds/f.txt")
    monkeypatch.setenv(variable, "AKIAWRONGWRONGWRONG1")
    cache = tmp_path / "cache"
    with pytest.raises(StorageError, match="access denied.*AWS_ACCESS_KEY_ID"):
        storage.localize(uri, cache)
    assert files_under(cache) == []
    with pytest.raises(StorageError, match="access denied"):
        storage.upload(tmp_path / "f.txt", f"s3://{S3_BUCKET}/creds/g.txt")


def test_missing_key_bucket_and_file(s3_server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(StorageError, match=f"s3://{S3_BUCKET}/no/such/thing: no such key or prefix"):
        storage.localize(f"s3://{S3_BUCKET}/no/such/thing", cache)
    with pytest.raises(StorageError, match="no such bucket 'nobucket'"):
        storage.localize("s3://nobucket/x", cache)
    assert files_under(cache) == []
    with pytest.raises(StorageError, match="no such file or directory"):
        storage.upload(tmp_path / "absent", f"s3://{S3_BUCKET}/x")


def test_check_names_what_is_wrong(s3_server, monkeypatch, capsys):
    assert storage.main(["check", f"s3://{S3_BUCKET}/any/prefix"]) == 0
    assert storage.main(["check", "s3://nobucket/x"]) == 1
    assert "no such bucket 'nobucket'" in capsys.readouterr().err
    down = f"http://127.0.0.1:{free_port()}"
    assert storage.main(["check", f"s3://{S3_BUCKET}/x", down]) == 1
    assert f"cannot reach S3 endpoint {down}" in capsys.readouterr().err
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StorageError, match="access denied"):
        storage.check(f"s3://{S3_BUCKET}/x")


def _dev_clips(tiny_workspace, n=3):
    root, _ = tiny_workspace
    return [audio.load(f) for f in sorted((root / "data/raw/fsdd/recordings").glob("*_yweweler_*.wav"))[:n]]


def _same_predictions(a, b, clips):
    for samples, rate in clips:
        np.testing.assert_allclose(a.predict(samples, rate).scores, b.predict(samples, rate).scores)


def test_bundle_loads_from_s3(s3_server, tiny_run, tiny_workspace, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TYMPAN_CACHE", str(tmp_path / "cache"))
    run_dir, _ = tiny_run
    uri = storage.upload(run_dir / "bundle", f"s3://{S3_BUCKET}/bundles/tiny")
    remote = bundle.load(uri)
    assert remote.directory.is_relative_to(tmp_path / "cache")
    _same_predictions(bundle.load(run_dir / "bundle"), remote, _dev_clips(tiny_workspace))
    # the CLI reports a bad location in one line
    wav = str(next((tiny_workspace[0] / "data/raw/fsdd/recordings").glob("*.wav")))
    assert main(["inference", f"s3://{S3_BUCKET}/bundles/nothing", wav]) == 1
    assert f"tympan: error: s3://{S3_BUCKET}/bundles/nothing: no such key or prefix" in capsys.readouterr().err


def test_mlflow_registered_model_loads_like_kserve_sees_it(s3_server, tiny_run, tiny_workspace, tmp_path, monkeypatch):
    """A version registered with its artifacts on S3: its download URI (KServe's storageUri) loads
    directly, and so does the directory a storage initializer would download it to."""
    import mlflow

    from tympan import registry

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TYMPAN_CACHE", str(tmp_path / "cache"))
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    mlflow.set_tracking_uri(store)
    mlflow.create_experiment("tiny", artifact_location=f"s3://{S3_BUCKET}/mlflow")
    result = registry.register(tiny_run[0], "digits-s3", store)
    download_uri = mlflow.MlflowClient().get_model_version_download_uri("digits-s3", result["version"])
    assert download_uri.startswith(f"s3://{S3_BUCKET}/mlflow/")

    local = bundle.load(tiny_run[0] / "bundle")
    clips = _dev_clips(tiny_workspace, 2)
    _same_predictions(local, bundle.load(download_uri), clips)

    # KServe's storage initializer copies what is under the URI into /mnt/models
    mnt = tmp_path / "mnt/models"
    mnt.parent.mkdir()
    Path(mlflow.artifacts.download_artifacts(artifact_uri=download_uri, dst_path=str(tmp_path / "dl"))).rename(mnt)
    assert (mnt / "MLmodel").is_file() and not (mnt / "bundle.json").exists()
    _same_predictions(local, bundle.load(mnt), clips)
