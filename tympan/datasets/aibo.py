"""FAU Aibo Emotion Corpus, as used in the INTERSPEECH 2009 Emotion Challenge: children's speech
to Sony's Aibo robot, 16 kHz 16-bit mono WAV chunks, in a 2-class or a 5-class task.

The corpus is not public: it is licensed for research by FAU Erlangen-Nürnberg (Pattern Recognition
Lab, Stefan Steidl; https://www5.cs.fau.de/de/mitarbeiter/steidl-stefan/fau-aibo-emotion-corpus/).
`source: /folder` names the corpus as distributed; from it only the chunks and the challenge's two
label files are taken:

- `wav/<chunk id>.wav`, the chunk id being `<school>_<child>_<turn>_<chunk>`, e.g. `Ohm_01_015_00`;
- `labels/IS2009EmotionChallenge/chunk_labels_{2cl,5cl}_corpus.txt`: one chunk a line, whitespace
  separated `<chunk id> <label> <confidence>` (the corpus's README: e.g. `Ohm_01_015_00 N 1`; the
  confidence is the share of the labellers' agreement behind the label).

Facts, from Schuller, Steidl & Batliner, "The INTERSPEECH 2009 Emotion Challenge" (Interspeech 2009)
and the corpus's label README: 51 children (aged 10-13) of two schools; the challenge trains on the
Ohm school (26 children, 9,959 chunks) and tests on the Mont school (25 children, 8,257 chunks), so
no child is in both. Labels: 2-class NEG (negative: angry, touchy, reprimanding, emphatic) vs IDL
(idle: all other); 5-class A (anger: angry, touchy, reprimanding), E (emphatic), N (neutral),
P (positive: motherese, joyful), R (rest).

Split: train Ohm, test Mont, as the challenge. The challenge defines no development set; the dev
split here is autrainer's (its `autrainer/datasets/aibo.py`, after Triantafyllopoulos et al.,
ICME 2021, doi:10.1109/ICME51207.2021.9428217): the Ohm children that sort last, Ohm_31 and Ohm_32,
so it is speaker independent of train and test. `dev_speakers` names them (Ohm children only).

Where autrainer's module differs from the corpus as distributed: it expects the label files at the
top of its folder and the chunks in `default/` (a layout it makes by hand); here the distributed
layout is read as it is. Its `speaker` column is the child's number alone (`01`), which names two
children (Ohm_01 and Mont_01); here `speaker` is `<school>_<child>`. Index columns: `label`,
`speaker`, `school`, `confidence`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from tympan.datasets.corpus import About, Corpus
from tympan.datasets.index import read_csv_text
from tympan.errors import DataError

__all__ = ["FAUAIBO"]

log = logging.getLogger(__name__)

WAV = "wav"
LABELS = "labels/IS2009EmotionChallenge"
CLASSES = {"2cl": ("IDL", "NEG"), "5cl": ("A", "E", "N", "P", "R")}
SCHOOL_SPLIT = {"Ohm": "train", "Mont": "test"}
CHUNK = re.compile(r"^(?P<speaker>(?P<school>Ohm|Mont)_[0-9]+)_[0-9]+_[0-9]+$")
HOMEPAGE = "https://www5.cs.fau.de/de/mitarbeiter/steidl-stefan/fau-aibo-emotion-corpus/"
Task = Literal["2cl", "5cl"]


def label_file(task: str) -> str:
    """The challenge's label file of a task, relative to the corpus folder."""
    return f"{LABELS}/chunk_labels_{task}_corpus.txt"


