"""A feature store being built: `<parent>/.<dataset>-features.partial/`, beside the store it becomes.

Each split's arrays are .npy files packed as they grow (`PackedFile`), its skipped files a JSON line
each (`SkipLog`), and `progress.json` says how much of them is valid, so a killed `tympan
preprocess` resumes where it stopped (`Staging`).
`tympan.store.extract` drives it; `Staging.finish` seals the files and moves the directory into
place in one step, replacing the store it rebuilds, so a reader finds the old store or the new one.
"""

from __future__ import annotations

import ctypes
import errno
import io
import itertools
import json
import logging
import math
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tympan.datasets.base import SPLITS, Index
from tympan.errors import DataError
from tympan.fileio import clear_leftovers, write_csv, write_json
from tympan.transforms.spec import Spec

log = logging.getLogger("tympan")

SKIPPED = "skipped.jsonl"  # a split's skipped files while staged; progress.json only counts them


def row_shape(stored: Spec) -> tuple[int, ...]:
    """The shape of one row of a split's packed array."""
    return {"waveform": (), "frames": (stored.size or 0,), "vector": (stored.size or 0,)}.get(
        stored.kind, tuple(stored.shape or ())
    )


class Staging:
    """A store being built: `<parent>/.<dataset>-features.partial/`, beside the store. Each split's packed
    arrays grow there chunk by chunk, and `progress.json`, rewritten (atomically) after the data it
    describes is written, says how much of them is valid. A build that finds it resumes from there,
    unless it was staged for another store key or does not add up: then it is discarded, saying
    why. Data is flushed to the OS, not synced to disk: a killed process loses nothing, and after a
    power cut, data shorter than progress.json says is caught here. `skipped` holds each split's
    skipped files ({at, path, reason}), which progress.json counts: a commit writes only the new
    ones, however many there are (rewriting them all each chunk made a build quadratic in them)."""

    def __init__(self, out: Path, dataset_name: str, key: str, stored: Spec, index: Index):
        self.out, self.key, self.stored, self.row_shape = out, key, stored, row_shape(stored)
        self.dir = out.parent / f".{dataset_name}-features.partial"
        self.progress: dict = {"key": key, "splits": {}}
        self.skipped: dict[str, list[dict]] = {}
        if self.dir.exists():
            problem = self._problem(index)
            if problem is None:
                clear_leftovers(self.dir)  # a progress.json being replaced when the build was killed
                self.progress = json.loads((self.dir / "progress.json").read_text())
                for split, done in self.progress["splits"].items():
                    self.skipped[split] = _skipped(self.dir / split / SKIPPED, done["skipped"])
                done = len(index) - self.files_left(index)
                log.info("resuming %s: %d of %d files were extracted already", out, done, len(index))
                return
            log.info("discarding %s: %s", self.dir, problem)
            shutil.rmtree(self.dir)
        self.dir.mkdir()

    def files_left(self, index: Index) -> int:
        return len(index) - sum(done["files"] for done in self.progress["splits"].values())

    def _problem(self, index: Index) -> str | None:
        """Why the staging directory cannot be resumed, or None."""
        try:
            progress = json.loads((self.dir / "progress.json").read_text())
        except (OSError, ValueError):
            return "no readable progress.json (killed before its first chunk?)"
        try:
            if progress["key"] != self.key:
                return "it was staged for another store key (another config or index)"
            previous_done = True
            for split in SPLITS:
                done, total = progress["splits"].get(split), len(index.split(split))
                if done is None:
                    previous_done = False
                    continue
                problem = None if previous_done else "staged before the split ahead of it was done"
                if problem or (problem := self._split_problem(split, done, total)):
                    return f"{split}: {problem}"
                previous_done = done["files"] == total
        except (KeyError, TypeError, ValueError, AttributeError):
            return "progress.json is malformed"
        return None

    def _split_problem(self, split: str, done: dict, total: int) -> str | None:
        files, clips, rows, skipped = int(done["files"]), int(done["clips"]), int(done["rows"]), int(done["skipped"])
        if not 0 <= files <= total or clips + skipped != files or skipped < 0:
            return f"its counts do not add up ({files} of {total} files, {clips} clips, {skipped} skipped)"
        try:
            _skipped(self.dir / split / SKIPPED, skipped)
        except (OSError, ValueError):
            return f"{SKIPPED} does not hold the {skipped} skipped files progress.json records"
        features, offsets = self.dir / split / "features.npy", self.dir / split / "offsets.npy"
        if _packed_rows(features, np.float32, self.row_shape) < rows:
            return f"features.npy holds fewer than the {rows} rows progress.json records"
        if _packed_rows(offsets, np.int64, ()) < clips + 1:
            return f"offsets.npy holds fewer than the {clips + 1} offsets progress.json records"
        if _packed_value(offsets, clips) != rows:
            return f"offsets.npy does not end at row {rows}, where progress.json says features.npy does"
        return None

    @contextmanager
    def arrays(self, split: str, done: dict):
        """The split's (features, offsets, skipped) to append to: what `done` records of them, or new."""
        directory = self.dir / split
        directory.mkdir(exist_ok=True)
        kept = done["files"] > 0
        features = PackedFile(directory / "features.npy", np.float32, self.row_shape, done["rows"] if kept else None)
        offsets = PackedFile(directory / "offsets.npy", np.int64, (), done["clips"] + 1 if kept else None)
        if not kept:
            offsets.append(np.zeros(1, np.int64))
        self.skipped[split] = self.skipped.get(split, []) if kept else []
        skipped = SkipLog(directory / SKIPPED, self.skipped[split])
        try:
            yield features, offsets, skipped
        finally:
            features.close()
            offsets.close()
            skipped.close()

    def as_rows(self, clip: np.ndarray, path: Path) -> np.ndarray:
        """A clip as rows of the packed array, once it is checked to be what the pipeline declares
        (packing bytes as they come would otherwise store a wrong shape without a word)."""
        if not self.stored.variable_length:
            if clip.shape == self.row_shape:
                return clip[None]
        elif clip.shape[1:] == self.row_shape and clip.ndim == 1 + len(self.row_shape):
            if self.stored.length is None or len(clip) == self.stored.length:
                return clip
        raise DataError(
            f"{path}: its features have shape {clip.shape}, but the pipeline declares {self.stored.describe()}"
        )

    def commit(self, *files: PackedFile | SkipLog) -> None:
        """Flush a split's files, then say in progress.json how much of them is valid."""
        for file in files:
            file.flush()
        write_json(self.dir / "progress.json", self.progress)

    def finish(self, index: Index, meta: dict) -> dict[str, int]:
        """Seal every split (headers with the final counts, index.csv), write meta.json last and
        move the directory into place as the store (replacing an outdated one); returns the clips per split."""
        counts, skipped = {}, []
        for split in SPLITS:
            done, directory = self.progress["splits"][split], self.dir / split
            _seal(directory / "features.npy", np.float32, (done["rows"], *self.row_shape))
            _seal(directory / "offsets.npy", np.int64, (done["clips"] + 1,))
            entries = self.skipped.get(split, [])
            left_out = {entry["at"] for entry in entries}
            write_csv(directory / "index.csv", [r for i, r in enumerate(index.split(split)) if i not in left_out])
            skipped += [{"path": e["path"], "split": split, "reason": e["reason"]} for e in entries]
            (directory / SKIPPED).unlink(missing_ok=True)
            counts[split] = done["clips"]
        if skipped:
            write_csv(self.dir / "skipped.csv", skipped)
            log.warning("skipped %d files that could not be used; listed in %s", len(skipped), self.out / "skipped.csv")
        (self.dir / "progress.json").unlink()
        write_json(self.dir / "meta.json", {**meta, "clips": counts, "skipped": skipped})
        _into_place(self.dir, self.out)
        return counts


