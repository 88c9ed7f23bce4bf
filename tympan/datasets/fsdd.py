"""Free Spoken Digit Dataset (FSDD): spoken digits 0-9, 8 kHz mono WAV, split by speaker.

Upstream: https://github.com/Jakobovski/free-spoken-digit-dataset (CC BY-SA 4.0).
Files are `recordings/{digit}_{speaker}_{index}.wav`. Upstream publishes no
checksum, so unless a `sha256` is configured a fetch is verified by naming:
every speaker must have every digit with the same run of takes 0..n-1.
Splits are by speaker, so no voice is in two splits; speakers in no split are
left out of the index.
"""

from __future__ import annotations

import logging
import re
import shutil
import urllib.parse
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import annotated_types as at

from tympan.components import NonNegativeInt, Says
from tympan.datasets import archives
from tympan.datasets.base import SPLITS, AudioDataset, download_file, link_or_copy
from tympan.datasets.corpus import About
from tympan.errors import DataError
from tympan.progress import bar

__all__ = ["FSDD", "FSDDSpeakers"]

log = logging.getLogger(__name__)

URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz"
HOMEPAGE = "https://github.com/Jakobovski/free-spoken-digit-dataset"
SIZE = "3,000 clips (6 speakers x 10 digits x 50 takes, release v1.0.10), 8 kHz mono, about 30 MB"
RECORDINGS = "recordings"
FILE_NAME = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[a-z]+)_(?P<take>[0-9]+)\.wav$")
DIGITS = tuple(str(d) for d in range(10))
Speakers = str | list[str] | tuple[str, ...]  # one speaker, or several


class FSDD(AudioDataset):
    """FSDD fetched from the release archive, a local copy (`source`) or the data mirror."""

    name = "fsdd"
    target_column = "label"
    about = About(
        task="10 spoken digits (classification)", classes=10, size=SIZE, license="CC BY-SA 4.0", homepage=HOMEPAGE
    )

    def __init__(
        self,
        url: str = URL,
        sha256: str | None = None,
        source: str | None = None,
        train_speakers: Speakers = ("george", "jackson", "lucas", "nicolas"),
        dev_speakers: Speakers = ("yweweler",),
        test_speakers: Speakers = ("theo",),
    ):
        self.url = url
        self.sha256 = sha256
        self.source = source
        self.speaker_split = _speaker_split({"train": train_speakers, "dev": dev_speakers, "test": test_speakers})

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        _speaker_split({split: args[f"{split}_speakers"] for split in SPLITS})

    def download(self, dest: Path) -> None:
        """Fill `dest/recordings/` from `source` (directory or archive), else from `url`."""
        if self.source:
            source = Path(self.source).expanduser()
            if source.is_dir():
                self.copy_from(source, dest)
            elif source.is_file():
                _extract_recordings(source, dest / RECORDINGS)
            else:
                raise DataError(f"{source}: no such FSDD source (a directory or .tar.gz archive)")
            return
        archive = download_file(self.url, dest / _file_name(self.url), self.sha256)
        _extract_recordings(archive, dest / RECORDINGS)
        archive.unlink()

    def copy_from(self, src: Path, dest: Path) -> None:
        """Link or copy the recordings of a local FSDD copy (upstream or mirror layout)."""
        recordings = _find_recordings(src)
        out = _fresh_dir(dest / RECORDINGS)
        files = [p for p in sorted(recordings.iterdir()) if FILE_NAME.match(p.name)]
        for file in bar(files, desc="copy fsdd", unit="file"):
            link_or_copy(file, out / file.name)

    def verify(self, dest: Path) -> None:
        """Every speaker has every digit with takes 0..n-1 (empty files are the base class's concern)."""
        recordings = dest / RECORDINGS
        files = sorted(recordings.glob("*.wav"))
        if not files:
            raise DataError(f"{recordings}: no recordings")
        takes = defaultdict(set)
        for file in files:
            match = FILE_NAME.match(file.name)
            if not match:
                raise DataError(f"{file}: not an FSDD file name ({{digit}}_{{speaker}}_{{index}}.wav)")
            takes[match["speaker"]].add((match["digit"], int(match["take"])))
        for speaker, present in takes.items():
            count = 1 + max(take for _, take in present)
            missing = {(d, t) for d in DIGITS for t in range(count)} - present
            if missing:
                digit, take = min(missing)
                raise DataError(
                    f"{recordings}: {len(missing)} file(s) of speaker {speaker!r} missing, "
                    f"e.g. {digit}_{speaker}_{take}.wav"
                )

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        """One row per recording of a speaker that is in a split; label is the digit."""
        rows, dropped = [], set()
        for file in sorted((dest / RECORDINGS).glob("*.wav")):
            match = FILE_NAME.match(file.name)
            split = self.speaker_split.get(match["speaker"])
            if split is None:
                dropped.add(match["speaker"])
                continue
            path, label, speaker = f"{RECORDINGS}/{file.name}", match["digit"], match["speaker"]
            rows.append({"path": path, "split": split, "label": label, "speaker": speaker})
        if dropped:
            log.info("fsdd: speakers in no split, left out of the index: %s", ", ".join(sorted(dropped)))
        for split in SPLITS:
            if not any(row["split"] == split for row in rows):
                speakers = [s for s, sp in self.speaker_split.items() if sp == split]
                log.warning("fsdd: %s split is empty (no recordings of %s)", split, speakers or "anyone")
        return rows


