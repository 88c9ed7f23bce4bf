"""The DVC pipeline with the real `dvc`: full run, no-op rerun, and a training change reruns train only."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def dvc(*args, cwd, env):
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_repro_then_nothing_then_only_train(fsdd_mirror, tmp_path):
    shutil.copy(REPO / "dvc.yaml", tmp_path)
    shutil.copytree(REPO / "tympan", tmp_path / "tympan", ignore=shutil.ignore_patterns("__pycache__"))
    args = {"train_speakers": ["george"], "dev_speakers": ["yweweler"], "test_speakers": []}
    params = {**TINY, "dataset": {**TINY["dataset"], "args": args}, "augmentation": []}
    params["training"] = {**TINY["training"], "epochs": 1}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TYMPAN_DATA_MIRROR": str(fsdd_mirror)}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc("init", "-q", cwd=tmp_path, env=env)

    first = dvc("repro", cwd=tmp_path, env=env)
    for stage in ("fetch", "preprocess", "train"):
        assert f"Running stage '{stage}'" in first
    assert "dev: accuracy" in first
    assert (tmp_path / "runs/default/summary.json").is_file()
    assert (tmp_path / "dvc.lock").is_file()

    second = dvc("repro", cwd=tmp_path, env=env)
    assert "Running stage" not in second

    params["training"]["epochs"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    third = dvc("repro", cwd=tmp_path, env=env)
    assert "Running stage 'train'" in third
    assert "Running stage 'fetch'" not in third and "Running stage 'preprocess'" not in third
    assert (tmp_path / "runs/default/metrics.csv").read_text().count("\n") == 3  # header + 2 epochs

    metrics = dvc("metrics", "show", "--json", cwd=tmp_path, env=env)
    assert "accuracy" in metrics

    # a one-off experiment on top of a commit: only train reruns, with the changed key
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=tmp_path, check=True, capture_output=True)
    experiment = dvc("exp", "run", "-S", "training.epochs=3", "-n", "three", cwd=tmp_path, env=env)
    assert "Running stage 'train'" in experiment and "Running stage 'preprocess'" not in experiment
    assert (tmp_path / "runs/default/metrics.csv").read_text().count("\n") == 4
    assert "three" in dvc("exp", "show", "--json", cwd=tmp_path, env=env)


def test_clean_keeps_what_dvc_tracks_unless_the_run_is_named(tiny_run, tmp_path):
    """`tympan clean runs --stopped --states` at a repository root deleted runs/default/best and last/,
    which dvc.yaml tracks (here as a plain stage and as matrix stages), so `dvc status` reported them
    missing. They are kept, and said so; runs DVC does not track are cleaned as before."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc("init", "-q", cwd=tmp_path, env=env)
    outs = ["best", "last", "bundle", "config.yaml"]
    stages = {
        "train": {"cmd": "true", "outs": [f"runs/default/{o}" for o in outs]},
        "seeds": {"matrix": {"seed": [1]}, "cmd": "true", "outs": [f"runs/seed${{item.seed}}/{o}" for o in outs]},
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    runs = tmp_path / "runs"
    for name in ("default", "seed1", "mine"):
        shutil.copytree(tiny_run[0], runs / name)
    shutil.copytree(tiny_run[0], runs / "killed")
    (runs / "killed/summary.json").unlink()
    dvc("commit", "-f", "-q", cwd=tmp_path, env=env)
    assert "up to date" in dvc("status", cwd=tmp_path, env=env)

    def tympan(*args):
        command = [sys.executable, "-m", "tympan.cli", "clean", *args]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        return result.stdout.splitlines()

    said = tympan("runs", "--stopped", "--states")
    assert not (runs / "killed").exists() and not (runs / "mine/best").exists() and not (runs / "mine/last").exists()
    for name, stage in (("default", "train"), ("seed1", "seeds@1")):
        assert (runs / name / "best/model.safetensors").is_file() and (runs / name / "last").is_dir()
        assert (
            f"kept runs/{name}/best, runs/{name}/last: tracked by DVC (stage {stage}); to delete, name the run: "
            f"tympan clean runs/{name} --states"
        ) in said, said
    assert "deleted runs/killed" in said and "deleted the states of runs/mine" in said
    assert not any("runs/default" in line or "runs/seed1" in line for line in said if line.startswith("deleted"))
    assert "up to date" in dvc("status", cwd=tmp_path, env=env)

    said = tympan("runs/default", "--states")  # named: deleted, and what that means for DVC said
    assert not (runs / "default/best").exists() and not (runs / "default/last").exists()
    assert said == [
        "deleted the states of runs/default (DVC-tracked by train: `dvc status` reports it missing until "
        "`dvc checkout` or `dvc repro`)"
    ]
    assert "deleted" in dvc("status", cwd=tmp_path, env=env)
