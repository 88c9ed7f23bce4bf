"""DCASE 2016 Task 1, acoustic scene classification: TUT Acoustic Scenes 2016, 15 scenes, 30-second
binaural (2-channel) segments at 44.1 kHz, 24 bit.

Facts and their sources:

- The task page (https://dcase.community/challenge2016/task-acoustic-scene-classification) and the
  dataset's paper (Mesaros, Heittola & Virtanen, "TUT database for acoustic scene classification and
  sound event detection", EUSIPCO 2016): 15 scenes recorded in Finland, 3-5 minutes per location cut
  into 30 s segments; a development set of 1,170 segments (78 per scene) with a 4-fold
  cross-validation setup that keeps each location in one fold, and an evaluation set of 390
  segments (26 per scene) whose reference labels were published after the challenge.
- The archives and md5 checksums, as on Zenodo (records 45739 and 165995) and in the dataset
  authors' dcase_util (`dcase_util/datasets/tut.py`, TUTAcousticScenes_2016_DevelopmentSet and
  _EvaluationSet). The `.doc.zip` archives (README only) are not fetched.
- The layout: `TUT-acoustic-scenes-2016-development/` holds `audio/<location>_<start>_<end>.wav`
  (e.g. `a001_0_30.wav`), `meta.txt`, `error.txt` (error.zip: segments with audio errors, lines
  `<file> <begin> <end> <error>`) and `evaluation_setup/fold{1..4}_{train,evaluate,test}.txt`
  (tab-separated, no header: `audio/<file>.wav<TAB><scene>`; test lists the files only).
  `TUT-acoustic-scenes-2016-evaluation/` holds `audio/<n>.wav` (numbered), `meta.txt`
  (`audio/<n>.wav<TAB><scene>`) and `evaluation_setup/evaluate.txt`, whose third column is the
  segment's original name `<location>_<start>_<end>.wav`.

Splits: `fold` k (1-4) trains on `fold{k}_train.txt` and develops on `fold{k}_evaluate.txt` (the
official cross-validation fold); test is the evaluation set (its `meta.txt`). This is also
autrainer's split (`autrainer/datasets/dcase_2016_t1.py`, `fold`, default 1).

Where autrainer differs: it drops every segment listed in `error.txt` from all splits; the
official setup keeps them (the error list is information for participants, and the fold lists
include those segments). Here they stay, with the error in the `audio_error` column;
`drop_errors: true` drops them as autrainer does. autrainer also renames the evaluation files to
their original names; here they keep their published names, and the original name gives the
`location` column. Index columns: `scene_label` (the target), `location` (the recording location
id: segments of one location are never in two splits), `audio_error`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Literal

from tympan.datasets.corpus import About, Archive, Corpus
from tympan.datasets.dcase_common import read_lines
from tympan.errors import DataError

__all__ = ["DCASE2016Task1", "SCENES"]

log = logging.getLogger(__name__)

DEV = "TUT-acoustic-scenes-2016-development"
EVAL = "TUT-acoustic-scenes-2016-evaluation"
SCENES = (
    "beach", "bus", "cafe/restaurant", "car", "city_center", "forest_path", "grocery_store", "home", "library",
    "metro_station", "office", "park", "residential_area", "train", "tram",
)  # fmt: skip
DEV_URL = "https://zenodo.org/record/45739/files/"
EVAL_URL = "https://zenodo.org/record/165995/files/"
DEV_MD5 = {
    "meta": "779b33da2ebbf8bde494b3c981827251",
    "error": "a0d3e0d81b0a36ece87d0f3a9124a386",
    "audio.1": "e39546e65f2e72517b6335aaf0c8323d",
    "audio.2": "d36cf3253e2c041f68e937a3fe804807",
    "audio.3": "0393a9620ab882b1c26d884eccdcffdd",
    "audio.4": "fb3e4e0cd7ea82120ec07031dee558ce",
    "audio.5": "a19cf600b33c8f88f6ad607bafd74057",
    "audio.6": "591aad3219d1155342572cc1f6af5680",
    "audio.7": "9e6c1897789e6bce13ac69c6caedb7ab",
    "audio.8": "c4718354f48fcc9dfc7305f6cd8325c8",
}
EVAL_MD5 = {
    "meta": "0d5c131fc3f50c682de62e0e648aceba",
    "audio.1": "7c6c2e54b8a9c4c37a803b81446d16fe",
    "audio.2": "7930f1dc26707ab3ba9526073af87333",
    "audio.3": "17187d633d6402aee4b481122a1b28f0",
}
ARCHIVES = tuple(Archive(f"{DEV_URL}{DEV}.{part}.zip", f"md5:{md5}") for part, md5 in DEV_MD5.items()) + tuple(
    Archive(f"{EVAL_URL}{EVAL}.{part}.zip", f"md5:{md5}") for part, md5 in EVAL_MD5.items()
)
Fold = Literal[1, 2, 3, 4]


class DCASE2016Task1(Corpus):
    """TUT Acoustic Scenes 2016 (DCASE 2016 Task 1): train and dev are the official
    cross-validation `fold` (1-4) of the development set, test the evaluation set."""

    name = "dcase2016_task1"
    target_column = "scene_label"
    default_task = "classification"
    archives = ARCHIVES
    marker = f"{DEV}/evaluation_setup/fold1_train.txt"
    layout = (
        f"{DEV}/audio/*.wav, {DEV}/meta.txt, {DEV}/error.txt, {DEV}/evaluation_setup/fold<k>_{{train,evaluate}}.txt, "
        f"{EVAL}/audio/*.wav, {EVAL}/meta.txt (and {EVAL}/evaluation_setup/evaluate.txt)"
    )
    about = About(
        task="15 acoustic scenes (classification)",
        classes=15,
        size="1,560 segments of 30 s (1,170 development, 390 evaluation), 13 h, 44.1 kHz stereo, 10.6 GB",
        license="TUT Acoustic Scenes 2016 license: free for academic, non-commercial use",
        homepage="https://dcase.community/challenge2016/task-acoustic-scene-classification",
    )

    def __init__(self, fold: Fold = 1, drop_errors: bool = False, source: str | None = None):
        self.fold = fold
        self.drop_errors = drop_errors
        self.source = source

    def wanted(self, relative: PurePosixPath) -> bool:
        """The audio, the lists of the evaluation setup, meta.txt and error.txt of both sets."""
        if len(relative.parts) < 2 or relative.parts[0] not in (DEV, EVAL):
            return False
        inner = PurePosixPath(*relative.parts[1:])
        if inner.parent == PurePosixPath("audio"):
            return inner.suffix.lower() == ".wav"
        if inner.parent == PurePosixPath("evaluation_setup"):
            return inner.suffix == ".txt"
        return inner.as_posix() in ("meta.txt", "error.txt")

    def place(self, member: PurePosixPath) -> PurePosixPath | None:
        return member if self.wanted(member) else None

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        """Rows of fold `fold`'s train and evaluate lists (train, dev) and of the evaluation set's
        meta.txt (test), each with its scene, recording location and audio error, if any."""
        errors = self._errors(dest / DEV / "error.txt")
        setup = dest / DEV / "evaluation_setup"
        rows, seen = [], {}
        lists = {"train": setup / f"fold{self.fold}_train.txt", "dev": setup / f"fold{self.fold}_evaluate.txt"}
        for split, file in lists.items():
            for where, (name, scene, *_) in read_lines(file, "list of the evaluation setup", 2):
                if self.drop_errors and name in errors:
                    continue
                rows.append(self._row(dest, DEV, where, name, scene, split, _location(name), errors.get(name, "")))
                if name in seen:
                    raise DataError(f"{where}: {name} is also listed at {seen[name]}")
                seen[name] = where
        original = self._original_names(dest / EVAL / "evaluation_setup" / "evaluate.txt")
        for where, (name, scene, *_) in read_lines(dest / EVAL / "meta.txt", "meta file of the evaluation set", 2):
            rows.append(self._row(dest, EVAL, where, name, scene, "test", _location(original.get(name, "")), ""))
        kept = sum(1 for row in rows if row["audio_error"])
        if kept:
            log.info("%s: %d segment(s) with audio errors kept (drop_errors: true leaves them out)", self.name, kept)
        return rows

    def _row(self, dest, folder, where, name, scene, split, location, error) -> dict[str, str]:
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or relative.parent != PurePosixPath("audio"):
            raise DataError(f"{where}: {name!r} is not a file of the audio/ folder")
        if scene not in SCENES:
            raise DataError(f"{where}: scene {scene!r} is not one of the 15 scenes ({', '.join(SCENES)})")
        path = f"{folder}/{name}"
        if not (dest / path).is_file():
            raise DataError(f"{where}: {path} is missing from the copy (expected the layout {self.layout})")
        return {"path": path, "split": split, "scene_label": scene, "location": location, "audio_error": error}

    @staticmethod
    def _errors(file: Path) -> dict[str, str]:
        """File -> its audio errors ("<begin>-<end> s: <error>", several joined by "; ")."""
        found = defaultdict(list)
        for where, fields in read_lines(file, "error list", 2):
            name, rest = fields[0], [f for f in fields[1:] if f]
            if len(rest) >= 3:
                found[name].append(f"{rest[0]}-{rest[1]} s: {' '.join(rest[2:])}")
            elif rest:
                found[name].append(" ".join(rest))
            else:
                raise DataError(f"{where}: no error given for {name}")
        return {name: "; ".join(texts) for name, texts in found.items()}

    @staticmethod
    def _original_names(file: Path) -> dict[str, str]:
        """Evaluation file -> its original `<location>_<start>_<end>.wav` name (empty without the list)."""
        if not file.is_file():
            log.info("%s: no %s, so the test split has no location column", DCASE2016Task1.name, file)
            return {}
        return {fields[0]: fields[2] for _, fields in read_lines(file, "evaluation list", 2) if len(fields) > 2}


def _location(name: str) -> str:
    """The recording location of a segment named `<location>_<start>_<end>.wav` ("" for another name)."""
    stem = PurePosixPath(name).stem
    return stem.split("_")[0] if stem.count("_") == 2 else ""
