"""DCASE 2018 Task 3, bird audio detection: does a 10-second clip hold any bird sound (`hasbird`
1) or not (0)? The challenge's three development sets, 44.1 kHz mono WAV.

Facts and their sources:

- The task page (https://dcase.community/challenge2018/task-bird-audio-detection): three
  development sets from separate monitoring projects, each with its own balance, species,
  background and equipment, and "for every audio clip, you will be told which dataset it belongs
  to": freefield1010 (`ff1010bird`, 7,690 field recordings from Freesound, worldwide), Warblr
  (`warblrb10k`, 8,000 smartphone recordings, UK) and BirdVox-DCASE-20k (20,000 clips of remote
  flight-call monitoring, Ithaca NY). The evaluation sets' labels are not part of the
  development data, so the splits here are all drawn from these three.
- Audio: `ff1010bird_wav.zip` and `warblrb10k_public_wav.zip` on archive.org,
  `BirdVox-DCASE-20k.zip` on Zenodo (record 1208080); each holds `wav/<itemid>.wav`.
- Labels: the 2018 label CSVs on figshare (files 10853303, 10853306 and 10853300, the
  "data labels" links of the task page), each with the header `itemid,datasetid,hasbird`; the
  2016 challenge's figshare record documents `hasbird` (any audible bird sound, double-annotated).
- Checksums: none found as published for these six files (archive.org, figshare and Zenodo show
  them on their own pages, which were not at hand; soundata's loaders give one md5 for several
  different files, so not theirs), so each is fetched with checksum None: only a complete
  download and the label CSVs' own checks (every clip there, every row well formed) stand behind
  a fetch. Fill in `archives` when the checksums are known.

Splits: the challenge's goal is generalisation to unseen recording conditions, so test is one
whole development set (`test_set`, by default `warblrb10k`: autrainer's choice), and the others
are for training. Dev is either another whole set (`dev_set`, leave-one-dataset-out) or, by
default, `dev_fraction` (0.1) of the training sets' clips, drawn per (set, hasbird) with `seed`
(0), as reproducible as the files. Index columns: `hasbird` (the target, "0" or "1"),
`datasetid`, `itemid`.

Where autrainer differs (`autrainer/datasets/dcase_2018_t3.py`): train is ff1010bird +
BirdVox-DCASE-20k and test warblrb10k as here, but its dev is the test set itself unless
`dev_split` > 0 (its presets use 0.1 with seed 0: a random 10% of train, not stratified); here
dev never shares a clip with test.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import annotated_types as at

from tympan.components import NonNegativeInt
from tympan.datasets.corpus import About, Archive, Corpus
from tympan.datasets.dcase_common import held_out, read_table
from tympan.errors import DataError

__all__ = ["DCASE2018Task3", "SUBSETS"]

WAV = "wav"
#: datasetid -> its label CSV as published on figshare
SUBSETS = {
    "ff1010bird": "ff1010bird_metadata_2018.csv",
    "warblrb10k": "warblrb10k_public_metadata_2018.csv",
    "BirdVox-DCASE-20k": "BirdVoxDCASE20k_csvpublic.csv",
}
ARCHIVES = (
    Archive("https://archive.org/download/ff1010bird/ff1010bird_wav.zip"),
    Archive("https://archive.org/download/warblrb10k_public/warblrb10k_public_wav.zip"),
    Archive("https://zenodo.org/record/1208080/files/BirdVox-DCASE-20k.zip"),
    Archive("https://ndownloader.figshare.com/files/10853303", name=SUBSETS["ff1010bird"], extract=False),
    Archive("https://ndownloader.figshare.com/files/10853306", name=SUBSETS["warblrb10k"], extract=False),
    Archive("https://ndownloader.figshare.com/files/10853300", name=SUBSETS["BirdVox-DCASE-20k"], extract=False),
)
COLUMNS = ("itemid", "datasetid", "hasbird")
ITEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
Subset = Literal["ff1010bird", "warblrb10k", "BirdVox-DCASE-20k"]
Fraction = Annotated[float, at.Gt(0), at.Lt(1)]


class DCASE2018Task3(Corpus):
    """Bird audio detection (DCASE 2018 Task 3) on its three development sets: test one whole set
    (`test_set`), dev another (`dev_set`) or `dev_fraction` of the rest, train the rest."""

    name = "dcase2018_task3"
    target_column = "hasbird"
    default_task = "classification"
    archives = ARCHIVES
    marker = WAV
    layout = f"{WAV}/<itemid>.wav and the label CSVs {', '.join(SUBSETS.values())} (itemid,datasetid,hasbird)"
    about = About(
        task="bird sound present or not, hasbird 1/0 (classification)",
        classes=2,
        size="35,690 clips of 10 s (ff1010bird 7,690, warblrb10k 8,000, BirdVox-DCASE-20k 20,000), 99 h, 25.5 GB",
        license="CC BY (ff1010bird, warblrb10k: their figshare records); BirdVox-DCASE-20k: see Zenodo 1208080",
        homepage="https://dcase.community/challenge2018/task-bird-audio-detection",
    )

    def __init__(
        self,
        test_set: Subset = "warblrb10k",
        dev_set: Subset | None = None,
        dev_fraction: Fraction = 0.1,
        seed: NonNegativeInt = 0,
        source: str | None = None,
    ):
        self.test_set = test_set
        self.dev_set = dev_set
        self.dev_fraction = dev_fraction
        self.seed = seed
        self.source = source

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        if args["dev_set"] is not None and args["dev_set"] == args["test_set"]:
            raise ValueError(f"dev_set and test_set are both {args['test_set']}: dev needs another set, or null")

    def wanted(self, relative: PurePosixPath) -> bool:
        """The clips and the three label CSVs."""
        if relative.parent == PurePosixPath(WAV):
            return relative.suffix.lower() == ".wav"
        return relative.as_posix() in SUBSETS.values()

    def place(self, member: PurePosixPath) -> PurePosixPath | None:
        """Every clip of an audio archive goes to wav/ (each archive holds wav/<itemid>.wav)."""
        return PurePosixPath(WAV, member.name) if member.suffix.lower() == ".wav" else None

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        """One row per clip of the three label CSVs: split by set (and the seeded dev draw), the
        label, the set and the item id."""
        rows, seen = [], {}
        for subset, csv_name in SUBSETS.items():
            for where, row in read_table(dest / csv_name, "label CSV", COLUMNS):
                itemid, datasetid, hasbird = (row[c] for c in COLUMNS)
                if datasetid != subset:
                    raise DataError(f"{where}: datasetid {datasetid!r} in the label CSV of {subset}")
                if hasbird not in ("0", "1"):
                    raise DataError(f"{where}: hasbird {hasbird!r} is not 0 or 1")
                if not ITEM.match(itemid):
                    raise DataError(f"{where}: itemid {itemid!r} is not a clip name")
                path = f"{WAV}/{itemid}.wav"
                if path in seen:
                    raise DataError(f"{where}: itemid {itemid} is also listed at {seen[path]}")
                seen[path] = where
                if not (dest / path).is_file():
                    raise DataError(f"{where}: {path} is missing from the copy (expected the layout {self.layout})")
                split = "test" if subset == self.test_set else "dev" if subset == self.dev_set else "train"
                rows.append({"path": path, "split": split, "hasbird": hasbird, "datasetid": subset, "itemid": itemid})
        if self.dev_set is None:
            pool = [row for row in rows if row["split"] == "train"]
            for row in pool:
                row["stratum"] = f"{row['datasetid']}/{row['hasbird']}"
            dev = held_out(pool, self.dev_fraction, self.seed, group="path", stratum="stratum")
            for row in pool:
                del row["stratum"]
                if row["path"] in dev:
                    row["split"] = "dev"
        return rows
