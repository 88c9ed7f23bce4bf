"""Your own audio, listed in a CSV: a file column (paths relative to `root`), a split column and
target columns; every other column is kept as metadata.

Nothing is downloaded: fetching links (or copies) the listed files into `<data root>/<name>/`,
keeping their relative paths and permissions, and writes the index. Only regular files whose
real path lies below `root` are taken (`follow_symlinks: true` also takes links that point out
of it), so a link cannot pull a file from elsewhere into data that DVC pushes. File names are
taken exactly as written, spaces included.

The copy is shared by every block over the same `root` (a table and a folder dataset, or two
CSVs of one root): each fetch adds its own files and its own index, and never removes another's.
Without `name:`, the copy's folder is named after `root` plus a short hash of it (`clips-1a2b3c4d`
for `/data/clips`), so two roots never share a folder; with a `name:` that another root's copy
already has, the fetch is refused. Set `name:` for a folder name that DVC's outs can list.

Split values are train, dev or test; dev may also be written valid, validation or val, and case
and surrounding spaces do not matter. Train and dev must have rows; an empty test split is only a
warning. Files at other sample rates are fine: decoding resamples them to the rate the features
ask for.

`LocalAudio` is the part shared with the folder dataset: audio already on this machine below a
root, listed by `listing()`.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import re
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from typing import Annotated, Any

import annotated_types as at

from tympan.components import Says
from tympan.datasets.base import SPLITS, AudioDataset, link_or_copy
from tympan.datasets.copies import META, file_digest
from tympan.datasets.index import parse_csv, read_csv_text, shown_header
from tympan.errors import DataError
from tympan.progress import bar

__all__ = ["CopyName", "LocalAudio", "Table", "default_name", "read_csv", "relative_path", "split_name"]

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev", "val": "dev", "test": "test"}
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
CopyName = Annotated[str, at.Predicate(NAME.fullmatch), Says("a lower-case directory name (letters, digits, _ . -)")]
Filled = Annotated[str, at.MinLen(1), Says("a non-empty string")]
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
    row, a file that is not a regular UTF-8 file or is too large is a DataError naming the file
    (see `index.read_csv_text`: no content is shown of a file that did not parse as CSV)."""
    fields, lines = parse_csv(file, read_csv_text(file))
    header = [c for c in fields if c]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{file}: no column {', '.join(map(repr, missing))} ({shown_header(header)})")
    rows = []
    for line, row in lines:
        if None in row or None in row.values():
            raise DataError(f"{file}, line {line}: missing or extra fields")
        rows.append((line, {c: row[c] for c in header}))
    return header, rows


def relative_path(value: str, where: str) -> str:
    """A file column value as a path below the root, exactly as written (a name may begin or end
    with spaces); absolute or `..` paths, and paths into the copy's own records, are refused."""
    path = PurePosixPath(value)
    if not value.strip() or path.is_absolute() or ".." in path.parts:
        raise DataError(f"{where}: file {value!r} is not a path relative to the audio root")
    if path.parts[0] == META:
        raise DataError(f"{where}: file {value!r} is in {META}/, where the fetched copy keeps its indexes")
    return str(path)


def default_name(root: str) -> str:
    """The copy's folder for a dataset without `name:`: the root's own name plus a hash of the
    root, so that different roots never share a folder (`/data/clips` -> `clips-1a2b3c4d`)."""
    stem = re.sub(r"[^a-z0-9_.-]+", "-", Path(root).name.lower()).strip("-._")[:40] or "audio"
    return f"{stem}-{hashlib.sha256(root.encode()).hexdigest()[:8]}"


