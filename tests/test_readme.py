"""README.md stays true: every command and YAML block of it runs here as printed, in one
workspace and in README order (shortened where it trains: the workspace's configs train 3
optimizer steps), or names what it needs that this machine lacks and what checks it instead.
The output the README shows is compared with what the command prints.

A block is known by its first line. A new block with no check here fails
`test_every_block_has_a_check`, so the README cannot grow a command nobody runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from tests.conftest import free_port
from tests.test_charts import INFERENCE, PLATFORM, render, validate

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS = 3  # what every training of the workspace runs: optimizer steps, then the dev evaluation

# blocks checked elsewhere or not runnable here: first line -> why, and what checks it instead
ELSEWHERE = {
    "tympan pipeline compile --cluster": "needs a Kubeflow Pipelines endpoint; compiling: tests/test_pipeline.py",
    "make push-images": "needs a Docker engine; the Dockerfiles: make lint (hadolint) and tests/test_images.py",
    "kubectl -n mlops port-forward": "needs a Kubernetes cluster; promote --print-uri runs in test_registry_block",
    "HOST=$(kubectl": "needs a Kubernetes cluster with KServe; the same V2 request: tests/test_serving.py",
    "tympan/ ": "the layout: checked by test_layout_block",
}
EXPECTED_OUTPUT = "dev: accuracy"  # the default experiment's printed result


def readme_blocks() -> list[tuple[str, str, int]]:
    """(language, text, line) of every fenced block of README.md, dedented."""
    text = (REPO / "README.md").read_text()
    found = []
    for match in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```", text, re.S | re.M):
        indent = len(match.group(1))
        body = "".join(line[indent:] + "\n" for line in match.group(3).splitlines())
        found.append((match.group(2), body, text[: match.start()].count("\n") + 1))
    return found


def block(first: str) -> str:
    """The README block whose first line starts with `first`."""
    matches = [body for _, body, _ in readme_blocks() if body.startswith(first)]
    assert len(matches) == 1, f"README has {len(matches)} blocks starting with {first!r}"
    return matches[0]


RUN_HERE = [  # checked by the tests below, in this order
    "make install && make run",
    EXPECTED_OUTPUT,
    "tympan train examples/ablation.yaml",
    "tympan --help",
    "dataset:\n  target: tympan.datasets.table:Table",
    "grid:",
    "cd experiments/lr-seeds",
    "training:",
    "tympan register runs/default",
    "import mlflow",
    "export TYMPAN_S3_BUCKET",
    "make pipeline",
    "features:\n  sample_rate: 16000",
    "dataset: FSDD",
    "export AWS_ACCESS_KEY_ID=tympan",
    "helm upgrade --install digits",
]


def test_every_block_has_a_check():
    unchecked = [
        f"README.md:{line}: {body.splitlines()[0]!r}"
        for _, body, line in readme_blocks()
        if not any(body.startswith(first) for first in [*RUN_HERE, *ELSEWHERE])
    ]
    assert not unchecked, "README blocks that no test runs (add a check in tests/test_readme.py):\n" + "\n".join(
        unchecked
    )


# ---------------------------------------------------------------- the workspace


def shorten(path: Path) -> None:
    """A config of the workspace trains STEPS optimizer steps (its data stays the README's)."""
    config = yaml.safe_load(path.read_text())
    config["training"] = {**config.get("training", {}), "steps": STEPS, "eval_every": STEPS, "progress": False}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


TAKES = 5  # recordings per speaker and digit in the workspace's FSDD (the corpus has 50)


def small_mirror(fsdd_mirror: Path, folder: Path) -> Path:
    """A mirror of FSDD with its first TAKES takes of every digit and speaker (a corpus as FSDD's
    own checks expect it, a tenth of the size)."""
    recordings = folder / "fsdd/recordings"
    recordings.mkdir(parents=True)
    for clip in (fsdd_mirror / "fsdd/recordings").glob("*.wav"):
        if int(clip.stem.rsplit("_", 1)[1]) < TAKES:
            shutil.copy(clip, recordings / clip.name)
    return folder


@pytest.fixture(scope="module")
def workspace(fsdd_mirror, tmp_path_factory):
    """A copy of the repository's configs, pipelines and Makefile in a git repository with DVC,
    its trainings shortened and its FSDD smaller; `(folder, env)` for running the README's commands."""
    root = tmp_path_factory.mktemp("readme")
    mirror = small_mirror(fsdd_mirror, tmp_path_factory.mktemp("mirror"))
    for name in ["params.yaml", "dvc.yaml", "Makefile", ".dvcignore", ".gitignore", "pyproject.toml"]:
        shutil.copy(REPO / name, root / name)
    skip = shutil.ignore_patterns("runs", "data", "*.lock", "tmp", "cache", "__pycache__", "compiled")
    for folder in ["tympan", "examples", "pipelines", "experiments", "images", "requirements", ".dvc", "charts"]:
        shutil.copytree(REPO / folder, root / folder, ignore=skip)
    for config in [root / "params.yaml", *root.glob("examples/*.yaml"), *root.glob("experiments/*/params.yaml")]:
        shorten(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update(
        PATH=f"{BIN}:{os.environ['PATH']}",
        TYMPAN_DATA_MIRROR=str(mirror),
        TYMPAN_CACHE=str(root / "cache"),
        VENV=str(BIN.parent),
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "workspace"], cwd=root, check=True)
    return root, env


def bash(script: str, workspace, timeout: int = 900) -> str:
    """Run a README block as one bash script (`set -e`: every line must succeed); its output."""
    root, env = workspace
    result = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{script}"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"{script}\n--- exit {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
    return result.stdout + result.stderr


def make_target(script: str) -> str:
    """`make X` as run here: the workspace's .venv is this one, already installed."""
    return re.sub(r"\bmake (\w[\w-]*)", r'make --no-print-directory -o install VENV="$VENV" \1', script)


# ---------------------------------------------------------------- getting started


@pytest.fixture(scope="module")
def default_run(workspace):
    """`make run` of the first block (make install is what set up this environment; `make test`
    is this suite)."""
    lines = [line.split("#")[0].split() for line in block("make install && make run").splitlines()]
    assert lines == [["make", "install", "&&", "make", "run"], ["make", "test"]]
    return bash(make_target("make run"), workspace)


def test_make_run_prints_what_the_readme_shows(default_run):
    printed = default_run.splitlines()
    for line in block(EXPECTED_OUTPUT).splitlines():
        pattern = re.sub(r"\d+\\\.\d+", r"\\d+\\.\\d+", re.escape(line))
        assert any(re.fullmatch(pattern, p) for p in printed), (
            f"README shows {line!r}; make run printed:\n{default_run}"
        )


def test_ablation_block(default_run, workspace):
    bash(block("tympan train examples/ablation.yaml"), workspace)
    root, _ = workspace
    assert len(list((root / "runs/ablation-specaugment").glob("*/summary.json"))) == 6
    assert (root / "runs/ablation-specaugment/report/groups.csv").is_file()


def test_using_it_block(default_run, workspace):
    script = block("tympan --help").replace(
        "tympan train autrainer-cnn10-fsdd", f"tympan train autrainer-cnn10-fsdd training.steps={STEPS}"
    )
    printed = bash(script, workspace, timeout=1500)
    root, _ = workspace
    assert "dev: accuracy" in printed and "# run id: " in printed
    assert (root / "predictions.csv").is_file() and (root / "predictions.embeddings.npy").is_file()
    grid = sorted((root / "runs/grid").iterdir())
    assert len([run for run in grid if (run / "summary.json").is_file()]) == 5 and "[5/5]" in printed
    assert "mean" in printed  # the sliding windows' file row
    again = bash("tympan train examples/grid.yaml --grid", workspace)  # finished runs are skipped
    assert again.count("has finished already") == 5 and sorted((root / "runs/grid").iterdir()) == grid


# ---------------------------------------------------------------- your own data


def own_data(root: Path) -> dict[str, Path]:
    """The folders the own-data block names, made of real FSDD clips: a table with numeric
    targets and one folder per class."""
    clips = sorted((root / "data/raw/fsdd/recordings").glob("*.wav"))
    table, birds = root / "own/clips", root / "own/birds"
    table.mkdir(parents=True)
    rows = ["file,split,snr_db,rate"]
    generator = np.random.default_rng(0)
    for number, clip in enumerate(clips[:60]):
        samples, rate = soundfile.read(clip)
        soundfile.write(table / clip.name, samples, rate)
        split = ["train", "train", "train", "dev", "test"][number % 5]
        rows.append(f"{clip.name},{split},{generator.uniform(0, 30):.2f},{rate}")
    (table / "index.csv").write_text("\n".join(rows) + "\n")
    for digit in "012":
        (birds / f"bird{digit}").mkdir(parents=True)
        for clip in [c for c in clips if c.name.startswith(f"{digit}_")][:20]:
            shutil.copy(clip, birds / f"bird{digit}" / clip.name)
    return {"/data/clips": table, "/data/birds": birds}


def test_own_data_blocks_are_whole_configs(default_run, workspace):
    root, _ = workspace
    places = own_data(root)
    for number, document in enumerate(block("dataset:\n  target: tympan.datasets.table:Table").split("---\n")):
        for printed, real in places.items():
            document = document.replace(printed, str(real))
        config = root / f"own{number}.yaml"
        config.write_text(document)
        trained = bash(
            f"tympan fetch {config.name} && tympan preprocess {config.name} && "
            f"tympan train {config.name} training.steps={STEPS} --run-dir runs/own{number}",
            workspace,
        )
        assert "dev: " in trained and (root / f"runs/own{number}/bundle/bundle.json").is_file()


def test_grid_block_is_the_example_file():
    example = yaml.safe_load((REPO / "examples/grid.yaml").read_text())["grid"]
    assert yaml.safe_load(block("grid:")) == {"grid": example}


def test_lr_seeds_block(default_run, workspace):
    """The grid as DVC matrix stages (one train stage per combination, then the report), then the
    CLI on its runs; a second `dvc repro` trains nothing."""
    root, _ = workspace
    printed = bash(block("cd experiments/lr-seeds"), workspace)
    trained = sorted(line.split("'")[1] for line in printed.splitlines() if line.startswith("Running stage"))
    grid = [f"train@{lr}-{seed}" for lr in (0.001, 0.003) for seed in (1, 2, 3)]
    assert trained == sorted([*grid, "report"]), printed  # the data stages ran in make run
    groups = (root / "experiments/lr-seeds/report/groups.csv").read_text().splitlines()
    assert groups[0].startswith("optimizer.args.lr,runs,dev.accuracy mean,dev.accuracy std")
    assert sorted(line.split(",")[:2] for line in groups[1:]) == [["0.001", "3"], ["0.003", "3"]]
    assert "finished" in printed and "kept" in printed  # clean keeps what DVC tracks, and says so
    assert len(list((root / "experiments/lr-seeds/runs").glob("*/summary.json"))) == 6
    assert "Running stage" not in bash("cd experiments/lr-seeds && dvc repro", workspace)


def test_training_block_is_a_valid_part_of_a_config():
    from tympan import config as configuration

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    part = yaml.safe_load(block("training:"))
    loaded = configuration.parse({**raw, **part})
    assert loaded.training.patience == part["training"]["patience"] and loaded.tracking.tensorboard


def test_config_example_block_loads():
    from tympan import config as configuration

    loaded = configuration.parse(yaml.safe_load(block("dataset: FSDD")))
    assert loaded.model.target.endswith(":Cnn10") and loaded.optimizer.target == "torch.optim:SGD"


def test_stored_embedding_block_loads():
    from tympan import config as configuration

    raw = {"dataset": "FSDDSpeakers", **yaml.safe_load(block("features:\n  sample_rate: 16000"))}
    loaded = configuration.parse(raw)
    assert loaded.features.pipeline().stored.describe() == "vector of 256" and loaded.model.target.endswith(":FFNN")


# ---------------------------------------------------------------- registry and serving


def serve_until_ready(command: str, workspace, name: str) -> None:
    """Start a `tympan serve` line of the README on a free port, wait until it serves `name`, stop it."""
    root, env = workspace
    port = free_port()
    args = re.sub(r"--port \d+", f"--port {port}", command).split()
    process = subprocess.Popen(args, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v2/models/{name}/ready"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"{command} exited:\n{process.stdout.read()[-3000:]}"
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    assert json.loads(answer.read())["ready"] is True
                    return
            except OSError:
                assert time.monotonic() < deadline, f"{command}: {url} never answered"
                time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def split_serve(script: str) -> tuple[str, list[str]]:
    """The block without its `tympan serve` lines (which run until stopped), and those lines."""
    lines = script.splitlines()
    serving = [line.split("#")[0].strip() for line in lines if line.startswith("tympan serve")]
    return "\n".join(line for line in lines if not line.startswith("tympan serve")), serving


def test_registry_block(default_run, workspace):
    script, serving = split_serve(block("tympan register runs/default"))
    printed = bash(script, workspace)
    root, _ = workspace
    assert (root / "mlflow.db").is_file(), "the registry is MLflow's own default store"
    assert printed.count("registered digits version 1") == 1 and "7_yweweler_0.wav" in printed
    for command in serving:
        serve_until_ready(command, workspace, "digits")


def test_pyfunc_snippet_runs_as_printed(workspace):
    root, env = workspace
    result = subprocess.run(
        [sys.executable, "-c", block("import mlflow")], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "label" in result.stdout and "prob_7" in result.stdout


def test_object_storage_block(default_run, workspace, _moto_s3):
    """`make push` and `tympan serve s3://...` against a real S3 endpoint (moto), the README's
    placeholders replaced by its address and keys; the bundle the serve line names is uploaded first."""
    import boto3

    from tympan import storage

    root, env = workspace
    url, key_id, secret = _moto_s3
    script, serving = split_serve(block("export TYMPAN_S3_BUCKET"))
    script = script.replace("http://minio:9000", url).replace(
        "AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...", f"AWS_ACCESS_KEY_ID={key_id} AWS_SECRET_ACCESS_KEY={secret}"
    )
    bucket = re.search(r"TYMPAN_S3_BUCKET=(\S+)", script).group(1)
    client = boto3.client(
        "s3", endpoint_url=url, aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-east-1"
    )
    if bucket not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=bucket)
    pushed = bash(script, workspace)
    assert "pushed" in pushed or "files pushed" in pushed or "up to date" in pushed.lower()
    credentials = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    os.environ.update(credentials)
    try:
        for command in serving:
            location = re.search(r"s3://\S+", command).group(0)
            storage.upload(root / "runs/default/bundle", location)
            serve_until_ready(command, (root, {**env, **credentials, "AWS_DEFAULT_REGION": "us-east-1"}), "default")
    finally:
        for name in credentials:
            os.environ.pop(name, None)


def test_pipeline_block_compiles(workspace):
    script = block("make pipeline")
    first = script.splitlines()[0].split("#")[0].strip()
    assert first == "make pipeline"
    bash(make_target(first), workspace)
    root, _ = workspace
    assert (root / "pipelines/compiled/training.yaml").is_file()
    # the other lines: a kfp.local run of a grid (tests/test_pipeline.py runs pipelines/tiny.yaml
    # with run-local, and `submit` against a KFP API server on 127.0.0.1)
    source = (REPO / "tests/test_pipeline.py").read_text()
    assert "run_local(" in source and "def test_submit_uploads_the_spec_and_the_run_parameters" in source


# ---------------------------------------------------------------- deployment


# what the README's shell variables hold when its helm lines run (promote --print-uri prints such a URI)
SHELL_VALUES = {
    "$(openssl rand -hex 16)": "0123456789abcdef",
    "$AWS_ACCESS_KEY_ID": "tympan",
    "$AWS_SECRET_ACCESS_KEY": "0123456789abcdef",
    "$URI": "s3://mlflow/mlflow/1/models/m-abc/artifacts",
}


def helm_install(script: str) -> tuple[str, Path, str, dict]:
    """Release, chart, namespace and --set values of the `helm upgrade --install` command in a README block."""
    command = script[script.index("helm upgrade") :].replace("\\\n", " ").splitlines()[0]
    for variable, value in SHELL_VALUES.items():
        command = command.replace(variable, value)
    assert "$" not in command, f"a shell value this test does not know: {command}"
    words = command.split()
    release, chart = words[words.index("--install") + 1 : words.index("--install") + 3]
    values: dict = {}
    for position, word in enumerate(words):
        if word == "--set":
            key, _, value = words[position + 1].partition("=")
            holder = values
            *parents, leaf = key.split(".")
            for part in parents:
                holder = holder.setdefault(part, {})
            holder[leaf] = yaml.safe_load(value)
    return release, REPO / chart, words[words.index("-n") + 1], values


@pytest.mark.parametrize(
    "first, chart", [("export AWS_ACCESS_KEY_ID=tympan", PLATFORM), ("helm upgrade --install digits", INFERENCE)]
)
def test_helm_lines_render_valid_objects(first, chart, isvc_schema):
    """What `helm upgrade --install` would apply, rendered by the real Helm engine with the
    README's own --set values and validated (there is no cluster here to apply it to)."""
    release, found, namespace, values = helm_install(block(first))
    assert found == chart
    objects = render(chart, values, name=release, namespace=namespace)
    assert objects
    validate(objects, isvc_schema)


@pytest.fixture(scope="module")
def isvc_schema():
    from tests.test_charts import CRD

    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    return version["schema"]["openAPIV3Schema"]


def test_layout_block():
    """Every folder the layout names exists, and so does every module it lists under tympan/."""
    layout = block("tympan/ ")
    for folder in re.findall(r"^(\S+/)\s", layout, re.M):
        assert (REPO / folder).is_dir(), folder
    package = layout.split("tympan/presets/")[0].removeprefix("tympan/").replace("the library:", "")
    names = re.sub(r"\([^)]*\)", "", package).replace(",", " ").split()
    assert len(names) > 10
    for name in names:
        assert (REPO / "tympan" / name).is_dir() or (REPO / "tympan" / f"{name}.py").is_file(), name
