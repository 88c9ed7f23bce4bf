"""MSP-Podcast: natural emotional speech from podcasts (UT Dallas MSP lab), 16 kHz 16-bit mono WAV
speaking turns, each with a consensus emotion category and arousal, valence and dominance scores.

The corpus is not public: it is licensed for academic research by UT Dallas on request (Carlos
Busso; https://ecs.utdallas.edu/research/researchlabs/msp-lab/MSP-Podcast.html). `source: /folder`
names a release as distributed; from it only these are taken:

- `Audios/<FileName>` (e.g. `MSP-PODCAST_0001_0008.wav`);
- `Labels/labels_consensus.csv`, columns `FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender,
  Split_Set` (the other label files, transcripts and forced alignments stay out).

Facts, from the corpus's documentation (Lotfian & Busso, IEEE Trans. Affective Computing 2019,
doi:10.1109/TAFFC.2017.2736999, and the release notes): `EmoClass` is the consensus primary
category, A (anger), S (sadness), H (happiness), U (surprise), F (fear), D (disgust), C (contempt),
N (neutral), O (other) or X (no agreement among the labellers, so no category); `EmoAct`, `EmoVal`
and `EmoDom` are the mean arousal (activation), valence and dominance ratings on a 1-7 scale;
`SpkrID` is a number or `Unknown`, `Gender` Female, Male or Unknown. `Split_Set` is the published,
speaker-independent partition: Train, Development, Test1 and (from release 1.7) Test2, collected
without the retrieval by emotion models that selected the other sets; release 1.11 adds Test3,
whose labels are withheld.

Two datasets over one copy:

- `MSPPodcast`: categorical emotion (`emotion`, the `EmoClass` code), classification. `classes`
  keeps the eight primary emotions by default (A S H U F D C N: the categories the release notes
  and the Odyssey 2024 challenge score); X has no category and is never a class, O only if named.
  `classes: [A, H, N, S]` is the 4-class task of the literature (autrainer's "big4").
- `MSPPodcastAVD`: `dimensions` (any of arousal, valence, dominance; all three by default) as
  regression targets, over every labelled turn, X included (the ratings exist without a category).

Splits: Train, Development, and `test_set` (Test1 by default, as autrainer, which uses Test1 alone
after Test2 was found to be gender-biased, doi:10.21437/Interspeech.2019-1708; Test2 if named);
rows of the other sets are left out. Rows with an empty target (e.g. labels withheld) are left out,
with a count logged. Unknown speakers and genders are kept, with the corpus's value `Unknown`: the
partition is the corpus's own, so they need no speaker split. Index columns: `emotion`, `arousal`,
`valence`, `dominance`, `speaker`, `gender`.

Where autrainer's module differs from the corpus's documentation: its default categorical
configuration keeps every `EmoClass` value, X (no agreement) and O included, as classes; here X is
never a class and O is not one by default. It takes one class for both tasks, choosing the task from
its target column; here the two tasks are two classes (each with its own default task) on one copy.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import annotated_types as at

from tympan.datasets.corpus import About, Corpus
from tympan.datasets.index import parse_csv, read_csv_text, shown_header
from tympan.errors import DataError

__all__ = ["MSPPodcast", "MSPPodcastAVD"]

log = logging.getLogger(__name__)

AUDIOS = "Audios"
LABELS = "Labels/labels_consensus.csv"
HOMEPAGE = "https://ecs.utdallas.edu/research/researchlabs/msp-lab/MSP-Podcast.html"
COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")
CODES = {"A": "anger", "S": "sadness", "H": "happiness", "U": "surprise", "F": "fear", "D": "disgust",
         "C": "contempt", "N": "neutral", "O": "other", "X": "no agreement"}  # fmt: skip
PRIMARY = ("A", "S", "H", "U", "F", "D", "C", "N")
SPLIT_SETS = ("Train", "Development", "Test1", "Test2", "Test3")
DIMENSIONS = {"arousal": "EmoAct", "valence": "EmoVal", "dominance": "EmoDom"}
LAYOUT = f"{AUDIOS}/<FileName>.wav (16 kHz) and {LABELS} (columns {', '.join(COLUMNS)})"

Emotion = Literal["A", "S", "H", "U", "F", "D", "C", "N", "O"]
Dimension = Literal["arousal", "valence", "dominance"]
TestSet = Literal["Test1", "Test2"]


class MSPPodcast(Corpus):
    """MSP-Podcast's categorical emotions (`emotion`, the `EmoClass` code): `classes` kept (the eight
    primary by default), splits Train, Development and `test_set`."""

    name = "msp_podcast"
    target_column = "emotion"
    default_task = "classification"
    request = HOMEPAGE
    layout = LAYOUT
    marker = LABELS
    about = About(
        task="8 primary emotions (classification), or arousal/valence/dominance (MSPPodcastAVD, regression)",
        classes=len(PRIMARY),
        size="over 100,000 speaking turns, hundreds of hours (grows with each release), 16 kHz",
        license="MSP-Podcast academic license (UT Dallas)",
        access="on request",
        homepage=HOMEPAGE,
    )

    def __init__(
        self,
        classes: Annotated[list[Emotion], at.MinLen(2)] = PRIMARY,
        test_set: TestSet = "Test1",
        source: str | None = None,
    ):
        self.classes = tuple(classes)
        self.test_set = test_set
        self.source = source

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        classes = list(args["classes"])
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes lists an emotion twice: {classes}")

    def copy_of(self) -> dict:
        """MSPPodcast's own copy, for either task: the same corpus."""
        return {"dataset": f"{MSPPodcast.__module__}:{MSPPodcast.__name__}"}

    def wanted(self, relative: PurePosixPath) -> bool:
        """The audio and the consensus labels; the rest of a release stays out."""
        if relative.parent == PurePosixPath(AUDIOS):
            return relative.suffix.lower() == ".wav"
        return relative.as_posix() == LABELS

    def keep(self, row: dict[str, str]) -> bool:
        """Whether a turn with a target is in this dataset (its emotion is one of `classes`)."""
        return row["emotion"] in self.classes

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        """One row per turn of Train, Development and `test_set` with this dataset's target(s)."""
        file = dest / LABELS
        header, lines = parse_csv(file, read_csv_text(file, "label file"), "label file")
        absent = [c for c in COLUMNS if c not in header]
        if absent:
            raise DataError(f"{file}: missing column(s) {', '.join(absent)} ({shown_header(header)})")
        splits = {"Train": "train", "Development": "dev", self.test_set: "test"}
        rows, unlabelled, seen = [], Counter(), set()
        for number, line in lines:
            row = _checked(file, number, line)
            if row["FileName"] in seen:
                raise DataError(f"{file}:{number}: {row['FileName']} is listed twice")
            seen.add(row["FileName"])
            split = splits.get(row["Split_Set"])
            if split is None:
                continue
            out = {
                "path": f"{AUDIOS}/{row['FileName']}",
                "split": split,
                "emotion": row["EmoClass"],
                **{name: row[column] for name, column in DIMENSIONS.items()},
                "speaker": row["SpkrID"],
                "gender": row["Gender"],
            }
            if any(not out[t] or out[t] == "X" for t in self.targets):
                unlabelled[row["Split_Set"]] += 1
                continue
            if not self.keep(out):
                continue
            if not (dest / out["path"]).is_file():
                raise DataError(f"{file}:{number}: {out['path']} is missing from the copy ({LAYOUT})")
            rows.append(out)
        if unlabelled:
            counts = ", ".join(f"{n} of {s}" for s, n in sorted(unlabelled.items()))
            log.info("%s: turns without %s left out: %s", self.name, "/".join(self.targets), counts)
        for split in ("train", "dev", "test"):
            if not any(row["split"] == split for row in rows):
                wanted = next(s for s, sp in splits.items() if sp == split)
                raise DataError(f"{file}: no labelled turns of {wanted} for {'/'.join(self.targets)}")
        return rows


