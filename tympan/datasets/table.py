"""Your own audio, listed in a CSV: a file column (paths relative to `root`), a split column and
target columns; every other column is kept as metadata.

Nothing is downloaded: fetching links (or copies) the listed files into `<data root>/<name>/`,
keeping their relative paths, and writes the index. Split values are train, dev or test; dev may
also be written valid, validation or val, and case and surrounding spaces do not matter. Train
and dev must have rows; an empty test split is only a warning. Files at other sample rates are
fine: decoding resamples them to the rate the features ask for.

`LocalAudio` is the part shared with the folder dataset: audio already on this machine below a
root, listed by `listing()`.
"""

from __future__ import annotations

import abc
import csv
import logging
import re
from pathlib import Path, PurePosixPath

from tympan.datasets.base import INDEX_FILE, SPLITS, AudioDataset, link_or_copy
from tympan.errors import DataError
from tympan.progress import bar

__all__ = ["LocalAudio", "Table", "check_name", "read_csv", "relative_path", "split_name"]

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev", "val": "dev", "test": "test"}
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
SHOWN = 3  # how many missing files an error names


def split_name(value: str, where: str) -> str:
    """The split a CSV value names (train, dev or test), a DataError naming `where` otherwise."""
    split = SPLIT_NAMES.get(value.strip().lower())
    if split is None:
        raise DataError(f"{where}: split {value!r} is not train, dev (or valid, validation, val) or test")
    return split