def _into_place(staged: Path, out: Path) -> None:
    """Rename a finished store to `out`; a store already there (built from an older index or for
    another config) is exchanged with it in one step, then removed. A kill before the removal
    leaves the old store as the staging directory, which the next build discards."""
    if not out.exists():
        staged.rename(out)
        return
    if not _exchange(staged, out):  # no atomic exchange here: a reader may find no store for a moment
        old = out.parent / f".{out.name}.replaced"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staged.rename(out)
        staged = old
    shutil.rmtree(staged)


AT_FDCWD, RENAME_EXCHANGE = -100, 2  # from linux/fcntl.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 with RENAME_EXCHANGE); False where the kernel,
    the C library or the file system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(a), None, str(b))


class SkipLog:
    """A split's skipped files, a JSON line each, appended as they come to `entries` and the file. It
    starts with the entries recorded so far, which drops any line that a killed build wrote after."""

    def __init__(self, path: Path, entries: list[dict]):
        self.entries = entries
        self.file = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())
        for entry in entries:
            self.file.write(json.dumps(entry) + "\n")

    def append(self, entry: dict) -> None:
        self.entries.append(entry)
        self.file.write(json.dumps(entry) + "\n")

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _skipped(path: Path, count: int) -> list[dict]:
    """The first `count` entries of a split's SKIPPED file; a ValueError if it holds fewer."""
    if count == 0:
        return []
    with open(path, encoding="utf-8") as f:
        entries = [json.loads(line) for line in itertools.islice(f, count)]
    if len(entries) < count or not all(isinstance(e, dict) and {"at", "path", "reason"} <= e.keys() for e in entries):
        raise ValueError(f"{path}: fewer than {count} entries of skipped files")
    return entries


