"""Dataset base class, the on-disk index, and safe, resumable fetching.

A dataset is fetched once into `<root>/<name>/`: its audio files plus an
`index.csv` with one row per file (`path` relative to the dataset dir, `split`,
target column(s), metadata). Everything after fetching reads only the index,
so a new dataset needs nothing but a `download` and a `prepare` method, as in
lhotse's recipes.

Fetching is built so that an interrupted or corrupt fetch never looks done:
files are gathered in a hidden staging dir `<root>/.<name>.partial/` (where a
`.part` download survives and resumes), verified, indexed, and only then
renamed to `<root>/<name>/`. A read-only mirror named by `TYMPAN_DATA_MIRROR`
stands in for the download on machines without internet.
"""

from __future__ import annotations

import abc
import csv
import hashlib
import http.client
import io
import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from tympan.errors import DataError
from tympan.fileio import write_text
from tympan.progress import bar

__all__ = [
    "AudioDataset",
    "Index",
    "INDEX_FILE",
    "SPLITS",
    "download_file",
    "link_or_copy",
    "read_index",
    "write_index",
]

log = logging.getLogger(__name__)

INDEX_FILE = "index.csv"
SPLITS = ("train", "dev", "test")
REQUIRED_COLUMNS = ("path", "split")
MIRROR_ENV = "TYMPAN_DATA_MIRROR"
CHUNK = 1 << 16


# ---------------------------------------------------------------- the index


class Index:
    """The rows of a dataset's `index.csv`; paths resolve against `root`, the dataset dir."""

    def __init__(self, root: Path, rows: list[dict[str, str]]):
        self.root = Path(root)
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    @property
    def columns(self) -> list[str]:
        return list(self.rows[0]) if self.rows else list(REQUIRED_COLUMNS)

    def split(self, name: str) -> list[dict[str, str]]:
        """The rows of one split ("train", "dev" or "test"); may be empty."""
        if name not in SPLITS:
            raise DataError(f"{self.root / INDEX_FILE}: unknown split {name!r}, not one of {SPLITS}")
        return [row for row in self.rows if row["split"] == name]

    def labels(self, column: str) -> list[str]:
        """The sorted distinct values of a target column, e.g. the class names."""
        if self.rows and column not in self.rows[0]:
            raise DataError(f"{self.root / INDEX_FILE}: no column {column!r} (has {self.columns})")
        return sorted({row[column] for row in self.rows})

    def path_of(self, row: dict[str, str]) -> Path:
        """The absolute path of a row's audio file."""
        return self.root / row["path"]


def read_index(dataset_dir: str | Path) -> Index:
    """Read and check `<dataset_dir>/index.csv`; a missing or malformed index is a DataError."""
    file = Path(dataset_dir) / INDEX_FILE
    try:
        with open(file, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            _check_columns(file, reader.fieldnames)
            rows = [_check_row(file, line, row) for line, row in enumerate(reader, start=2)]
    except FileNotFoundError:
        raise DataError(f"{file}: no index; fetch the dataset first") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{file}: unreadable index ({err})") from err
    return Index(Path(dataset_dir), rows)


def write_index(dataset_dir: str | Path, rows: list[dict[str, str]]) -> Path:
    """Write `<dataset_dir>/index.csv` atomically; `path` and `split` lead the columns."""
    file = Path(dataset_dir) / INDEX_FILE
    write_text(file, _index_text(file, rows))
    return file


def _index_text(file: Path, rows: list[dict[str, str]]) -> str:
    columns = list(REQUIRED_COLUMNS)
    for row in rows:
        columns += [key for key in row if key not in columns]
    for line, row in enumerate(rows, start=2):
        _check_row(file, line, {**dict.fromkeys(columns, ""), **row})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def _check_columns(file: Path, columns) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in (columns or [])]
    if missing:
        raise DataError(f"{file}: missing column(s) {missing} (header: {columns or 'none'})")


