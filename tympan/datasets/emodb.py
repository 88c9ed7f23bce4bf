"""EmoDB, the Berlin Database of Emotional Speech: 7 emotions acted by 10 speakers, 16 kHz mono WAV.

Facts, and where they come from:

- The corpus's documentation (http://emodb.bilderbar.info/docu/): 535 utterances in `wav/`, named
  `SSTTTEV.wav`: speaker (2 digits), text code (`a01`..`b10`), emotion letter from the German word
  (W Wut: anger, L Langeweile: boredom, E Ekel: disgust, A Angst: fear/anxiety, F Freude:
  happiness, T Trauer: sadness, N: neutral) and a version letter. Its speaker table gives gender
  and age: 03 male 31, 08 female 34, 09 female 21, 10 male 32, 11 male 26, 12 male 30, 13 female
  32, 14 female 35, 15 male 25, 16 female 31. The archive (`download.zip`, about 40 MB) also holds
  `erkennung.txt`, the listening test's results: one whitespace-separated row per utterance,
  Latin-1, decimal commas, columns named in its header line, of which `Satz` (the file name) and
  `erkannt` (per cent of the 20 listeners who recognised the intended emotion) are read here,
  as the `recognition` column.
- The download location and the speaker-independent split are autrainer's (its
  `autrainer/datasets/emo_db.py` and `EmoDB-*.yaml`): train speakers 03 08 09 10 11 12, dev 13 14,
  test 15 16. No checksum is published, so the fetch checks the content instead: every file name
  parses, there are 535 utterances, and `erkennung.txt` has a row for each.
- Letter A is named `fear` as in autrainer and audformat's EmoDB (the documentation says
  "Angst", translated fear or anxiety). autrainer keeps no gender or age; they are index columns
  here, from the documentation's table.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from tympan.datasets.base import SPLITS
from tympan.datasets.corpus import About, Archive, Corpus
from tympan.errors import DataError

__all__ = ["EmoDB"]

log = logging.getLogger(__name__)

URL = "http://emodb.bilderbar.info/download/download.zip"
WAV = "wav"
RATINGS = "erkennung.txt"  # the listening test's results
EXPLANATION = "erklaerung.txt"  # the archive's own description of erkennung.txt, kept beside it
UTTERANCES = 535
FILE_NAME = re.compile(r"^(?P<speaker>\d\d)(?P<text>[ab]\d\d)(?P<emotion>[WLEAFTN])(?P<version>[a-z])\.wav$")
EMOTIONS = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
SPEAKERS = {  # speaker: (gender, age), from the documentation's table
    "03": ("male", 31),
    "08": ("female", 34),
    "09": ("female", 21),
    "10": ("male", 32),
    "11": ("male", 26),
    "12": ("male", 30),
    "13": ("female", 32),
    "14": ("female", 35),
    "15": ("male", 25),
    "16": ("female", 31),
}
Speaker = Literal["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"]


class EmoDB(Corpus):
    """EmoDB from its archive, a local copy (`source`) or the data mirror; split by speaker.

    Index columns: `emotion` (the target), `speaker`, `gender`, `age`, `text` (the sentence code),
    `version` and `recognition` (per cent of listeners who recognised the emotion). Speakers in no
    split are left out."""

    name = "emodb"
    target_column = "emotion"
    archives = (Archive(URL),)  # the publisher gives no checksum: `verify` checks the content
    marker = WAV
    layout = f"{WAV}/*.wav (e.g. {WAV}/03a01Fa.wav) and {RATINGS}, as download.zip extracts"
    about = About(
        task="7 emotions (classification)",
        classes=7,
        size="535 clips, 10 speakers, 25 min, 40 MB",
        license="free for research (no license stated by the publisher)",
        homepage="http://emodb.bilderbar.info/",
    )
    #: How many utterances a complete copy has (the documentation's count).
    utterances: int = UTTERANCES

    def __init__(
        self,
        train_speakers: list[Speaker] = ("03", "08", "09", "10", "11", "12"),
        dev_speakers: list[Speaker] = ("13", "14"),
        test_speakers: list[Speaker] = ("15", "16"),
        source: str | None = None,
    ):
        super().__init__(source=source)
        self.speaker_split = _speaker_split({"train": train_speakers, "dev": dev_speakers, "test": test_speakers})

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        _speaker_split({split: args[f"{split}_speakers"] for split in SPLITS})
        for split in ("train", "dev"):
            if not args[f"{split}_speakers"]:
                raise ValueError(f"{split}_speakers is empty: the {split} split needs a speaker")

    def place(self, member: PurePosixPath) -> PurePosixPath | None:
        """`wav/*.wav`, `erkennung.txt` and `erklaerung.txt` (below a top folder too); not the
        phonetic label folders."""
        if member.parent.name == WAV and FILE_NAME.match(member.name):
            return PurePosixPath(WAV, member.name)
        if member.name in (RATINGS, EXPLANATION):
            return PurePosixPath(member.name)
        return None

    def wanted(self, relative: PurePosixPath) -> bool:
        return self.place(relative) == relative

    def verify(self, dest: Path) -> None:
        """Every file in `wav/` is an EmoDB name, and there are `utterances` of them."""
        folder = dest / WAV
        files = sorted(folder.glob("*.wav")) if folder.is_dir() else []
        if not files:
            raise DataError(f"{folder}: no recordings; {self._expected()}")
        for file in files:
            if not FILE_NAME.match(file.name):
                raise DataError(f"{file}: not an EmoDB file name (speaker, text, emotion, version: 03a01Fa.wav)")
            if file.name[:2] not in SPEAKERS:
                raise DataError(f"{file}: speaker {file.name[:2]} is not one of EmoDB's ({', '.join(SPEAKERS)})")
        if len(files) != self.utterances:
            raise DataError(f"{folder}: {len(files)} recordings, EmoDB has {self.utterances}; the copy is incomplete")
        if not (dest / RATINGS).is_file():
            raise DataError(f"{dest / RATINGS}: missing; {self._expected()}")

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        """One row per utterance of a speaker in a split, with its listening-test result."""
        recognition = read_ratings(dest / RATINGS)
        rows, dropped = [], set()
        for file in sorted((dest / WAV).glob("*.wav")):
            match = FILE_NAME.match(file.name)
            speaker = match["speaker"]
            split = self.speaker_split.get(speaker)
            if split is None:
                dropped.add(speaker)
                continue
            if file.name not in recognition:
                raise DataError(f"{dest / RATINGS}: no row for {file.name}")
            gender, age = SPEAKERS[speaker]
            rows.append({
                "path": f"{WAV}/{file.name}",
                "split": split,
                "emotion": EMOTIONS[match["emotion"]],
                "speaker": speaker,
                "gender": gender,
                "age": str(age),
                "text": match["text"],
                "version": match["version"],
                "recognition": recognition[file.name],
            })  # fmt: skip
        if dropped:
            log.info("emodb: speakers in no split, left out of the index: %s", ", ".join(sorted(dropped)))
        for split in SPLITS:
            if not any(row["split"] == split for row in rows):
                log.warning("emodb: the %s split is empty", split)
        return rows


def read_ratings(file: Path) -> dict[str, str]:
    """`erkennung.txt` as {file name: per cent recognised, as a decimal with a point}.

    The file is Latin-1 with decimal commas, its columns separated by spaces or tabs, some values
    padded with no-break spaces; the header line names the columns, `Satz` and `erkannt` among them."""
    try:
        text = file.read_bytes().decode("latin-1")
    except OSError as err:
        raise DataError(f"{file}: cannot read it ({err.strerror})") from None
    lines = [(n, line.replace("\xa0", " ").split()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, fields) for n, fields in lines if fields]
    if not lines:
        raise DataError(f"{file}: empty; expected a header naming the columns Satz and erkannt, then a row a file")
    _, header = lines[0]
    missing = [name for name in ("Satz", "erkannt") if name not in header]
    if missing:
        raise DataError(f"{file}: no column {missing[0]} in the header line ({' '.join(header)[:200]})")
    name_at, rate_at = header.index("Satz"), header.index("erkannt")
    ratings = {}
    for n, fields in lines[1:]:
        if len(fields) <= max(name_at, rate_at):
            raise DataError(f"{file}: line {n} has {len(fields)} fields, the header names {len(header)}")
        name, rate = fields[name_at], fields[rate_at].replace(",", ".")
        try:
            value = float(rate)
        except ValueError:
            raise DataError(f"{file}: line {n}: erkannt {fields[rate_at]!r} is not a number") from None
        if not 0 <= value <= 100:
            raise DataError(f"{file}: line {n}: erkannt {fields[rate_at]!r} is not a per cent (0 to 100)")
        ratings[name] = f"{value:g}"
    return ratings


def _speaker_split(splits: dict[str, Any]) -> dict[str, str]:
    """Map speaker -> split; a speaker in two splits would leak a voice, so it is a ValueError."""
    speaker_split = {}
    for split, speakers in splits.items():
        for speaker in speakers:
            if speaker in speaker_split:
                first = speaker_split[speaker]
                raise ValueError(f"speaker {speaker!r} is in both {first}_speakers and {split}_speakers")
            speaker_split[speaker] = split
    return speaker_split