class FAUAIBO(Corpus):
    """The FAU Aibo Emotion Corpus (IS2009 Emotion Challenge): `task` "2cl" (NEG, IDL) or "5cl"
    (A, E, N, P, R); train Ohm school but `dev_speakers`, dev those Ohm children, test Mont school."""

    name = "fau_aibo"
    target_column = "label"
    default_task = "classification"
    request = HOMEPAGE
    layout = (
        f"{WAV}/<school>_<child>_<turn>_<chunk>.wav (16 kHz) and {label_file('2cl')}, {label_file('5cl')} "
        "(lines '<chunk id> <label> <confidence>')"
    )
    about = About(
        task="2 classes NEG/IDL, or 5 classes A/E/N/P/R (task: 5cl) (classification)",
        classes=2,
        size="18,216 chunks of 51 children, about 9 h, 16 kHz",
        license="FAU Aibo Emotion Corpus license agreement (research use)",
        access="on request",
        homepage=HOMEPAGE,
    )

    def __init__(
        self,
        task: Task = "2cl",
        dev_speakers: list[str] | tuple[str, ...] = ("Ohm_31", "Ohm_32"),
        source: str | None = None,
    ):
        self.task = task
        self.dev_speakers = tuple(dev_speakers)
        self.source = source
        self.marker = label_file(task)  # a copy for this task has its label file

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        speakers = list(args["dev_speakers"])
        if not speakers:
            raise ValueError("dev_speakers is empty: name the Ohm children of the dev split, e.g. [Ohm_31, Ohm_32]")
        for speaker in speakers:
            if not re.fullmatch(r"Ohm_[0-9]+", speaker):
                raise ValueError(
                    f"dev_speakers: {speaker!r} is not an Ohm child (Ohm_<number>): dev is taken from the training "
                    "school, Mont is the test set"
                )
        if len(set(speakers)) != len(speakers):
            raise ValueError(f"dev_speakers lists a child twice: {speakers}")

    def wanted(self, relative: PurePosixPath) -> bool:
        """The chunks and the challenge's two label files; the rest of the distribution stays out."""
        if relative.parent == PurePosixPath(WAV):
            return relative.suffix.lower() == ".wav"
        return relative.as_posix() in (label_file("2cl"), label_file("5cl"))

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        """One row per chunk of the task's label file: split by school (and dev speakers), the label,
        the child, the school and the label's confidence."""
        file = dest / label_file(self.task)
        classes = CLASSES[self.task]
        rows, seen = [], set()
        for number, line in enumerate(read_csv_text(file, "label file").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{file}:{number}"
            if len(fields) != 3:
                raise DataError(f"{where}: expected '<chunk id> <label> <confidence>', got {len(fields)} fields")
            chunk, label, confidence = fields
            match = CHUNK.match(chunk)
            if not match:
                raise DataError(f"{where}: {chunk!r} is not a chunk id (<Ohm|Mont>_<child>_<turn>_<chunk>)")
            if label not in classes:
                raise DataError(f"{where}: label {label!r} is not one of the {self.task} labels {', '.join(classes)}")
            if not _is_share(confidence):
                raise DataError(f"{where}: confidence {confidence!r} is not a number in [0, 1]")
            if chunk in seen:
                raise DataError(f"{where}: chunk {chunk} is listed twice")
            seen.add(chunk)
            path = f"{WAV}/{chunk}.wav"
            if not (dest / path).is_file():
                raise DataError(f"{where}: {path} is missing from the copy ({self.layout})")
            speaker, school = match["speaker"], match["school"]
            split = "dev" if speaker in self.dev_speakers else SCHOOL_SPLIT[school]
            rows.append({"path": path, "split": split, "label": label, "speaker": speaker, "school": school,
                         "confidence": confidence})  # fmt: skip
        missing = sorted(set(self.dev_speakers) - {row["speaker"] for row in rows})
        if missing:
            raise DataError(f"{file}: no chunks of dev speaker(s) {', '.join(missing)}")
        for split in ("train", "test"):
            if not any(row["split"] == split for row in rows):
                school = next(s for s, sp in SCHOOL_SPLIT.items() if sp == split)
                raise DataError(f"{file}: no chunks of the {school} school, the {split} split")
        return rows


def _is_share(text: str) -> bool:
    try:
        return 0.0 <= float(text) <= 1.0
    except ValueError:
        return False
