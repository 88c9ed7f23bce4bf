"""The DVC pipeline with the real `dvc`: full run, no-op rerun, a training change reruns train only,
other configs' stores beside the default one leave it alone, and a clone that pulled only the
features trains."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STORE = "data/features/default"  # params.yaml's features.store: the store dvc.yaml tracks
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def dvc(*args, cwd, env):
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def dvc_project(root: Path, fsdd_mirror) -> tuple[dict, dict]:
    """A git and DVC project at `root` with this repo's dvc.yaml and tympan package, and tiny params
    (one training speaker, one epoch); returns the params and the environment dvc runs in."""
    shutil.copytree(REPO / "tympan", root / "tympan", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root)
    args = {"train_speakers": ["george"], "dev_speakers": ["yweweler"], "test_speakers": []}
    params = {**TINY, "dataset": {**TINY["dataset"], "args": args}, "augmentation": []}
    params["features"] = {**TINY["features"], "store": STORE}
    params["training"] = {**TINY["training"], "epochs": 1}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TYMPAN_DATA_MIRROR": str(fsdd_mirror)}
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc("init", "-q", cwd=root, env=env)
    return params, env


def test_repro_then_nothing_then_only_train(fsdd_mirror, tmp_path):
    params, env = dvc_project(tmp_path, fsdd_mirror)

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
    subprocess.run([*GIT, "add", "-A"], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run([*GIT, "commit", "-qm", "base"], cwd=tmp_path, check=True, capture_output=True)
    experiment = dvc("exp", "run", "-S", "training.epochs=3", "-n", "three", cwd=tmp_path, env=env)
    assert "Running stage 'train'" in experiment and "Running stage 'preprocess'" not in experiment
    assert (tmp_path / "runs/default/metrics.csv").read_text().count("\n") == 4
    assert "three" in dvc("exp", "show", "--json", cwd=tmp_path, env=env)


def test_other_stores_leave_the_pipeline_alone_and_a_clone_with_only_the_features_trains(fsdd_mirror, tmp_path):
    """Preprocessing another config into the same data/features folder (an example, the Kubeflow
    tiny run) once made `dvc status` report the default pipeline's features modified; and training
    found its store through the raw index, which a clone that pulled only the features lacks."""
    repo = tmp_path / "repo"
    params, env = dvc_project(repo, fsdd_mirror)
    (repo / ".gitignore").write_text("/data/\n/runs/\n__pycache__/\n")
    dvc("remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=repo, env=env)
    dvc("repro", cwd=repo, env=env)

    logmel = {"target": "tympan.transforms.logmel:PannLogMel", "args": {"n_mels": 32}}
    other = {**params, "features": {"preset": "PannLogMel16k", "offline": [logmel]}}  # no store: named by digest
    (repo / "other.yaml").write_text(yaml.safe_dump(other))
    command = [sys.executable, "-m", "tympan.cli", "preprocess", "other.yaml"]
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    stores = sorted(p.name for p in (repo / "data/features").iterdir() if not p.name.startswith("."))
    assert len(stores) == 2 and "default" in stores, stores  # the other store beside the default one
    assert "Data and pipelines are up to date" in dvc("status", cwd=repo, env=env)

    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True, capture_output=True)
    subprocess.run([*GIT, "commit", "-qm", "base"], cwd=repo, check=True, capture_output=True)
    dvc("push", "-q", cwd=repo, env=env)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    bare = {k: v for k, v in env.items() if k != "TYMPAN_DATA_MIRROR"}  # nothing to fetch from
    dvc("pull", "-q", STORE, cwd=clone, env=bare)
    assert not (clone / "data/raw").exists()
    trained = dvc("repro", "--single-item", "train", cwd=clone, env=bare)
    assert "Running stage 'train'" in trained and "dev: accuracy" in trained
    assert (clone / "runs/default/summary.json").is_file() and not (clone / "data/raw").exists()


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
