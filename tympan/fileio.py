"""Atomic writes of files and directories: a crash never leaves a half-written one that looks complete."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tympan.errors import StorageError, TympanError

# A full disk or quota: ENOSPC / EDQUOT, also inside the messages of libraries that wrap them
# (safetensors says "os error 28").
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_OS_ERROR = re.compile(r"os error (\d+)")


@contextmanager
def disk_space(where: str | Path, advice: str) -> Iterator[None]:
    """Turn a full disk or quota, whichever file below `where` was being written, into one
    StorageError: "<where>: no space left on device; <advice>". Other errors pass unchanged."""
    try:
        yield
    except TympanError:
        raise
    except Exception as err:
        code = err.errno if isinstance(err, OSError) else next(map(int, _OS_ERROR.findall(str(err))), None)
        if code not in DISK_FULL:
            raise
        raise StorageError(f"{where}: no space left on device; {advice}") from None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` that replaces `path` only if the block succeeds.

    The file is created the way open(path, "w") would create it (mode 0666 less the umask),
    not with mkstemp's 0600, so a run directory's files are as readable as any others.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # O_EXCL: never someone else's
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty `.name.tmp` beside `path` that replaces `path` only if the block succeeds.

    The swap is two renames, with the previous `path` waiting as `.name.old` in between, so a kill
    at any point leaves one complete version (`path`, else `.name.old`). A failed block leaves
    nothing behind; leftovers of a killed swap are cleared by the next one.
    """
    path = Path(path)
    tmp, old = path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)  # a leftover: `path` is complete
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def clear_leftovers(directory: str | Path) -> list[Path]:
    """Delete the temporary files of atomic writes in `directory` that a kill cut short (their
    targets are unharmed); returns what was deleted. For a directory that is resumed, then kept."""
    stray = sorted(Path(directory).glob(".*.tmp"))
    for path in stray:
        path.unlink(missing_ok=True)
    return stray


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_csv(path: str | Path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    """Rows as CSV with a header (the first row's keys unless `fieldnames` is given)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames or (list(rows[0]) if rows else []), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
