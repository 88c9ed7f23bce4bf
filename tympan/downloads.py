"""Downloads that survive interruption and never leave a half-written file where a whole one belongs.

A file is fetched into `<dest>.part` (an interrupted download resumes there with an HTTP Range
request), verified against its published checksum, and only then renamed to `dest`; a checksum
that does not match removes the part, so nothing unverified stays behind. A lock beside `dest`
(`<dest>.lock`, gone once nothing is left to resume) lets two processes download a file once.
`file://` URLs work the same way, which is how a local mirror stands in for the network.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from tympan.errors import DataError
from tympan.progress import bar

log = logging.getLogger("tympan")

CHUNK = 1 << 16
ALGORITHMS = ("sha256", "md5")


def download_file(url: str, dest: str | Path, sha256: str | None = None, checksum: str | None = None) -> Path:
    """Download `url` to `dest` once; `dest` appears only when complete and matching its checksum.

    `checksum` is "sha256:<hex>" or "md5:<hex>" (`sha256` is the shorthand for the first). A
    `dest` already there is verified, not fetched again; an interrupted download leaves only
    `<dest>.part`, which the next call resumes.
    """
    dest = Path(dest)
    expected = f"sha256:{sha256}" if sha256 else checksum
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest):
        if dest.is_file():
            verify(url, dest, expected)
            return dest
        part = dest.with_name(dest.name + ".part")
        try:
            _fetch_to(url, part)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            raise DataError(f"{url}: download failed ({err}); fetch again to resume from {part}") from err
        verify(url, part, expected)
        os.replace(part, dest)
    log.info("downloaded %s to %s", url, dest)
    return dest


def digest(file: Path, algorithm: str = "sha256") -> str:
    hasher = hashlib.new(algorithm)
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def verify(url: str, file: Path, expected: str | None, remove: bool = True) -> None:
    """`file` matches `expected` ("algorithm:hex", None to skip), or a DataError says so and (unless
    `remove` is false: a mirror's file is never touched) it is removed."""
    if expected is None:
        return
    algorithm, _, value = expected.partition(":")
    if algorithm not in ALGORITHMS or not value:
        raise ValueError(f"checksum {expected!r} must be 'sha256:<hex>' or 'md5:<hex>'")
    found = digest(file, algorithm)
    # a prefix of at least 8 digits is torchvision's way (its file names carry the sha256's start)
    if len(value) < 8 or not found.startswith(value.lower()):
        if remove:
            file.unlink()
        raise DataError(f"{url}: {algorithm} is {found}, expected {value}" + (f"; removed {file}" if remove else ""))


class _locked:
    """An exclusive flock on `<dest>.lock` for the download's life (released however it ends). The
    lock file goes too unless a `.part` is left to resume: a waiter then finds `dest` complete, or
    nothing, and a checksum guards against the rare second downloader."""

    def __init__(self, dest: Path):
        self.path = dest.with_name(dest.name + ".lock")
        self.part = dest.with_name(dest.name + ".part")

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *_) -> None:
        if not self.part.exists():
            self.path.unlink(missing_ok=True)
        os.close(self.fd)


def _fetch_to(url: str, part: Path) -> None:
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:
            raise
        part.unlink()  # the server cannot continue this .part: start over
        return _fetch_to(url, part)
    with response:
        if offset and getattr(response, "status", None) != 206:
            offset = 0  # the server ignored the Range header (or a file:// URL): everything again
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        with (
            open(part, "ab" if offset else "wb") as f,
            bar(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[: -len(".part")]) as progress,
        ):
            while chunk := response.read(CHUNK):
                f.write(chunk)
                progress.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size < total:
        raise DataError(f"{url}: connection closed after {size} of {total} bytes; fetch again to resume from {part}")