class PackedFile:
    """An .npy file packed as it grows: rows appended after a header that fits any row count.
    `_seal` writes the final count into the header, which makes the file np.save's bytes."""

    def __init__(self, path: Path, dtype, row: tuple[int, ...], keep: int | None):
        """A new file, or (`keep` rows) an existing one cut back to that many rows."""
        self.dtype = np.dtype(dtype)
        header = _npy_header(self.dtype, (0, *row))
        self.file = open(path, "wb" if keep is None else "r+b")  # noqa: SIM115 (closed by close())
        if keep is None:
            self.file.write(header)
        else:
            self.file.truncate(len(header) + keep * self.dtype.itemsize * math.prod(row))
            self.file.seek(0, os.SEEK_END)

    def append(self, rows: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(rows, dtype=self.dtype).data)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The header np.save writes for a C-ordered array of this dtype and shape. Its length does not
    depend on the first axis (numpy pads it for that axis to grow), so it can be rewritten in place."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def _read_header(file) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of an open .npy file; ValueError if it is none."""
    np.lib.format.read_magic(file)
    shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(file)
    if fortran_order:
        raise ValueError("Fortran order")
    return shape, dtype, file.tell()


def _packed_rows(path: Path, dtype, row: tuple[int, ...]) -> int:
    """Whole rows of `row` shape a packed file holds; -1 if it is missing or not packed for them."""
    try:
        with open(path, "rb") as f:
            shape, found, start = _read_header(f)
    except (OSError, ValueError):
        return -1
    if found != np.dtype(dtype) or tuple(shape[1:]) != tuple(row):
        return -1
    return (path.stat().st_size - start) // max(1, np.dtype(dtype).itemsize * math.prod(row))


def _packed_value(path: Path, i: int) -> int:
    """Item i of a packed 1-D int64 file."""
    with open(path, "rb") as f:
        _, _, start = _read_header(f)
        f.seek(start + 8 * i)
        return int(np.frombuffer(f.read(8), dtype=np.int64)[0])


def _seal(path: Path, dtype, shape: tuple[int, ...]) -> None:
    """Write the final shape into a packed file's header (cut to exactly that many rows first)."""
    header = _npy_header(np.dtype(dtype), shape)
    with open(path, "r+b") as f:
        _, _, start = _read_header(f)
        if start != len(header):
            raise RuntimeError(f"{path}: the .npy header would change length ({start} -> {len(header)} bytes)")
        f.truncate(start + np.dtype(dtype).itemsize * math.prod(shape))
        f.seek(0)
        f.write(header)
