"""DCASE 2020 Task 1A, acoustic scene classification across devices: TAU Urban Acoustic Scenes 2020
Mobile, development set. 10 scenes, 10-second mono segments at 44.1 kHz (24 bit) from 10 European
cities, recorded with 3 real devices (a, b, c) and simulated from device a for 6 more (s1-s6).

Facts and their sources:

- The dataset's README (the `.doc.zip` of Zenodo record 3819968, as quoted in soundata's
  `tau2020uas_mobile` loader) and the task page
  (https://dcase.community/challenge2020/task-acoustic-scene-classification): 23,040 segments
  (64 h): per scene 1,440 of device a and 108 of each of b, c, s1-s6, the other devices' segments
  being parallel recordings of device a's. The suggested train/test setup,
  `evaluation_setup/fold1_train.csv` (13,962 segments) and `fold1_evaluate.csv` (2,968), keeps each
  recording location in one subset and leaves s4-s6 out of training (test only); the rest of
  s4-s6 is in neither.
- The archives and md5 checksums, as on Zenodo record 3819968 and in the dataset authors'
  dcase_util (`dcase_util/datasets/tau.py`, TAUUrbanAcousticScenes_2020_Mobile_DevelopmentSet;
  soundata lists the same). The `.doc.zip` (README only) is not fetched.
- The layout: `TAU-urban-acoustic-scenes-2020-mobile-development/` holds
  `audio/<scene>-<city>-<location>-<segment>-<device>.wav` (e.g. `airport-barcelona-0-0-a.wav`),
  `meta.csv` and the evaluation setup's lists, all tab-separated with a header: `meta.csv` has
  `filename, scene_label, identifier, source_label` (identifier: `<city>-<location>`, the
  recording location; source_label: the device), `fold1_train.csv` and `fold1_evaluate.csv` have
  `filename, scene_label`.

Splits: test is `fold1_evaluate.csv`. The official setup has no dev subset, so dev is held out of
`fold1_train.csv` by recording location: per scene, whole locations (every device's parallel
recordings with them) drawn with `seed` (0) until they hold `dev_fraction` (0.1) of that scene's
training segments. No location is in two splits. Index columns: `scene_label` (the target),
`device`, `city`, `location` (meta.csv's identifier).

Where autrainer differs (`autrainer/datasets/dcase_2020_t1a.py`): by default its dev is the test
set; with `dev_split` (its presets: 0.1, seed 0) it holds out locations too, but its `location`
is the location number alone (`filename.split("-")[2]`), which joins the same-numbered
locations of different cities into one group, and it draws them across all scenes at once. Its
city and device columns are the file name's, the same values as here. The separate evaluation
set (Zenodo record 3685828) is not used by either: its reference labels are not part of the
published development data.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated

import annotated_types as at

from tympan.components import NonNegativeInt
from tympan.datasets.corpus import About, Archive, Corpus
from tympan.datasets.dcase_common import held_out, read_table
from tympan.errors import DataError

__all__ = ["DCASE2020Task1A", "SCENES"]

ROOT = "TAU-urban-acoustic-scenes-2020-mobile-development"
SCENES = (
    "airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall", "street_pedestrian",
    "street_traffic", "tram",
)  # fmt: skip
DEVICES = ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")
URL = "https://zenodo.org/record/3819968/files/"
MD5 = {
    "meta": "6eae9db553ce48e4ea246e34e50a3cf5",
    "audio.1": "b1e85b8a908d3d6a6ab73268f385d5c8",
    "audio.2": "4310a13cc2943d6ce3f70eba7ba4c784",
    "audio.3": "ed38956c4246abb56190c1e9b602b7b8",
    "audio.4": "97ab8560056b6816808dedc044dcc023",
    "audio.5": "b50f5e0bfed33cd8e52cb3e7f815c6cb",
    "audio.6": "fbf856a3a86fff7520549c899dc94372",
    "audio.7": "0dbffe7b6e45564da649378723284062",
    "audio.8": "bb6f77832bf0bd9f786f965beb251b2e",
    "audio.9": "a65596a5372eab10c78e08a0de797c9e",
    "audio.10": "2ad595819ffa1d56d2de4c7ed43205a6",
    "audio.11": "0ad29f7040a4e6a22cfd639b3a6738e5",
    "audio.12": "e5f4400c6b9697295fab4cf507155a2f",
    "audio.13": "8855ab9f9896422746ab4c5d89d8da2f",
    "audio.14": "092ad744452cd3e7de78f988a3d13020",
    "audio.15": "4b5eb85f6592aebf846088d9df76b420",
    "audio.16": "2e0a89723e58a3836be019e6996ae460",
}
ARCHIVES = tuple(Archive(f"{URL}{ROOT}.{part}.zip", f"md5:{md5}") for part, md5 in MD5.items())
META_COLUMNS = ("filename", "scene_label", "identifier", "source_label")
LIST_COLUMNS = ("filename", "scene_label")
Fraction = Annotated[float, at.Gt(0), at.Lt(1)]


class DCASE2020Task1A(Corpus):
    """TAU Urban Acoustic Scenes 2020 Mobile, development set (DCASE 2020 Task 1A): train and dev
    from fold1_train.csv (dev: `dev_fraction` of it, whole recording locations), test
    fold1_evaluate.csv."""

    name = "dcase2020_task1a"
    target_column = "scene_label"
    default_task = "classification"
    archives = ARCHIVES
    marker = f"{ROOT}/meta.csv"
    layout = (
        f"{ROOT}/audio/<scene>-<city>-<location>-<segment>-<device>.wav, {ROOT}/meta.csv and "
        f"{ROOT}/evaluation_setup/fold1_train.csv, fold1_evaluate.csv (tab-separated, with headers)"
    )
    about = About(
        task="10 urban acoustic scenes across 9 devices (classification)",
        classes=10,
        size="23,040 segments of 10 s (13,962 in fold 1 train, 2,968 in its test), 64 h, 44.1 kHz mono, 27.4 GB",
        license="TAU Urban Acoustic Scenes 2020 Mobile license: free for academic, non-commercial use",
        homepage="https://dcase.community/challenge2020/task-acoustic-scene-classification",
    )

    def __init__(self, dev_fraction: Fraction = 0.1, seed: NonNegativeInt = 0, source: str | None = None):
        self.dev_fraction = dev_fraction
        self.seed = seed
        self.source = source

    def wanted(self, relative: PurePosixPath) -> bool:
        """The audio, meta.csv and the evaluation setup's lists."""
        if len(relative.parts) < 2 or relative.parts[0] != ROOT:
            return False
        inner = PurePosixPath(*relative.parts[1:])
        if inner.parent == PurePosixPath("audio"):
            return inner.suffix.lower() == ".wav"
        if inner.parent == PurePosixPath("evaluation_setup"):
            return inner.suffix == ".csv"
        return inner.as_posix() == "meta.csv"

    def place(self, member: PurePosixPath) -> PurePosixPath | None:
        return member if self.wanted(member) else None

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        """Rows of fold1_train.csv (train, and dev held out by location) and fold1_evaluate.csv
        (test), each with its scene and meta.csv's device, city and location."""
        meta_file = dest / ROOT / "meta.csv"
        meta = {row["filename"]: (where, row) for where, row in read_table(meta_file, "meta file", META_COLUMNS, "\t")}
        setup = dest / ROOT / "evaluation_setup"
        rows, seen = [], {}
        for split, file in (("train", setup / "fold1_train.csv"), ("test", setup / "fold1_evaluate.csv")):
            for where, row in read_table(file, "list of the evaluation setup", LIST_COLUMNS, "\t"):
                name, scene = row["filename"], row["scene_label"]
                if name in seen:
                    raise DataError(f"{where}: {name} is also listed at {seen[name]}")
                seen[name] = where
                rows.append(self._row(dest, where, name, scene, split, meta, meta_file))
        dev = held_out(
            [row for row in rows if row["split"] == "train"], self.dev_fraction, self.seed, "location", "scene_label"
        )
        for row in rows:
            if row["split"] == "train" and row["location"] in dev:
                row["split"] = "dev"
        return rows

    def _row(self, dest, where, name, scene, split, meta, meta_file) -> dict[str, str]:
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or relative.parent != PurePosixPath("audio"):
            raise DataError(f"{where}: {name!r} is not a file of the audio/ folder")
        if scene not in SCENES:
            raise DataError(f"{where}: scene {scene!r} is not one of the 10 scenes ({', '.join(SCENES)})")
        if name not in meta:
            raise DataError(f"{meta_file}: no row for {name} (listed at {where})")
        meta_where, info = meta[name]
        if info["scene_label"] != scene:
            raise DataError(f"{meta_where}: scene {info['scene_label']!r} for {name}, but {scene!r} at {where}")
        device, location = info["source_label"], info["identifier"]
        if device not in DEVICES:
            raise DataError(f"{meta_where}: device {device!r} is not one of {', '.join(DEVICES)}")
        path = f"{ROOT}/{name}"
        if not (dest / path).is_file():
            raise DataError(f"{where}: {path} is missing from the copy (expected the layout {self.layout})")
        city = location.split("-")[0]  # the identifier is <city>-<location>
        return {"path": path, "split": split, "scene_label": scene, "device": device, "city": city,
                "location": location}  # fmt: skip
