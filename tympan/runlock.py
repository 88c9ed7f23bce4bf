"""One training at a time in a run directory: an exclusive lock (flock) on its `running.pid`,
held for the run's life. The OS releases it when the process ends, however it ends (SIGKILL
included), so a killed run never blocks the one that resumes it; the file names the holder."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tympan.errors import TrainingError

log = logging.getLogger("tympan")

PID_FILE = "running.pid"


@contextmanager
def hold(run_dir: str | Path) -> Iterator[Path]:
    """Lock `run_dir` for this process; a TrainingError naming the pid of a live holder. The pid
    file is removed on every exit that runs Python code (a kill leaves it, unlocked)."""
    path = Path(run_dir) / PID_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(path)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still locked: a process that opened the file meanwhile retries
        os.close(fd)


def _lock(path: Path) -> int:
    """An fd of `path` holding its lock (unlocked where the file system has no locks: warned)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise TrainingError(
                f"{path.parent}: another training (pid {holder}) is running in this run directory; "
                "wait for it to end, or use another --run-dir"
            ) from None
        except OSError as exc:
            log.warning("cannot lock %s (%s); run one training at a time in it", path, exc.strerror)
            return fd
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder that just ended removed it: lock the file there now
