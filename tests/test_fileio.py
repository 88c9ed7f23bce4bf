"""Atomic writes: all or nothing, with the permissions a plain open() would give."""

import os
import stat

import pytest

from tympan import fileio


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it after."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    fileio.write_json(tmp_path / "summary.json", {"dev": {"accuracy": 1.0}})
    fileio.write_csv(tmp_path / "metrics.csv", [{"epoch": 1}])
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    for name in ("summary.json", "metrics.csv", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), fileio.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