class LocalAudio(AudioDataset):
    """Audio already below `root` on this machine; `listing()` gives its index rows (paths
    relative to `root`). Fetching links or copies exactly those files, adding them to the copy of
    `root` that other blocks share; the mirror is never used."""

    adds_in_place = True

    def __init__(self, root: str | Path, name: CopyName | None, follow_symlinks: bool = False):
        # `source` is the root as written (expanded and normalised), not resolved: a relative root
        # means the same folder of the project in every clone, so a copy pulled with DVC is its copy
        self.source = os.path.normpath(os.path.expanduser(str(root)))
        self.root = Path(self.source)
        self.name = name if name is not None else default_name(self.source)
        self.follow_symlinks = follow_symlinks

    def copy_of(self) -> dict:
        """Local audio below `root`: any block over the same root shares the copy."""
        return {"local audio below": self.source}

    @abc.abstractmethod
    def listing(self) -> list[dict[str, str]]:
        """The index rows (`path` relative to `root`, `split`, targets, metadata), all checked."""

    def download(self, dest: Path) -> None:
        """Link or copy the listed files that `dest` lacks (or has at another size), each atomically."""
        for row in bar(self.listing(), desc=f"link {self.name}", unit="file"):
            src, target = self.source_file(row["path"]), dest / row["path"]
            if src is None:
                raise DataError(f"{self.root / row['path']}: gone since it was listed")
            if target.is_file() and target.stat().st_size == src.stat().st_size:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(src, target)

    def verify(self, dest: Path) -> None:
        """Every listed file is in `dest` with its source's size, so an edited listing or a
        replaced source file makes the next fetch take the files again."""
        for row in self.listing():
            src, dst = self.source_file(row["path"]), dest / row["path"]
            if src is None or not dst.is_file() or dst.stat().st_size != src.stat().st_size:
                raise DataError(f"{dst}: missing or not the same as {self.root / row['path']}")

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        return self.listing()

    def source_file(self, path: str) -> Path | None:
        """The real file to take for a listed `path`, None if there is none. A DataError if it is
        not a regular file, or if its real path lies outside `root` (unless follow_symlinks)."""
        file = self.root / path
        real = file.resolve()
        if not self.follow_symlinks and not real.is_relative_to(self.root.resolve()):
            raise DataError(
                f"{file}: a link to a file outside {self.root}, not taken; "
                "set dataset.args.follow_symlinks: true to take links out of the root"
            )
        try:
            mode = real.stat().st_mode
        except OSError:
            return None
        if not S_ISREG(mode):
            raise DataError(f"{file}: not a regular file (only regular audio files are taken)")
        return real

    def check_files(self, rows: list[dict[str, str]], where: str) -> None:
        """Refuse rows whose audio is not a regular file below `root`, naming the first few and the count."""
        missing = [row["path"] for row in rows if self.source_file(row["path"]) is None]
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


class Table(LocalAudio):
    """Audio below `root` listed by the CSV `index` (default `<root>/index.csv`)."""

    def __init__(
        self,
        root: str | Path,
        index: str | Path | None = None,
        file_column: Filled = "file",
        split_column: Filled = "split",
        targets: list[str] | tuple[str, ...] = ("label",),
        name: CopyName | None = None,
        default_task: Filled = "classification",
        follow_symlinks: bool = False,
    ):
        super().__init__(root, name, follow_symlinks)
        self.csv = Path(index).expanduser() if index is not None else self.root / "index.csv"
        self.file_column = file_column
        self.split_column = split_column
        self._targets = list(targets)
        self.target_column = self._targets[0]
        self.default_task = default_task

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        targets = args["targets"]
        if not targets or not all(targets):
            csv_file = args["index"] if args["index"] is not None else Path(args["root"]) / "index.csv"
            raise ValueError(f"targets must name the target column(s) of {csv_file}, got {targets!r}")
        if len(set(targets)) != len(targets):
            raise ValueError(f"targets lists a column twice: {list(targets)}")
        if len({args["file_column"], args["split_column"], *targets}) != 2 + len(targets):
            raise ValueError("file_column, split_column and targets must be different columns")

    @property
    def targets(self) -> list[str]:
        return list(self._targets)

    def inputs(self) -> dict[str, str | None]:
        """The CSV: an edit after fetching needs a new fetch (its digest keys the index)."""
        return {str(self.csv): file_digest(self.csv)}

    def listing(self) -> list[dict[str, str]]:
        header, lines = read_csv(self.csv, [])
        self._check_header(header)
        metadata = [c for c in header if c not in (self.file_column, self.split_column, *self._targets)]
        rows, first_line = [], {}
        for line, row in lines:
            where = f"{self.csv}, line {line}"
            path = relative_path(row[self.file_column], where)
            if path in first_line:
                raise DataError(f"{where}: file {path} is listed twice (first on line {first_line[path]})")
            first_line[path] = line
            empty = [t for t in self._targets if not row[t].strip()]
            if empty:
                raise DataError(f"{where}: no value in target column {empty[0]!r}")
            split = split_name(row[self.split_column], where)
            rows.append({"path": path, "split": split, **{c: row[c].strip() for c in [*self._targets, *metadata]}})
        self.check_files(rows, str(self.csv))
        self.check_splits(rows, str(self.csv))
        return rows

    def _check_header(self, header: list[str]) -> None:
        columns = f"({shown_header(header)})"
        for arg, column in (("file_column", self.file_column), ("split_column", self.split_column)):
            if column not in header:
                raise DataError(f"{self.csv}: no {arg} {column!r} {columns}")
        unknown = [t for t in self._targets if t not in header]
        if unknown:
            raise DataError(f"{self.csv}: unknown target column(s) {', '.join(map(repr, unknown))} {columns}")
        own = {"path": "file_column", "split": "split_column"}
        clash = [c for c in own if c in header and c not in (self.file_column, self.split_column)]
        if clash:
            raise DataError(
                f"{self.csv}: column {clash[0]!r} is the index's own; rename it or make it the {own[clash[0]]}"
            )