def read_csv(file: Path, required: list[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and the (line number, row) pairs of a user's CSV that must have `required`.

    Columns with an empty name (a trailing comma) are dropped; a missing column, a short or long
    row or an unreadable file is a DataError naming the file."""
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [c for c in reader.fieldnames or [] if c]
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(f"{file}: no column {', '.join(map(repr, missing))} (columns: {', '.join(header)})")
            rows = []
            for line, row in enumerate(reader, start=2):
                if None in row or None in row.values():
                    raise DataError(f"{file}, line {line}: missing or extra fields")
                rows.append((line, {c: row[c] for c in header}))
    except FileNotFoundError:
        raise DataError(f"{file}: no such CSV file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{file}: unreadable CSV ({err})") from err
    return header, rows


def relative_path(value: str, where: str) -> str:
    """A file column value as a clean path below the root; absolute or `..` paths are refused."""
    path = PurePosixPath(value.strip())
    if not value.strip() or path.is_absolute() or ".." in path.parts:
        raise DataError(f"{where}: file {value!r} is not a path relative to the audio root")
    if str(path) == INDEX_FILE:
        raise DataError(f"{where}: file {value!r} would be overwritten by the dataset's index")
    return str(path)


class LocalAudio(AudioDataset):
    """Audio already below `root` on this machine; `listing()` gives its index rows (paths
    relative to `root`). Fetching links or copies exactly those files; the mirror is never used."""

    def __init__(self, root: str | Path, name: str):
        self.root = Path(root).expanduser()
        self.name = name
        self.source = str(self.root)  # an explicit source: $TYMPAN_DATA_MIRROR is not consulted

    @abc.abstractmethod
    def listing(self) -> list[dict[str, str]]:
        """The index rows (`path` relative to `root`, `split`, targets, metadata), all checked."""

    def download(self, dest: Path) -> None:
        for row in bar(self.listing(), desc=f"link {self.name}", unit="file"):
            target = dest / row["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(self.root / row["path"], target)

    def verify(self, dest: Path) -> None:
        """Every listed file is in `dest` with its source's size, so an edited listing or a
        replaced source file makes the next fetch take the files again."""
        for row in self.listing():
            src, dst = self.root / row["path"], dest / row["path"]
            if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
                raise DataError(f"{dst}: missing or not the same as {src}")

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        return self.listing()

    def check_files(self, rows: list[dict[str, str]], where: str) -> None:
        """Refuse rows whose audio is not below `root`, naming the first few and the count."""
        missing = [row["path"] for row in rows if not (self.root / row["path"]).is_file()]
        if missing:
            shown = ", ".join(missing[:SHOWN]) + (f" (and {len(missing) - SHOWN} more)" if len(missing) > SHOWN else "")
            raise DataError(f"{where}: {len(missing)} audio file(s) not found below {self.root}: {shown}")

    def check_splits(self, rows: list[dict[str, str]], where: str) -> None:
        """Train and dev must have rows (training needs both); an empty test split is a warning."""
        for split in SPLITS:
            if any(row["split"] == split for row in rows):
                continue
            if split == "test":
                log.warning("%s: the test split has no rows; test results will be missing", where)
            else:
                raise DataError(f"{where}: the {split} split has no rows (train and dev both need some)")


def check_name(name: object) -> None:
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"name must be a lower-case directory name (letters, digits, _ . -), got {name!r}")


class Table(LocalAudio):
    """Audio below `root` listed by the CSV `index` (default `<root>/index.csv`)."""

    def __init__(
        self,
        root: str | Path,
        index: str | Path | None = None,
        file_column: str = "file",
        split_column: str = "split",
        targets: list[str] | tuple[str, ...] = ("label",),
        name: str = "table",
        default_task: str = "classification",
    ):
        self.validate_args(root, index, file_column, split_column, targets, name, default_task)
        super().__init__(root, name)
        self.index = Path(index).expanduser() if index is not None else self.root / "index.csv"
        self.file_column = file_column
        self.split_column = split_column
        self._targets = list(targets)
        self.target_column = self._targets[0]
        self.default_task = default_task

    @staticmethod
    def validate_args(root, index, file_column, split_column, targets, name, default_task) -> None:
        for arg, value in {
            "file_column": file_column,
            "split_column": split_column,
            "default_task": default_task,
        }.items():
            if not isinstance(value, str) or not value:
                raise ValueError(f"{arg} must be a non-empty string, got {value!r}")
        if isinstance(targets, str):
            raise ValueError(f"targets must be a list of column names, got the string {targets!r}")
        if not targets or not all(isinstance(t, str) and t for t in targets):
            csv_file = index if index is not None else Path(root) / "index.csv"
            raise ValueError(f"targets must name the target column(s) of {csv_file}, got {targets!r}")
        if len(set(targets)) != len(targets):
            raise ValueError(f"targets lists a column twice: {list(targets)}")
        clash = {file_column, split_column} & set(targets)
        if file_column == split_column or clash:
            raise ValueError("file_column, split_column and targets must be different columns")
        check_name(name)

    @property
    def targets(self) -> list[str]:
        return list(self._targets)

    def listing(self) -> list[dict[str, str]]:
        header, lines = read_csv(self.index, [])
        self._check_header(header)
        metadata = [c for c in header if c not in (self.file_column, self.split_column, *self._targets)]
        rows, first_line = [], {}
        for line, row in lines:
            where = f"{self.index}, line {line}"
            path = relative_path(row[self.file_column], where)
            if path in first_line:
                raise DataError(f"{where}: file {path} is listed twice (first on line {first_line[path]})")
            first_line[path] = line
            empty = [t for t in self._targets if not row[t].strip()]
            if empty:
                raise DataError(f"{where}: no value in target column {empty[0]!r}")
            split = split_name(row[self.split_column], where)
            rows.append({"path": path, "split": split, **{c: row[c].strip() for c in [*self._targets, *metadata]}})
        self.check_files(rows, str(self.index))
        self.check_splits(rows, str(self.index))
        return rows

    def _check_header(self, header: list[str]) -> None:
        columns = f"(columns: {', '.join(header) or 'none'})"
        for arg, column in (("file_column", self.file_column), ("split_column", self.split_column)):
            if column not in header:
                raise DataError(f"{self.index}: no {arg} {column!r} {columns}")
        unknown = [t for t in self._targets if t not in header]
        if unknown:
            raise DataError(f"{self.index}: unknown target column(s) {', '.join(map(repr, unknown))} {columns}")
        own = {"path": "file_column", "split": "split_column"}
        clash = [c for c in own if c in header and c not in (self.file_column, self.split_column)]
        if clash:
            raise DataError(
                f"{self.index}: column {clash[0]!r} is the index's own; rename it or make it the {own[clash[0]]}"
            )