Takes = Annotated[list[NonNegativeInt], at.Len(2, 2), Says("[first take, last take + 1]")]


class FSDDSpeakers(FSDD):
    """FSDD for speaker identification: the speaker is the target, every speaker is in every
    split, and the split is by take number (`dev_takes`, `test_takes`, `train_takes` as [start,
    stop); `train_takes` null: every other take), so the same voice is heard in training and
    recognised in dev and test. A narrow `train_takes` makes a low-data task (2 takes: 100 clips).
    The recordings are FSDD's own copy (same `name`), indexed separately."""

    target_column = "speaker"
    about = About(
        task="6 speakers, split by take (speaker identification, classification)",
        classes=6,
        size=SIZE,
        license="CC BY-SA 4.0",
        homepage=HOMEPAGE,
    )

    def __init__(
        self,
        url: str = URL,
        sha256: str | None = None,
        source: str | None = None,
        dev_takes: Takes = (0, 5),
        test_takes: Takes = (5, 10),
        train_takes: Takes | None = None,
    ):
        super().__init__(url=url, sha256=sha256, source=source)
        self.takes = {"dev": range(*dev_takes), "test": range(*test_takes)}
        self.train_takes = None if train_takes is None else range(*train_takes)

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        names = [n for n in ("dev_takes", "test_takes", "train_takes") if args[n] is not None]
        takes = {name: range(*args[name]) for name in names}
        for name in names:
            if not takes[name]:
                raise ValueError(f"{name}={list(args[name])} holds no take: it needs start < stop")
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                if set(takes[first]) & set(takes[second]):
                    raise ValueError(f"{first} {list(args[first])} and {second} {list(args[second])} overlap")

    def copy_of(self) -> dict:
        """FSDD's own copy: the same corpus, so a fetch of either uses the other's audio."""
        return {"dataset": f"{FSDD.__module__}:{FSDD.__name__}"}

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        """One row per recording; split by its take, label its digit, target its speaker."""
        rows = []
        for file in sorted((dest / RECORDINGS).glob("*.wav")):
            match = FILE_NAME.match(file.name)
            take = int(match["take"])
            split = next((s for s, takes in self.takes.items() if take in takes), "train")
            if split == "train" and self.train_takes is not None and take not in self.train_takes:
                continue
            rows.append({"path": f"{RECORDINGS}/{file.name}", "split": split, "label": match["digit"],
                         "speaker": match["speaker"]})  # fmt: skip
        return rows


def _speaker_split(splits: dict[str, Speakers]) -> dict[str, str]:
    """Map speaker -> split; a speaker in two splits would leak a voice, so it is a ValueError."""
    speaker_split = {}
    for split, speakers in splits.items():
        for speaker in [speakers] if isinstance(speakers, str) else speakers:
            if speaker in speaker_split:
                first = speaker_split[speaker]
                raise ValueError(f"speaker {speaker!r} is in both {first}_speakers and {split}_speakers")
            speaker_split[speaker] = split
    return speaker_split


def _find_recordings(src: Path) -> Path:
    """The folder of FSDD wavs in `src`: `src/recordings`, `src/<top>/recordings` or `src` itself."""
    for candidate in [src / RECORDINGS, *sorted(src.glob(f"*/{RECORDINGS}")), src]:
        if candidate.is_dir() and any(FILE_NAME.match(p.name) for p in candidate.iterdir()):
            return candidate
    raise DataError(f"{src}: no FSDD recordings (recordings/{{digit}}_{{speaker}}_{{index}}.wav)")


def _extract_recordings(archive: Path, out: Path) -> None:
    """Extract the `recordings/*.wav` members with a valid FSDD name, whatever folder holds
    `recordings/`, into `out` (through `archives.extract`: regular files only, never outside `out`)."""

    def place(member: PurePosixPath) -> PurePosixPath | None:
        return PurePosixPath(member.name) if member.parent.name == RECORDINGS and FILE_NAME.match(member.name) else None

    archives.extract(archive, _fresh_dir(out), place)


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _file_name(url: str) -> str:
    return PurePosixPath(urllib.parse.urlparse(url).path).name or "fsdd.tar.gz"
