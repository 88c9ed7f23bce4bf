"""The index of a fetched dataset, and reading CSV files that a user names.

An index is a CSV with one row a file: `path` (relative to the dataset's copy), `split`, target
column(s) and metadata. A user's CSV (a table's listing, a folder's split) may name any file at
all, a system file or `/dev/zero` included, so every CSV is read through `read_csv_text`: only a
regular file, at most `MAX_CSV_BYTES`, and an error names the file and the problem, never a line
of content that did not parse as a CSV with columns.
"""

from __future__ import annotations

import csv
import io
import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TextIO

from tympan.errors import DataError
from tympan.fileio import write_text

__all__ = ["MAX_CSV_BYTES", "REQUIRED_COLUMNS", "SPLITS", "Index", "read_csv_text", "read_index", "write_index"]

SPLITS = ("train", "dev", "test")
REQUIRED_COLUMNS = ("path", "split")
MAX_CSV_BYTES = 256 << 20  # millions of rows; far more is a wrong file, not a listing
SHOWN_HEADER = 200  # at most this many characters of a header in an error


class Index:
    """The rows of a dataset's index; paths resolve against `root`, the dataset's copy.
    `file` is where the rows came from, for error messages."""

    def __init__(self, root: Path, rows: list[dict[str, str]], file: Path | None = None):
        self.root = Path(root)
        self.rows = rows
        self.file = Path(file) if file is not None else self.root

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
            raise DataError(f"{self.file}: unknown split {name!r}, not one of {SPLITS}")
        return [row for row in self.rows if row["split"] == name]

    def labels(self, column: str) -> list[str]:
        """The sorted distinct values of a target column, e.g. the class names."""
        if self.rows and column not in self.rows[0]:
            raise DataError(f"{self.file}: no column {column!r} (has {self.columns})")
        return sorted({row[column] for row in self.rows})

    def path_of(self, row: dict[str, str]) -> Path:
        """The absolute path of a row's audio file."""
        return self.root / row["path"]


def read_csv_text(file: Path, what: str = "CSV file") -> str:
    """The text of `file`, which must be a regular UTF-8 file of at most MAX_CSV_BYTES.

    Opened without blocking (a FIFO must not hang the open) and checked after opening, so what is
    read is what was checked; a DataError names the file and the problem, not its content."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise DataError(f"{file}: no such {what}") from None
    except OSError as err:
        raise DataError(f"{file}: cannot open the {what} ({err.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_CSV_BYTES:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"{file}: not a regular file ({kind(info.st_mode)}), so not a {what}")
        raise DataError(f"{file}: larger than {MAX_CSV_BYTES >> 20} MiB, too large for a {what}")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_CSV_BYTES + 1)
        except OSError as err:
            raise DataError(f"{file}: cannot read the {what} ({err.strerror})") from None
    if len(data) > MAX_CSV_BYTES:
        raise DataError(f"{file}: larger than {MAX_CSV_BYTES >> 20} MiB, too large for a {what}")
    if b"\x00" in data:
        raise DataError(f"{file}: holds NUL bytes (byte {data.index(0)}): not text, so not a {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{file}: not UTF-8 text (byte {err.start}), so not a {what}") from None


def parse_csv(file: Path, text: str, what: str = "CSV file") -> tuple[list[str], list[tuple[int, dict]]]:
    """The header and the (line number, row) pairs of a CSV's text; csv's own errors name the file."""
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = list(reader.fieldnames or [])
        return header, list(enumerate(reader, start=2))
    except csv.Error as err:
        raise DataError(f"{file}: not a {what} ({err})") from None


def shown_header(header: list[str]) -> str:
    """The columns of a header, for an error: only when the line parsed as several columns (a
    one-column "header" is as likely the first line of some other file, which is not to be shown)."""
    if len(header) < 2:
        return "its first line is not a header of comma-separated columns"
    text = ", ".join(header)
    return f"columns: {text if len(text) <= SHOWN_HEADER else text[:SHOWN_HEADER] + '...'}"


def read_index(file: str | Path, root: str | Path) -> Index:
    """Read and check the index `file` of the copy `root`; a missing or malformed index is a DataError."""
    file = Path(file)
    header, lines = parse_csv(file, read_csv_text(file, "dataset index"), "dataset index")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(f"{file}: missing column(s) {missing} ({shown_header(header)})")
    rows = [_check_row(file, line, row) for line, row in lines]
    return Index(Path(root), rows, file)


def write_index(file: str | Path, rows: list[dict[str, str]]) -> Path:
    """Write the index `file` atomically; `path` and `split` lead the columns."""
    file = Path(file)
    write_text(file, index_text(file, rows))
    return file


def index_text(file: Path, rows: list[dict[str, str]]) -> str:
    """The CSV text of index rows (checked; `file` names where they go, for errors)."""
    text = io.StringIO()
    write_rows(text, file, index_columns(rows), rows)
    return text.getvalue()


def index_columns(rows: Iterable[dict[str, str]]) -> list[str]:
    """The columns of index rows: `path` and `split` first, then every other in order of appearance."""
    columns = dict.fromkeys(REQUIRED_COLUMNS)  # an ordered set: linear in the fields, however wide the rows
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def write_rows(out: TextIO, file: Path, columns: list[str], rows: Iterable[dict[str, str]]) -> int:
    """Write the CSV of `rows` (any iterable: one row at a time is checked and written) with
    `columns` to `out`; returns the row count. `file` names where they go, for errors."""
    writer = csv.DictWriter(out, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    count = 0
    for count, row in enumerate(rows, start=1):
        _check_row(file, count + 1, {"path": "", "split": "", **row})
        writer.writerow(row)
    return count


def _check_row(file: Path, line: int, row: dict) -> dict:
    if None in row or None in row.values():
        raise DataError(f"{file}, line {line}: missing or extra fields")
    path = PurePosixPath(row["path"])
    if not row["path"] or path.is_absolute() or ".." in path.parts:
        raise DataError(f"{file}, line {line}: path {row['path']!r} is not relative to the dataset dir")
    if row["split"] not in SPLITS:
        raise DataError(f"{file}, line {line}: split {row['split']!r} is not one of {SPLITS}")
    return row


def kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a character device"}
    kinds |= {stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}
    return next((name for test, name in kinds.items() if test(mode)), "not a file")
