"""Shared fixtures: the real FSDD copy that stands in for downloads."""

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

# No Hugging Face hub here: without these, a hub lookup retries for about a minute before it fails.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Under pytest-xdist (`make test`: one worker a core) each worker, and every process it starts,
# computes on one thread: two threads each on shared cores spin against each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


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
    "features": {
        "preset": "PannLogMel16k",
        "online": [{"target": "tympan.transforms.normalize:Normalize", "args": {"mode": "instance"}}],
    },
    "task": "classification",  # explicit, as dvc.yaml's train stage reads it from params.yaml
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


TOY_REGRESSION = {
    "experiment": "toy-regression",
    "seed": 1,
    "scheduler": None,
    "dataset": {"preset": "ToyRegression"},
    "features": {
        "preset": "PannLogMel16k",
        "online": [{"target": "tympan.transforms.normalize:Normalize", "args": {"mode": "instance"}}],
    },
    "task": {"preset": "regression"},  # tracks dev.mae, lower is better
    "model": {"preset": "SmallCNN", "args": {"channels": [4, 8, 8]}},
    "optimizer": {"preset": "AdamW", "args": {"lr": 0.003}},
    "training": {"epochs": 2, "batch_size": 16, "progress": False},
}


@pytest.fixture(scope="session")
def toy_regression_workspace(tmp_path_factory):
    """Raw data and features of a tiny regression experiment (generated tones, no mirror needed):
    `(root, raw config)`; its runs track dev.mae, lower is better."""
    from tympan import config as configuration
    from tympan import stages

    root = tmp_path_factory.mktemp("toy-regression")
    raw = {**TOY_REGRESSION, "dataset": {**TOY_REGRESSION["dataset"], "root": str(root / "data/raw")}}
    raw["features"] = {**TOY_REGRESSION["features"], "root": str(root / "data/features")}
    config = configuration.parse(raw)
    stages.fetch(config)
    stages.preprocess(config)
    return root, raw


@pytest.fixture(scope="session")
def toy_regression_run(toy_regression_workspace, tmp_path_factory):
    """A finished tiny regression run with its bundle: `(run_dir, summary)`."""
    from tympan import config as configuration
    from tympan import stages

    _, raw = toy_regression_workspace
    return stages.train(configuration.parse(raw), tmp_path_factory.mktemp("runs") / "toy-regression")


def build_transform_for(cls, args: dict, spec):
    """Build a transform class as the pipeline does: the input's rates fill the arguments of those names."""
    from tympan.transforms.pipeline import build_transform

    return build_transform(cls, args, spec, resolve=lambda c: c)[0]


def wait_for(url: str, what: str, seconds: float) -> None:
    """Poll `url` until a server answers there; fail the test if none does in time."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not start at {url}")
            time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_once_last_exists(command: list[str], cwd, run_dir) -> None:
    """Start a training command and SIGKILL it as soon as it has saved its first `last/` state."""
    import signal

    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (run_dir / "last").is_dir():
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


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
        wait_for(f"{url}/health", "mlflow server", seconds=60)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


S3_BUCKET = "tympan-test"


@pytest.fixture(scope="session")
def _moto_s3(tmp_path_factory):
    """A real S3-compatible server (moto in server mode, own process) on 127.0.0.1 with bucket
    `S3_BUCKET` and an IAM user whose keys are checked: yields (endpoint, key id, secret)."""
    import boto3

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/moto-api/", "moto server", seconds=20)
        admin = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "bootstrap"}
        admin["aws_secret_access_key"] = "bootstrap"
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="tympan")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="tympan", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="tympan")["AccessKey"]
        boto3.client("s3", **admin).create_bucket(Bucket=S3_BUCKET)
        # from now on every request must be signed with the user's real keys
        reset = urllib.request.Request(f"{url}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(reset, timeout=10)
        yield url, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def s3_server(_moto_s3, monkeypatch, tmp_path):
    """The moto S3 endpoint URL, with AWS_* (and MLFLOW_S3_ENDPOINT_URL, TYMPAN_S3_BUCKET) set
    for this test so that boto3, dvc and mlflow all use it; the bucket is `S3_BUCKET`."""
    url, key_id, secret = _moto_s3
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent-aws-config"))  # ignore ~/.aws
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent-aws-credentials"))
    monkeypatch.setenv("TYMPAN_S3_BUCKET", S3_BUCKET)
    return url


# ---------------------------------------------------------------- HTTP file server


class Server(http.server.ThreadingHTTPServer):
    """Serves `files` by name, honours Range, and cuts the first response of `cut` short."""

    def __init__(self, files: dict[str, bytes], cut: str | None = None):
        self.files, self.cut, self.requests = files, cut, []
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        name = urllib.parse.unquote(self.path.lstrip("/"))
        self.server.requests.append((name, self.headers.get("Range")))
        body = self.server.files.get(name)
        if body is None:
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.server.cut == name:
            self.server.cut = None
            self.wfile.write(body[start : start + len(body) // 2])  # then the connection drops
            return
        self.wfile.write(body[start:])

    def log_message(self, *_):
        pass


@pytest.fixture
def serve():
    """Start HTTP servers on 127.0.0.1 serving `files` by name: `serve(files, cut=None)` -> (server, base URL)."""
    servers = []

    def start(files: dict[str, bytes], cut: str | None = None) -> tuple[Server, str]:
        server = Server(files, cut)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
