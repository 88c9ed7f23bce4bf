"""The DVC remote on a real S3-compatible server (moto on 127.0.0.1), with the real `dvc`, `git`
and the project's Makefile: push from one clone, pull into a fresh one, nothing left to reproduce."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import TINY, free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def run(*command, cwd, env, ok=True):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert (result.returncode == 0) == ok, output
    return output


def make(target, cwd, env, ok=True):
    return run("make", "--no-print-directory", target, cwd=cwd, env=env, ok=ok)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with its content hash, git's and DVC's internals aside."""

    def internal(relative: Path) -> bool:
        return relative.parts[0] == ".git" or relative.parts[:2] in {(".dvc", "tmp"), (".dvc", "cache")}

    files = (p for p in sorted(root.rglob("*")) if p.is_file() and not internal(p.relative_to(root)))
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


def project(directory: Path, mirror: Path) -> None:
    """A git repository with the project's dvc.yaml, DVC config, Makefile and tympan, and tiny params."""
    directory.mkdir()
    for name in ("dvc.yaml", "Makefile"):
        shutil.copy(REPO / name, directory)
    shutil.copytree(REPO / "tympan", directory / "tympan", ignore=shutil.ignore_patterns("__pycache__"))
    if (REPO / "images/images.env").is_file():  # the Makefile includes it
        (directory / "images").mkdir()
        shutil.copy(REPO / "images/images.env", directory / "images")
    # the example grid comes with its committed dvc.lock, whose outputs nobody has pushed
    shutil.copytree(
        REPO / "experiments", directory / "experiments", ignore=shutil.ignore_patterns("runs", "report", "data")
    )
    assert (directory / "experiments/lr-seeds/dvc.lock").is_file()
    # five takes of each digit by two speakers: a small remote keeps the test quick
    source = directory.parent / "fsdd-mini"
    source.mkdir()
    for speaker in ("george", "yweweler"):
        for digit in range(10):
            for take in range(5):
                name = f"{digit}_{speaker}_{take}.wav"
                shutil.copy(mirror / "fsdd/recordings" / name, source / name)
    args = {"source": str(source), "train_speakers": ["george"], "dev_speakers": ["yweweler"], "test_speakers": []}
    params = {**TINY, "dataset": {**TINY["dataset"], "args": args}, "augmentation": []}
    params["features"] = {**TINY["features"], "store": "data/features/default"}  # dvc.yaml's ${features.store}
    params["training"] = {**TINY["training"], "epochs": 1}
    (directory / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=directory, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=directory, check=True)
    shutil.copy(REPO / ".dvc/config", directory / ".dvc/config")  # the committed default remote


def test_push_pull_round_trip_and_failures_leave_nothing(fsdd_mirror, s3_server, tmp_path):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TYMPAN_DATA_MIRROR": str(fsdd_mirror)}
    env["TYMPAN_S3_PREFIX"] = "dvc-roundtrip"
    origin = tmp_path / "origin"
    project(origin, fsdd_mirror)
    run(str(BIN / "dvc"), "repro", cwd=origin, env=env)
    run(*GIT, "add", "-A", cwd=origin, env=env)
    run(*GIT, "commit", "-qm", "tiny experiment", cwd=origin, env=env)

    pushed = make("push", cwd=origin, env=env)
    assert f"s3://{env['TYMPAN_S3_BUCKET']}/dvc-roundtrip" in pushed and "pushed" in pushed
    assert "are in sync" in run(str(BIN / "dvc"), "status", "-c", "dvc.yaml", cwd=origin, env=env)
    assert "missing" not in pushed  # only the default pipeline's outputs: no warnings about the grid's

    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(origin), str(clone), cwd=tmp_path, env=env)
    assert not (clone / ".dvc/config.local").exists() and not (clone / "data/raw/fsdd").exists()
    make("pull", cwd=clone, env=env)
    expected = {k: v for k, v in snapshot(origin).items() if not k.startswith(".dvc/")}
    assert {k: v for k, v in snapshot(clone).items() if not k.startswith(".dvc/")} == expected
    assert any(k.startswith("data/features/") for k in expected) and "runs/default/bundle/bundle.json" in expected
    repro = run(str(BIN / "dvc"), "repro", cwd=clone, env=env)
    assert "Running stage" not in repro and "up to date" in repro
    # the grid's outputs, asked for by name, are not there: one line says what to do
    grid = make("pull", cwd=clone, env={**env, "DVC_TARGETS": "experiments/lr-seeds/dvc.yaml"}, ok=False)
    assert "make pull: failed; were the outputs of experiments/lr-seeds/dvc.yaml pushed (make push)?" in grid

    # a server that is down, then a wrong secret: a clear failure and an untouched fresh clone
    fresh = tmp_path / "fresh"
    run("git", "clone", "-q", str(origin), str(fresh), cwd=tmp_path, env=env)
    before = snapshot(fresh)
    down = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    failed = make("pull", cwd=fresh, env=down, ok=False)
    assert f"tympan: error: s3://{env['TYMPAN_S3_BUCKET']}/dvc-roundtrip: cannot reach S3 endpoint" in failed
    assert "is the server running?" in failed
    wrong = {**env, "AWS_SECRET_ACCESS_KEY": "wrong"}
    failed = make("pull", cwd=fresh, env=wrong, ok=False)
    assert "access denied" in failed and "AWS_SECRET_ACCESS_KEY" in failed
    # dvc itself, without make's check first, fails on the keys too and leaves nothing either
    direct = run(str(BIN / "dvc"), "pull", cwd=fresh, env={**wrong, "AWS_MAX_ATTEMPTS": "1"}, ok=False)
    assert "Forbidden" in direct and "failed to pull data from the cloud" in direct
    after = {k: v for k, v in snapshot(fresh).items() if k != ".dvc/config.local"}
    assert after == before
    # nothing fetched: below data/ only the .gitignore files git checked out (dvc's, beside each output)
    fetched = [p for p in (fresh / "data").rglob("*") if p.is_file() and p.name != ".gitignore"]
    assert not fetched and not (fresh / "runs/default/bundle").exists()
    assert not [p for p in (fresh / ".dvc/cache").rglob("*") if p.is_file()]  # no half-fetched objects

    # pushing with a wrong secret fails too, and changes nothing in the workspace
    before = snapshot(origin)
    failed = make("push", cwd=origin, env=wrong, ok=False)
    assert "access denied" in failed and "pushed" not in failed
    assert snapshot(origin) == before
