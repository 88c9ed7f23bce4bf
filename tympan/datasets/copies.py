"""A fetched copy's own records: what it is a copy of, and one index per dataset block.

The audio of a corpus is fetched once into `<root>/<name>/` and shared by every config that uses
the corpus; each config's dataset block (its class and arguments, e.g. FSDD's speaker split)
makes its own index of it. The records live in the copy's `.tympan/` folder, versioned with the
audio by DVC:

  copy.json           what the folder is a copy of (`AudioDataset.copy_of`): a fetch of anything
                      else under this name is refused, so it never replaces another dataset's copy
  index-<key>.csv     the index of one dataset block; `key` digests the block's class, its
                      arguments (defaults included) and the content of the local files that its
                      `prepare` reads (a table's CSV), so an edited CSV needs a new fetch
  index-<key>.json    that block and those digests, for people and for error messages
  report-<key>.json   the data report of that index (files, durations, rates, classes or target
  report-<key>.md     ranges, unreadable files; see `tympan.datasets.report`), as data and as text

So one config's fetch never changes another's split, and a stage that finds no index of its own
block says which blocks' indexes there are instead.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from tympan.datasets.index import MAX_CSV_BYTES
from tympan.errors import DataError
from tympan.fileio import write_json

__all__ = [
    "META",
    "block_files",
    "block_indexes",
    "differences",
    "file_digest",
    "index_file",
    "key_of",
    "plain",
    "report_files",
]

META = ".tympan"
COPY_RECORD = "copy.json"
KEY_LENGTH = 12
SHOWN = 3  # how many other blocks an error describes


def plain(value: Any) -> Any:
    """`value` as JSON data (tuples as lists, paths as strings), so a block digests the same
    whether it came from YAML or from Python."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(plain(v) for v in value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def file_digest(path: Path) -> str | None:
    """The sha256 of a regular file's bytes; None when there is no such file. A file too large to
    be a CSV is not read (reading it refuses it): its size stands for its content."""
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_CSV_BYTES:
        return f"size {path.stat().st_size}"
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def key_of(record: dict) -> str:
    return digest({k: record[k] for k in ("dataset", "args", "inputs")})[:KEY_LENGTH]


def index_file(copy: Path, key: str) -> Path:
    return copy / META / f"index-{key}.csv"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_generated(file: Path, settings: dict) -> None:
    """A generated dataset's copy was made with `settings` (written to `file` last), else a DataError."""
    found = read_json(file)
    if found != settings:
        raise DataError(f"{file}: generated with other settings ({found}), not {settings}")


def copy_record(copy: Path) -> dict | None:
    record = read_json(copy / META / COPY_RECORD)
    return record if isinstance(record, dict) and "copy of" in record else None


def write_copy_record(copy: Path, copy_of: dict, made_by: str) -> None:
    write_json(copy / META / COPY_RECORD, {"copy of": copy_of, "made by": made_by})


def block_indexes(copy: Path) -> dict[str, dict]:
    """The dataset blocks that have an index in `copy`: {key: their record}."""
    found = {}
    for record_file in sorted((copy / META).glob("index-*.json")):
        key = record_file.stem.removeprefix("index-")
        record = read_json(record_file)
        if isinstance(record, dict) and index_file(copy, key).is_file() and {"dataset", "args"} <= set(record):
            found[key] = record
    return found


def write_block_index(copy: Path, key: str, record: dict, write: Callable[[TextIO], None]) -> bool:
    """Write a block's index (its record first, so an index never lacks one) and delete the indexes
    (and reports) that the same block made from earlier content of its inputs (they can no longer
    be used). `write(out)` writes the CSV text to `out`, a row at a time if it likes; the index is
    staged beside its place and replaces it only when complete. Returns False, touching nothing,
    when the index there already holds exactly that text."""
    file = index_file(copy, key)
    file.parent.mkdir(parents=True, exist_ok=True)
    staged = file.with_name(f".{file.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(staged, "x", encoding="utf-8", newline="") as out:
            write(out)
        if file.is_file() and filecmp.cmp(staged, file, shallow=False):
            staged.unlink()
            return False
        write_json(copy / META / f"index-{key}.json", record)
        os.replace(staged, file)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    for other, found in block_indexes(copy).items():
        if other != key and same_block(found, record):
            for stale in block_files(copy, other):
                stale.unlink(missing_ok=True)
    return True


def report_files(copy: Path, key: str) -> tuple[Path, Path]:
    """The data report of a block's index (see `tympan.datasets.report`): JSON and Markdown."""
    return copy / META / f"report-{key}.json", copy / META / f"report-{key}.md"


def block_files(copy: Path, key: str) -> list[Path]:
    """Every file a block keeps in a copy's records: its index, the index's record, its report."""
    return [index_file(copy, key), copy / META / f"index-{key}.json", *report_files(copy, key)]


def same_block(a: dict, b: dict) -> bool:
    return a.get("dataset") == b.get("dataset") and a.get("args") == b.get("args")


def differences(mine: dict, other: dict) -> str:
    """How another block differs from this one, e.g. "train_speakers ['george'] there, ['lucas'] here"."""
    if mine.get("dataset") != other.get("dataset"):
        return f"{other.get('dataset')} there, {mine.get('dataset')} here"
    args, theirs = mine.get("args", {}), other.get("args", {})
    changed = [k for k in sorted({*args, *theirs}) if args.get(k) != theirs.get(k)]
    if changed:
        return "; ".join(f"{k} {theirs.get(k)!r} there, {args.get(k)!r} here" for k in changed)
    mine_in, theirs_in = mine.get("inputs", {}), other.get("inputs", {})
    paths = [p for p in sorted({*mine_in, *theirs_in}) if mine_in.get(p) != theirs_in.get(p)]
    return f"made from other content of {', '.join(paths)}" if paths else "the same block"


def others_text(mine: dict, others: dict[str, dict]) -> str:
    """The other blocks' indexes in one line: each one's key and how it differs from `mine`."""
    shown = [f"index-{key}: {differences(mine, record)}" for key, record in list(others.items())[:SHOWN]]
    more = f" (and {len(others) - SHOWN} more)" if len(others) > SHOWN else ""
    return " | ".join(shown) + more
