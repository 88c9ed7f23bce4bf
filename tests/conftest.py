"""Shared fixtures: the real FSDD copy that stands in for downloads."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _data_mirror() -> Path:
    # Dev checkouts and CI both keep `shared/` beside the repository folder.
    env = os.environ.get("TYMPAN_DATA_MIRROR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def fsdd_mirror() -> Path:
    """The data mirror dir (holding `fsdd/recordings/*.wav`); skips when it is absent."""
    mirror = _data_mirror()
    if not (mirror / "fsdd" / "recordings").is_dir():
        pytest.skip(f"no FSDD copy at {mirror}/fsdd/recordings; set TYMPAN_DATA_MIRROR to shared/data")
    return mirror


TINY = {
    "experiment": "tiny",
    "seed": 1,
    "scheduler": None,
    "dataset": {
        "preset": "FSDD",
        "args": {"train_speakers": ["george", "jackson"], "dev_speakers": ["yweweler"], "test_speakers": ["lucas"]},
    },
    "features": {"preset": "PannLogMel16k", "normalize": "utterance"},
    "model": {"preset": "SmallCNN", "args": {"channels": [8, 16, 16]}},
    "optimizer": {"preset": "AdamW", "args": {"lr": 0.003}},
    "augmentation": [{"target": "tympan.augmentations:SpeedPerturb"}, {"target": "tympan.augmentations:SpecAugment"}],
    "training": {"epochs": 2, "batch_size": 32, "progress": False},
}


@pytest.fixture(scope="session")
def tiny_run(tiny_workspace, tmp_path_factory):
    """A finished tiny run (3 epochs) with its bundle: `(run_dir, summary)`."""
    from tympan import config as configuration
    from tympan import stages

    _, raw = tiny_workspace
    config = configuration.parse({**raw, "training": {**raw["training"], "epochs": 3}})
    return stages.train(config, tmp_path_factory.mktemp("runs") / "tiny")


@pytest.fixture(scope="session")
def tiny_workspace(fsdd_mirror, tmp_path_factory):
    """A directory holding a tiny experiment's raw data and features (three FSDD speakers + dev)."""
    from tympan import config as configuration
    from tympan import stages

    root = tmp_path_factory.mktemp("workspace")
    raw = {**TINY, "dataset": {**TINY["dataset"], "root": str(root / "data/raw")}}
    raw["features"] = {**TINY["features"], "root": str(root / "data/features")}
    config = configuration.parse(raw)
    os.environ["TYMPAN_DATA_MIRROR"] = str(fsdd_mirror)
    stages.fetch(config)
    stages.preprocess(config)
    return root, raw


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 (sqlite backend, local artifact store); yields its URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1",
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