class MSPPodcastAVD(MSPPodcast):
    """MSP-Podcast's emotional dimensions as regression targets (`dimensions`: arousal, valence,
    dominance, 1-7), over every labelled turn of Train, Development and `test_set`; MSPPodcast's copy."""

    target_column = "arousal"
    default_task = "regression"
    about = About(
        task="arousal, valence, dominance ratings 1-7 (regression)",
        classes=None,
        size=MSPPodcast.about.size,
        license=MSPPodcast.about.license,
        access="on request",
        homepage=HOMEPAGE,
    )

    def __init__(
        self,
        dimensions: Annotated[list[Dimension], at.MinLen(1)] = ("arousal", "valence", "dominance"),
        test_set: TestSet = "Test1",
        source: str | None = None,
    ):
        super().__init__(test_set=test_set, source=source)
        self.dimensions = tuple(dimensions)
        self.target_column = self.dimensions[0]

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        dimensions = list(args["dimensions"])
        if len(set(dimensions)) != len(dimensions):
            raise ValueError(f"dimensions lists one twice: {dimensions}")

    @property
    def targets(self) -> list[str]:
        return list(self.dimensions)

    def keep(self, row: dict[str, str]) -> bool:
        return True  # every turn with ratings, whatever its category


def _checked(file: Path, number: int, row: dict[str, str | None]) -> dict[str, str]:
    """A line of labels_consensus.csv, its values stripped and checked; a DataError names the line."""
    where = f"{file}:{number}"
    if None in row or any(row[c] is None for c in COLUMNS):
        raise DataError(f"{where}: expected the {len(COLUMNS)} columns of the header, the line has another count")
    row = {c: row[c].strip() for c in COLUMNS}
    name = row["FileName"]
    if not name or PurePosixPath(name).name != name or not name.lower().endswith(".wav"):
        raise DataError(f"{where}: FileName {name!r} is not a .wav file name")
    if row["EmoClass"] and row["EmoClass"] not in CODES:
        raise DataError(f"{where}: EmoClass {row['EmoClass']!r} is not one of {', '.join(CODES)}")
    for column in DIMENSIONS.values():
        if row[column] and not _is_rating(row[column]):
            raise DataError(f"{where}: {column} {row[column]!r} is not a rating (a number from 1 to 7)")
    if row["Split_Set"] not in SPLIT_SETS:
        raise DataError(f"{where}: Split_Set {row['Split_Set']!r} is not one of {', '.join(SPLIT_SETS)}")
    return row


def _is_rating(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and 1.0 <= value <= 7.0