def _check_row(file: Path, line: int, row: dict) -> dict:
    if None in row or None in row.values():
        raise DataError(f"{file}, line {line}: missing or extra fields")
    path = PurePosixPath(row["path"])
    if not row["path"] or path.is_absolute() or ".." in path.parts:
        raise DataError(f"{file}, line {line}: path {row['path']!r} is not relative to the dataset dir")
    if row["split"] not in SPLITS:
        raise DataError(f"{file}, line {line}: split {row['split']!r} is not one of {SPLITS}")
    return row


# ---------------------------------------------------------------- datasets


class AudioDataset(abc.ABC):
    """One corpus: how to get its raw files (`download`) and how to index them (`prepare`).

    Subclasses set `name` (the directory name, lower-case), `target_column` (or `targets`,
    when a task reads several columns) and `default_task`, and may override `verify` (check
    the gathered files) and `copy_from` (take files from a local mirror or directory).
    """

    name: str
    target_column: str = "label"
    #: The task preset used when the config has no `task:` block.
    default_task: str = "classification"
    #: An explicit local directory or archive (set by subclasses that accept one);
    #: when set, it wins over the `TYMPAN_DATA_MIRROR` mirror.
    source: str | None = None

    @property
    def targets(self) -> list[str]:
        """The index columns a task reads (subclasses with several targets override this)."""
        return [self.target_column]

    @abc.abstractmethod
    def download(self, dest: Path) -> None:
        """Put the raw files into `dest` (a staging dir that may hold a previous partial attempt)."""

    @abc.abstractmethod
    def prepare(self, dest: Path) -> list[dict[str, str]]:
        """Return the index rows for the files in `dest`."""

    def verify(self, dest: Path) -> None:  # noqa: B027 (optional hook, not abstract)
        """Raise DataError if the files in `dest` are incomplete or not what was expected."""

    def copy_from(self, src: Path, dest: Path) -> None:
        """Take the raw files from a local directory `src` (never modifying it) into `dest`."""
        files = [p for p in sorted(src.rglob("*")) if p.is_file()]
        for file in bar(files, desc=f"copy {self.name}", unit="file"):
            target = dest / file.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(file, target)

    def mirror(self) -> Path | None:
        """`$TYMPAN_DATA_MIRROR/<name>/` when that exists and no explicit source is set."""
        root = os.environ.get(MIRROR_ENV)
        if self.source or not root:
            return None
        path = Path(root) / self.name.lower()
        return path if path.is_dir() else None

    def fetch(self, root: str | Path, on_unreadable: str = "raise") -> Path:
        """Make `<root>/<name>/` hold the verified files and `index.csv`; return that dir.

        Does nothing if the files are there and verify, only rewrites the index if
        the splits changed, else fetches again. A failure leaves no `<root>/<name>/`;
        a partial download stays in `<root>/.<name>.partial/` and the next call resumes it.
        An empty audio file fails the fetch, or with `on_unreadable="skip"` (the dataset
        block's policy) stays indexed with a warning, for preprocessing to skip and report.
        """
        root = Path(root)
        final = root / self.name
        if self._is_complete(final, on_unreadable):
            self._reindex(final)
            return final
        staging = root / f".{self.name}.partial"
        staging.mkdir(parents=True, exist_ok=True)
        try:
            self._gather(staging)
            self.verify(staging)
            rows = self.prepare(staging)
            _check_empty(Index(staging, rows), on_unreadable)
            write_index(staging, rows)
        except BaseException:
            _discard_unless_resumable(staging)
            raise
        _replace_dir(staging, final)
        log.info("%s: %d files indexed in %s", self.name, len(rows), final / INDEX_FILE)
        return final

    def _gather(self, staging: Path) -> None:
        mirror = self.mirror()
        if mirror is not None:
            log.info("%s: taking files from the mirror %s", self.name, mirror)
            self.copy_from(mirror, staging)
        else:
            self.download(staging)

    def _is_complete(self, dataset_dir: Path, on_unreadable: str) -> bool:
        """A readable index whose files all exist (and are not empty, unless skipped), and files that verify."""
        if not (dataset_dir / INDEX_FILE).is_file():
            return False
        try:
            index = read_index(dataset_dir)
            missing = [row["path"] for row in index if not index.path_of(row).is_file()]
            if missing:
                raise DataError(f"{dataset_dir}: {len(missing)} indexed files missing, e.g. {missing[0]}")
            _check_empty(index, on_unreadable)
            self.verify(dataset_dir)
        except DataError as err:
            log.warning("%s; fetching again", err)
            return False
        return True

    def _reindex(self, dataset_dir: Path) -> None:
        """Rewrite the index if `prepare` now gives other rows (e.g. the splits changed)."""
        file = dataset_dir / INDEX_FILE
        text = _index_text(file, self.prepare(dataset_dir))
        if file.read_text(encoding="utf-8") == text:
            log.info("%s is already fetched in %s; nothing to do", self.name, dataset_dir)
        else:
            write_text(file, text)
            log.info("%s: files already fetched; index rewritten in %s", self.name, file)


