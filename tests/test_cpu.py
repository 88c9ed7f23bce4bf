"""CPU sizing: cgroup quotas (v1 and v2, read from files written here), affinity, overrides, and
the thread counts of a real training process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tympan import cpu


def cgroups(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake cgroup mount (files relative to it) and /proc/self/cgroup naming this process's cgroup."""
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(membership + "\n")
    return root, proc


def test_cgroup_v2_quota_of_the_process_and_its_ancestors(tmp_path, caplog):
    root, proc = cgroups(tmp_path / "a", "0::/", {"cpu.max": "150000 100000"})
    assert cpu.cgroup_cpus(root, proc) == 1.5
    root, proc = cgroups(tmp_path / "b", "0::/", {"cpu.max": "max 100000"})
    assert cpu.cgroup_cpus(root, proc) is None
    # a pod's limit sits on the pod's cgroup, above the container's own (unlimited) one
    files = {"kubepods/pod1/cpu.max": "200000 100000", "kubepods/pod1/ctr/cpu.max": "max 100000", "cpu.max": "max"}
    root, proc = cgroups(tmp_path / "c", "0::/kubepods/pod1/ctr", files)
    assert cpu.cgroup_cpus(root, proc) == 2.0
    root, proc = cgroups(tmp_path / "d", "0::/", {"cpu.max": "lots 100000"})
    assert cpu.cgroup_cpus(root, proc) is None and "unreadable CPU quota" in caplog.text


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    files = {"cpu,cpuacct/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "100000"}
    root, proc = cgroups(tmp_path / "a", "5:memory:/\n4:cpu,cpuacct:/\n0::/", files)
    assert cpu.cgroup_cpus(root, proc) == 0.5
    files = {"cpu/docker/c1/cpu.cfs_quota_us": "300000", "cpu/docker/c1/cpu.cfs_period_us": "100000"}
    root, proc = cgroups(tmp_path / "b", "1:cpu:/docker/c1", files)
    assert cpu.cgroup_cpus(root, proc) == 3.0
    files = {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}
    root, proc = cgroups(tmp_path / "c", "1:cpu:/", files)
    assert cpu.cgroup_cpus(root, proc) is None
    assert cpu.cgroup_cpus(tmp_path / "absent", tmp_path / "absent-proc") is None  # no cgroups at all


def test_budget_is_the_affinity_capped_by_the_quota_rounded_up(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    root, proc = cgroups(tmp_path / "half", "0::/", {"cpu.max": "50000 100000"})
    assert cpu.cpu_budget(root, proc) == 1  # half a CPU still gets one thread
    root, proc = cgroups(tmp_path / "many", "0::/", {"cpu.max": "6400000 100000"})
    assert cpu.cpu_budget(root, proc) == affinity  # a 64-CPU quota does not add cores
    root, proc = cgroups(tmp_path / "none", "0::/", {})
    assert cpu.cpu_budget(root, proc) == affinity


def test_config_then_environment_then_budget(monkeypatch, caplog):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu.threads() == 3 and cpu.threads(2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "two")
    assert cpu.threads() == cpu.cpu_budget()
    assert "OMP_NUM_THREADS='two' is not a positive integer" in caplog.text


TRAIN = """
import json, sys, torch
from tympan import config, stages
stages.train(config.parse(json.loads(sys.argv[1])), sys.argv[2])
print(json.dumps([torch.get_num_threads(), torch.get_num_interop_threads()]))
"""


def _train_threads(raw: dict, run_dir: Path, cpus: set[int] | None = None) -> list[int]:
    """[intra-op, inter-op] torch threads of a real training process (pinned to `cpus` if given)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    result = subprocess.run(
        [sys.executable, "-c", TRAIN, json.dumps(raw), str(run_dir)],
        env=env, preexec_fn=pin, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to tell one from all")
def test_a_training_process_uses_the_cpus_it_is_given(tiny_workspace, tmp_path):
    _, raw = tiny_workspace
    short = {**raw, "training": {**raw["training"], "steps": 2, "progress": False}}
    one = min(os.sched_getaffinity(0))
    assert _train_threads(short, tmp_path / "pinned", {one}) == [1, 1]
    # the config's count wins over the CPUs the process has
    threads = {**short, "training": {**short["training"], "threads": 1}}
    assert _train_threads(threads, tmp_path / "config") == [1, 1]
