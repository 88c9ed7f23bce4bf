"""How many CPUs this process may use, and torch's thread pools sized to match.

A host's core count is the wrong size for a process that was given fewer: two trainings on a
2-core machine with two threads each wait at every OpenMP barrier for a core the other one holds,
and a Kubernetes pod with a CPU limit of 1 on a 64-core node is throttled by its CFS quota
for running 64 threads. The budget is the smaller of the process's CPU affinity (taskset,
cpusets) and its cgroup's CPU quota; an explicit count (the config's `training.threads`, else
`OMP_NUM_THREADS`) overrides it."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger("tympan")

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
_interop_set = False


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _quota_v2(directory: Path) -> float | None:
    """cgroup v2 `cpu.max`: "<quota> <period>" in microseconds, or "max <period>" for no limit."""
    text = _read(directory / "cpu.max")
    if not text or text.startswith("max"):
        return None
    quota, _, period = text.partition(" ")
    return int(quota) / int(period or 100000)


def _quota_v1(directory: Path) -> float | None:
    """cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`; a quota of -1 means no limit."""
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    if quota is None or period is None or int(quota) <= 0:
        return None
    return int(quota) / int(period)


def _cgroup_dirs(root: Path, proc_cgroup: Path):
    """(directory, reader) for this process's cgroup and each of its ancestors, in both versions.

    A quota anywhere up the tree limits the process, so each level counts. In a container the
    process's path may be "/" (cgroup namespace): then only the mount root is read."""
    for line in (_read(proc_cgroup) or "").splitlines():
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            mounts, reader = [root], _quota_v2
        elif "cpu" in controllers.split(","):
            mounts, reader = list(dict.fromkeys([root / "cpu", root / controllers, root / "cpu,cpuacct"])), _quota_v1
        else:
            continue
        parts = Path(path).relative_to("/").parts if path.startswith("/") else ()
        for mount in mounts:
            for depth in range(len(parts), -1, -1):
                yield mount.joinpath(*parts[:depth]), reader


def cgroup_cpus(root: str | Path = CGROUP_ROOT, proc_cgroup: str | Path = PROC_CGROUP) -> float | None:
    """The CPUs the cgroup CPU quota allows (1.5 for "150000 100000"); None when unlimited."""
    quotas = []
    for directory, reader in _cgroup_dirs(Path(root), Path(proc_cgroup)):
        try:
            quota = reader(directory)
        except (ValueError, ZeroDivisionError):
            log.warning("unreadable CPU quota in %s; ignoring it", directory)
            continue
        if quota is not None:
            quotas.append(quota)
    return min(quotas) if quotas else None


def cpu_budget(root: str | Path = CGROUP_ROOT, proc_cgroup: str | Path = PROC_CGROUP) -> int:
    """CPUs this process may use: its affinity, capped by the cgroup quota rounded up; at least 1."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpus(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def threads(requested: int | None = None) -> int:
    """Threads to use: `requested` (the config), else $OMP_NUM_THREADS, else the CPU budget."""
    if requested:
        return requested
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    if value:
        log.warning("OMP_NUM_THREADS=%r is not a positive integer; sizing threads from the CPUs", value)
    return cpu_budget()


def configure(requested: int | None = None) -> int:
    """Size torch's intra-op threads (and its inter-op pool, which can be set only once per
    process) to `threads(requested)`; returns that count. Call before any work starts."""
    global _interop_set
    import torch

    count = threads(requested)
    torch.set_num_threads(count)
    if not _interop_set:
        _interop_set = True
        try:
            torch.set_num_interop_threads(count)
        except RuntimeError:  # inter-op work already ran in this process: its pool stays as it is
            pass
    log.debug("torch threads: %d", count)
    return count


def machine() -> dict:
    """What a run's numbers depend on besides its config and data: float kernels differ between CPU
    models, and the thread count changes how sums are split. The same machine and thread count give
    byte-identical runs; another CPU model can move the last digits."""
    import platform

    import torch

    model = next((line.partition(":")[2].strip() for line in (_read(Path("/proc/cpuinfo")) or "").splitlines()
                  if line.startswith("model name")), "") or platform.processor() or platform.machine()  # fmt: skip
    return {"cpu": model, "threads": torch.get_num_threads(), "torch": torch.__version__}
