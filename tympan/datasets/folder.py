"""Your own audio as one sub-folder per class: `<root>/<label>/**/<file>.wav`.

The label is the class folder's name. The split comes from a CSV with the columns `file` (a path
below `root`, starting with its class folder) and `split`, or, with `split: ratio`, from a seeded
shuffle of each class that gives it train/dev/test shares as close to `ratios` as its size
allows (stratified: every class is in every split it can fill). The same seed and files always
give the same split, and one class's files never move another's. Audio files in no row of a split
CSV are left out of the index, with a warning.

Fetching takes files as the table dataset does (see `table`): regular files whose real path lies
below `root` (links out of it only with `follow_symlinks: true`), into a copy named after `root`
unless `name:` is set. The split CSV, or with `split: ratio` the list of audio files, keys the
index: files added to `root` after a fetch need a new fetch.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at

from tympan.components import NonNegativeFloat, Says
from tympan.datasets.copies import digest, file_digest
from tympan.datasets.table import CopyName, LocalAudio, read_csv, relative_path, split_name
from tympan.errors import DataError

__all__ = ["AUDIO_SUFFIXES", "Folder"]

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au")
RATIO = "ratio"
Split = Annotated[str, at.MinLen(1), Says("'ratio' or the path of a CSV (file, split)")]


class Folder(LocalAudio):
    """Class folders below `root`, split by the CSV `split` or, when it is "ratio", by `ratios`."""

    target_column = "label"

    def __init__(
        self,
        root: str | Path,
        split: Split = RATIO,
        ratios: tuple[NonNegativeFloat, NonNegativeFloat, NonNegativeFloat] = (0.8, 0.1, 0.1),
        seed: int = 0,
        name: CopyName | None = None,
        follow_symlinks: bool = False,
    ):
        super().__init__(root, name, follow_symlinks)
        self.split = split
        self.ratios = tuple(float(r) for r in ratios)
        self.seed = seed

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        ratios = args["ratios"]
        if not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
            raise ValueError(
                f"ratios must be three non-negative shares (train, dev, test) adding up to 1, got {ratios!r}"
            )
        if not ratios[0] or not ratios[1]:
            raise ValueError(f"ratios must give train and dev a share, got {ratios!r}")

    def inputs(self) -> dict[str, str | None]:
        """The split CSV, or for a ratio split the audio files below `root` (their paths)."""
        if self.split != RATIO:
            return {self.split: file_digest(Path(self.split).expanduser())}
        try:
            return {str(self.root): digest(self._classes())}
        except DataError:
            return {str(self.root): None}

    def listing(self) -> list[dict[str, str]]:
        classes = self._classes()
        if self.split == RATIO:
            rows, where = self._ratio_rows(classes), str(self.root)
        else:
            rows, where = self._csv_rows(classes), self.split
        self.check_files(rows, where)
        self.check_splits(rows, where)
        return rows

    def _classes(self) -> dict[str, list[str]]:
        """Class name -> its audio files (sorted paths relative to `root`); every class has some."""
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such folder (one sub-folder of audio files per class)")
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise DataError(f"{self.root}: no class folders (one sub-folder of audio files per class)")
        classes = {}
        for folder in folders:
            files = [p for p in folder.rglob("*") if _is_audio(p, folder)]
            if not files:
                raise DataError(f"{folder}: a class folder without audio files ({', '.join(AUDIO_SUFFIXES)})")
            classes[folder.name] = sorted(p.relative_to(self.root).as_posix() for p in files)
        return classes

    def _ratio_rows(self, classes: dict[str, list[str]]) -> list[dict[str, str]]:
        rows = []
        for label, files in classes.items():
            shuffled = list(files)
            random.Random(f"{self.seed}/{label}").shuffle(shuffled)  # a str seed hashes the same in every process
            train, dev, _ = shares(len(shuffled), self.ratios)
            for i, path in enumerate(shuffled):
                split = "train" if i < train else "dev" if i < train + dev else "test"
                rows.append({"path": path, "split": split, "label": label})
        return sorted(rows, key=lambda row: row["path"])

    def _csv_rows(self, classes: dict[str, list[str]]) -> list[dict[str, str]]:
        file = Path(self.split).expanduser()
        _, lines = read_csv(file, ["file", "split"])
        rows, seen = [], set()
        for line, row in lines:
            where = f"{file}, line {line}"
            path = relative_path(row["file"], where)
            label = path.split("/")[0]
            if "/" not in path or label not in classes:
                raise DataError(f"{where}: file {path} is not in a class folder ({', '.join(classes)})")
            if path in seen:
                raise DataError(f"{where}: file {path} is listed twice")
            seen.add(path)
            rows.append({"path": path, "split": split_name(row["split"], where), "label": label})
        unlisted = sum(len(files) for files in classes.values()) - len(seen & _all(classes))
        if unlisted:
            log.warning("%s: %d audio file(s) below %s are in no split; left out", file, unlisted, self.root)
        return rows


def shares(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Split `n` items into counts close to `ratios` (largest remainders), giving each split
    with a share at least one item while another split can spare one."""
    exact = [n * r for r in ratios]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i in range(3):
        donor = max(range(3), key=lambda j: counts[j])
        if ratios[i] > 0 and counts[i] == 0 and counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return counts


def _is_audio(path: Path, folder: Path) -> bool:
    hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
    return path.suffix.lower() in AUDIO_SUFFIXES and not hidden and path.is_file()


def _all(classes: dict[str, list[str]]) -> set[str]:
    return {path for files in classes.values() for path in files}
