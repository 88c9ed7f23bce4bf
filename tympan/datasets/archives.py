"""Safe extraction of the tar and zip archives that corpora are distributed as.

An archive is data from the network: a member may be a link, a device, an absolute path or a
`../` path meant to write outside the target. Only regular files are written, each to a path that
the corpus's `place` function chooses from the member's name and that must stay below `out`;
everything else is skipped. Tar archives are read as a stream, so a corpus of any size extracts
in constant memory.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tympan.errors import DataError
from tympan.progress import bar

__all__ = ["Place", "extract", "inside", "keep_all"]

#: Where a member goes below `out` (a relative path), or None to skip it.
Place = Callable[[PurePosixPath], "PurePosixPath | None"]


def keep_all(member: PurePosixPath) -> PurePosixPath:
    """Every member at its own path."""
    return member


def inside(relative: PurePosixPath | str) -> PurePosixPath | None:
    """`relative` as a path that cannot leave its folder, or None (absolute, `..`, empty)."""
    path = PurePosixPath(str(relative).replace("\\", "/"))
    parts = [p for p in path.parts if p not in ("", ".")]
    if path.is_absolute() or not parts or ".." in parts:
        return None
    return PurePosixPath(*parts)


def extract(archive: Path, out: Path, place: Place = keep_all) -> int:
    """Write the regular-file members of `archive` (tar of any compression, or zip) that `place`
    keeps into `out`; return how many. A corrupt archive is a DataError naming it."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            return _extract_zip(archive, out, place)
        return _extract_tar(archive, out, place)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as err:
        raise DataError(f"{archive}: cannot extract the archive ({err})") from err


def _target(out: Path, name: str, place: Place) -> Path | None:
    member = inside(name)
    chosen = place(member) if member is not None else None
    chosen = inside(chosen) if chosen is not None else None
    return out / chosen if chosen is not None else None


def _write(member: BinaryIO, target: Path) -> None:
    """Copy one opened member to `target`, making its folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with member as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _extract_tar(archive: Path, out: Path, place: Place) -> int:
    written = 0
    with tarfile.open(archive, "r|*") as tar:
        for member in bar(tar, desc=f"extract {archive.name}", unit="file"):
            target = _target(out, member.name, place) if member.isfile() else None
            if target is not None:
                _write(tar.extractfile(member), target)
                written += 1
    return written


def _extract_zip(archive: Path, out: Path, place: Place) -> int:
    written = 0
    with zipfile.ZipFile(archive) as zipped:
        for info in bar(zipped.infolist(), desc=f"extract {archive.name}", unit="file"):
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix type recorded (Windows, or Python's writestr)
            regular = not info.is_dir() and kind in (0, stat.S_IFREG)
            target = _target(out, info.filename, place) if regular else None
            if target is not None:
                _write(zipped.open(info), target)
                written += 1
    return written
