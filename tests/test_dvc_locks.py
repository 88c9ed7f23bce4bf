"""Every committed DVC pipeline's dvc.lock is current with the repository's own files it depends
on (code, params.yaml), so a fresh clone's `dvc status` lists only data that is not pulled yet.
A change to tympan/models, say, makes this fail until `dvc repro` has been run where it matters
and the new locks are committed."""

import json
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"


def git_files() -> set[str]:
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the committed files are unknown")
    return set(listed.stdout.splitlines())


def tracked(path: str, files: set[str]) -> bool:
    """Whether `path` (relative to the repository) is a committed file or a folder holding some."""
    return path in files or any(f.startswith(f"{path}/") for f in files)


def test_every_pipeline_has_a_committed_lock():
    files = git_files()
    pipelines = sorted(PurePosixPath(f).parent for f in files if PurePosixPath(f).name == "dvc.yaml")
    assert pipelines, "no dvc.yaml is committed"
    missing = [str(p / "dvc.lock") for p in pipelines if str(p / "dvc.lock").removeprefix("./") not in files]
    assert not missing, f"pipelines without a committed dvc.lock: {missing}; run `dvc repro` there and commit it"


def test_no_lock_disagrees_with_the_code_or_params_it_depends_on():
    files = git_files()
    status = subprocess.run([str(DVC), "status", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stderr
    stale = []
    for stage, changes in json.loads(status.stdout or "{}").items():
        for change in changes:
            if not isinstance(change, dict):
                continue  # "always changed", "changed checksum": nothing of the repository's own files
            for path, state in change.get("changed deps", {}).items():
                if tracked(path, files):
                    stale.append(f"{stage}: {path} {json.dumps(state)}")
    assert not stale, "stale dvc.lock entries (run `dvc repro` in their folder and commit the locks):\n" + "\n".join(
        stale
    )