def _check_empty(index: Index, on_unreadable: str) -> None:
    """Refuse an index that lists empty (0-byte) files, or only warn when they are to be skipped."""
    empty = [index.path_of(row) for row in index if index.path_of(row).stat().st_size == 0]
    if not empty:
        return
    if on_unreadable != "skip":
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise DataError(f"{empty[0]}: empty file (0 bytes){more}; set dataset.on_unreadable: skip to leave it out")
    log.warning("%d empty file(s), e.g. %s: preprocessing will skip them (on_unreadable: skip)", len(empty), empty[0])


def _replace_dir(src: Path, dest: Path) -> None:
    """Rename `src` to `dest`, moving an old `dest` out of the way first."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(src, dest)
        shutil.rmtree(old)
    else:
        os.replace(src, dest)


def _discard_unless_resumable(staging: Path) -> None:
    if any(staging.rglob("*.part")):
        log.warning("partial download kept in %s; fetch again to resume", staging)
    else:
        shutil.rmtree(staging, ignore_errors=True)


def link_or_copy(src: Path, dest: Path) -> None:
    """Hard-link `src` to `dest` when that cannot expose `src` to writes, else copy it.

    A hard link shares the file, so it is used only when `src` is read-only to
    us: then nothing done to `dest` can change the mirror it came from.
    """
    if dest.exists():
        dest.unlink()
    if not os.access(src, os.W_OK):
        try:
            os.link(src, dest)
            return
        except OSError:
            pass  # another file system, or links not allowed: copy instead
    shutil.copyfile(src, dest)


# ---------------------------------------------------------------- downloads


def download_file(url: str, dest: str | Path, sha256: str | None = None) -> Path:
    """Download `url` to `dest`, resuming `<dest>.part` with an HTTP Range request.

    `dest` appears only once the download is complete (and matches `sha256`
    when one is given); an interrupted download leaves just the `.part` file.
    """
    dest = Path(dest)
    if dest.is_file():
        _check_sha256(url, dest, sha256)
        return dest
    part = dest.with_name(dest.name + ".part")
    try:
        _fetch_to(url, part)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise DataError(f"{url}: download failed ({err}); fetch again to resume from {part}") from err
    _check_sha256(url, part, sha256)
    os.replace(part, dest)
    log.info("downloaded %s to %s", url, dest)
    return dest


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
        if offset and response.status != 206:
            offset = 0  # the server ignored the Range header and sent everything
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


def _check_sha256(url: str, file: Path, expected: str | None) -> None:
    if expected is None:
        return
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != expected.lower():
        file.unlink()
        raise DataError(f"{url}: sha256 is {digest.hexdigest()}, expected {expected}; removed {file}")
