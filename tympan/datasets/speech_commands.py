"""Google Speech Commands v0.02: one-second 16 kHz clips of 35 spoken words, for keyword spotting.

Facts, and where they come from:

- The corpus's README and paper (Warden 2018, arXiv:1804.03209): 105,829 clips in one folder per
  word, `<word>/<speaker>_nohash_<n>.wav` (the speaker a stable random id, `n` the speaker's n-th
  take of that word); 16-bit mono PCM at 16 kHz; `_background_noise_/` holds six longer noise
  recordings. The splits are the official lists: `validation_list.txt` (dev, 9,981 clips) and
  `testing_list.txt` (test, 11,005 clips); every other clip is train (84,843). The lists hash the
  speaker id, so no speaker is in two splits. License CC BY 4.0.
- The archives and their sha256 sums are those TensorFlow Datasets publishes
  (`url_checksums/speech_commands.txt`; torchaudio, which autrainer's module downloads with, has
  the same sum for the main archive).
- The 12-class task (the paper's "twelve categories": yes no up down left right on off stop go,
  `_silence_` and `_unknown_` for the other 25 words) is tested on the companion archive
  `speech_commands_test_set_v0.02.tar.gz` (4,890 clips already in the 12 folders), which its
  README calls the canonical test for top-1 error of models trained on those 12 categories. So
  `classes: 12` takes its test split from that archive by default (`test: archive`, as TensorFlow
  Datasets does); `test: list` takes it from `testing_list.txt` instead, mapped to the 12
  classes. With 35 classes the test split is always `testing_list.txt` (the archive has no
  35-word labels). Both archives are fetched always, so one copy serves every variant; the test
  set is kept in `test_set/`.
- `_silence_` for train and dev (and for test with `test: list`) is cut here from
  `_background_noise_/*.wav`, once, while the copy is gathered: each noise file's consecutive,
  non-overlapping one-second pieces from its start (a shorter remainder is dropped) become
  `_silence_/<noise>_<piece:03d>.wav`, written with the noise file's own rate and sample format.
  Of a file's n pieces, the last n // 10 are test, the n // 10 before them dev, the rest train:
  each split hears every noise, in a stretch of its own. With `test: archive`, the test
  pieces are not indexed (the archive's own `_silence_` clips are the test silence).

autrainer's module (torchaudio's loader) indexes only the 35 words with the official lists, as
`classes: 35` does here; it has no 12-class variant. Index columns: `label` (the target), `word`
(the folder's word; empty for the test archive's `_unknown_` and for silence), `speaker`,
`utterance` (the take number), and, with 12 classes, `noise` (the noise file a silence piece is
cut from).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import soundfile as sf

from tympan.datasets import archives
from tympan.datasets.corpus import About, Archive, Corpus
from tympan.downloads import verify
from tympan.errors import DataError
from tympan.progress import bar

__all__ = ["SpeechCommands"]

log = logging.getLogger(__name__)

BASE_URL = "http://download.tensorflow.org/data"
MAIN = Archive(
    f"{BASE_URL}/speech_commands_v0.02.tar.gz",
    "sha256:af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
)
TEST = Archive(
    f"{BASE_URL}/speech_commands_test_set_v0.02.tar.gz",
    "sha256:cc2a00c1147c2254e9be3fa0f779d8c17421dc349b86366567a8edfa9acd51df",
)
VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
NOISE = "_background_noise_"
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
TEST_SET = "test_set"  # where the test-set archive is extracted
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
WORDS = (
    *COMMANDS,
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    *("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow"),
    *("backward", "forward", "follow", "learn", "visual"),
)
CLASSES_12 = (*COMMANDS, SILENCE, UNKNOWN)
CLIP = re.compile(r"^(?P<speaker>[0-9a-f]+)_nohash_(?P<utterance>\d+)\.wav$")


class SpeechCommands(Corpus):
    """Speech Commands v0.02 from its archives, a local copy (`source`) or the data mirror.

    `classes`: 35 (every word) or 12 (ten commands, `_silence_`, `_unknown_`). `test`: where a
    12-class test split comes from, the test-set archive (`archive`, the default for 12) or
    `testing_list.txt` (`list`, the only choice for 35)."""

    name = "speech_commands"
    target_column = "label"
    archives = (MAIN, TEST)
    marker = TESTING_LIST
    layout = (
        f"<word>/<speaker>_nohash_<n>.wav for the 35 words, {NOISE}/*.wav, {VALIDATION_LIST} and {TESTING_LIST} "
        f"(speech_commands_v0.02.tar.gz extracted), and for 12 classes {TEST_SET}/<class>/*.wav "
        "(speech_commands_test_set_v0.02.tar.gz extracted there)"
    )
    about = About(
        task="keyword spotting: 35 words, or 10 commands + silence + unknown (classification)",
        classes=35,
        size="105,829 clips of 1 s (+ 4,890 in the 12-class test set), 30 h, 2.5 GB",
        license="CC BY 4.0",
        homepage="https://arxiv.org/abs/1804.03209",
    )

    def __init__(
        self,
        classes: Literal[35, 12] = 35,
        test: Literal["list", "archive"] | None = None,
        source: str | None = None,
    ):
        super().__init__(source=source)
        self.classes = classes
        self.test = test or ("list" if classes == 35 else "archive")

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        if args["classes"] == 35 and args["test"] == "archive":
            raise ValueError("test: archive holds only the 12 classes; with classes: 35 the test split is the list")

    # ---- gathering: the test set goes to test_set/, and the silence pieces are cut once

    def place(self, member: PurePosixPath) -> PurePosixPath | None:
        """Everything but hidden files (`.DS_Store`)."""
        return None if any(part.startswith(".") for part in member.parts) else member

    def wanted(self, relative: PurePosixPath) -> bool:
        """All of an extracted copy but hidden files, archives beside it and silence pieces cut
        before (they are cut again, here)."""
        beside = len(relative.parts) == 1 and relative.name in {a.file_name for a in self.archives}
        return self.place(relative) is not None and relative.parts[0] != SILENCE and not beside

    def placer(self, archive: Archive) -> archives.Place:
        """The test-set archive (the second) goes below `test_set/`: it holds the same word folders."""
        if archive != self.archives[1]:
            return self.place
        return lambda member: None if self.place(member) is None else PurePosixPath(TEST_SET, member)

    def download(self, dest: Path) -> None:
        super().download(dest)
        cut_silence(dest)

    def copy_from(self, src: Path, dest: Path) -> None:
        """The extracted layout of `src` if it has one, else its main archive; the test-set
        archive too where `src` holds it and not its extracted `test_set/`."""
        main, test = self.archives
        if (src / self.marker).is_file():
            self.link_layout(src, dest)
        elif (src / main.file_name).is_file():
            verify(str(src / main.file_name), src / main.file_name, main.checksum, remove=False)
            self.take(main, src / main.file_name, dest)
        else:
            raise DataError(f"{src}: not a copy of {self.name}: no {self.marker} and no {main.file_name}; "
                            f"{self._expected()}")  # fmt: skip
        if not (dest / TEST_SET).is_dir() and (src / test.file_name).is_file():
            verify(str(src / test.file_name), src / test.file_name, test.checksum, remove=False)
            self.take(test, src / test.file_name, dest)
        cut_silence(dest)

    # ---- checking and indexing

    def verify(self, dest: Path) -> None:
        """The two lists, a folder of clips for each of the 35 words, the noise recordings and their
        silence pieces, and, for a 12-class test from the archive, `test_set/` with its 12 folders."""
        for name in (VALIDATION_LIST, TESTING_LIST):
            if not (dest / name).is_file():
                raise DataError(f"{dest / name}: missing; {self._expected()}")
        for word in WORDS:
            if not any((dest / word).glob("*.wav")):
                raise DataError(f"{dest / word}: no clips of {word!r}; {self._expected()}")
        pieces = silence_pieces(dest)
        if not pieces:
            raise DataError(f"{dest / NOISE}: no noise recordings to cut {SILENCE} from; {self._expected()}")
        missing = [p["path"] for p in pieces if not (dest / p["path"]).is_file()]
        if missing:
            raise DataError(f"{dest / missing[0]}: silence piece missing ({len(missing)} of {len(pieces)})")
        if self.classes == 12 and self.test == "archive":
            for name in CLASSES_12:
                if not any((dest / TEST_SET / name).glob("*.wav")):
                    raise DataError(
                        f"{dest / TEST_SET / name}: no clips; the 12-class test split is the test-set archive "
                        f"{self.archives[1].file_name} extracted into {TEST_SET}/ (or set test: list)"
                    )

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        """Rows of the word clips in their official splits (labels per `classes`), then for 12
        classes the silence pieces and, with `test: archive`, the test-set archive's clips."""
        splits = {**_read_list(dest, VALIDATION_LIST, "dev"), **_read_list(dest, TESTING_LIST, "test")}
        rows = []
        for word in WORDS:
            for file in sorted((dest / word).glob("*.wav")):
                path = f"{word}/{file.name}"
                split = splits.pop(path, "train")
                if split == "test" and self.classes == 12 and self.test == "archive":
                    continue
                rows.append(self._row(path, split, word, word, file.name))
        if splits:
            path, split = next(iter(splits.items()))
            listed = VALIDATION_LIST if split == "dev" else TESTING_LIST
            raise DataError(f"{dest / listed}: lists {path}, which is not in the copy ({len(splits)} such)")
        if self.classes == 35:
            return rows
        for piece in silence_pieces(dest):
            if piece["split"] != "test" or self.test == "list":
                rows.append({**self._row(piece["path"], piece["split"], SILENCE, "", ""), "noise": piece["noise"]})
        if self.test == "archive":
            for name in CLASSES_12:
                for file in sorted((dest / TEST_SET / name).glob("*.wav")):
                    word = name if name in COMMANDS else ""
                    rows.append(self._row(f"{TEST_SET}/{name}/{file.name}", "test", name, word, file.name))
        return rows

    def _row(self, path: str, split: str, label: str, word: str, file_name: str) -> dict[str, str]:
        if self.classes == 12 and label in WORDS:
            label = label if label in COMMANDS else UNKNOWN
        match = CLIP.match(file_name)
        speaker, utterance = (match["speaker"], match["utterance"]) if match else ("", "")
        row = {"path": path, "split": split, "label": label, "word": word, "speaker": speaker, "utterance": utterance}
        if self.classes == 12:
            row["noise"] = ""
        return row


def silence_pieces(dest: Path) -> list[dict[str, str]]:
    """The one-second pieces cut from each noise recording: path, split and noise file, in order.

    Only the recordings' lengths decide them (see the module docstring), so they are the same for
    any copy of the corpus."""
    pieces = []
    for noise in sorted((dest / NOISE).glob("*.wav")):
        info = _info(noise)
        count = info.frames // info.samplerate
        held = count // 10  # pieces for each of dev and test
        for piece in range(count):
            split = "train" if piece < count - 2 * held else "dev" if piece < count - held else "test"
            pieces.append({"path": f"{SILENCE}/{noise.stem}_{piece:03d}.wav", "split": split, "noise": noise.name})
    return pieces


def cut_silence(dest: Path) -> None:
    """Write `_silence_/<noise>_<piece>.wav` for every piece not there yet with the right length;
    each is written to a temporary name and renamed, so a piece is either whole or absent."""
    folder = dest / SILENCE
    folder.mkdir(exist_ok=True)
    for noise in bar(sorted((dest / NOISE).glob("*.wav")), desc="cut silence", unit="file"):
        info = _info(noise)
        count = info.frames // info.samplerate
        targets = [folder / f"{noise.stem}_{piece:03d}.wav" for piece in range(count)]
        if all(_has_frames(target, info.samplerate) for target in targets):
            continue
        samples, rate = sf.read(noise, dtype="float64" if info.subtype == "FLOAT" else "int32", always_2d=True)
        for piece, target in enumerate(targets):
            if _has_frames(target, rate):
                continue
            tmp = target.with_name(f".{target.name}.tmp")
            sf.write(tmp, samples[piece * rate : (piece + 1) * rate], rate, subtype=info.subtype, format="WAV")
            os.replace(tmp, target)


def _info(file: Path) -> Any:
    try:
        info = sf.info(file)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(f"{file}: not a readable WAV file ({err})") from None
    if info.samplerate <= 0:
        raise DataError(f"{file}: sample rate {info.samplerate}")
    return info


def _has_frames(file: Path, frames: int) -> bool:
    try:
        return file.is_file() and sf.info(file).frames == frames
    except (sf.LibsndfileError, RuntimeError):
        return False


def _read_list(dest: Path, name: str, split: str) -> dict[str, str]:
    """A split list (`word/file.wav` a line) as {path: split}; a line of any other form is an error."""
    file = dest / name
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{file}: cannot read it as a text list ({err})") from None
    listed = {}
    for n, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry:
            continue
        parts = PurePosixPath(entry).parts
        if len(parts) != 2 or parts[0] not in WORDS or not CLIP.match(parts[1]):
            raise DataError(f"{file}: line {n} is not <word>/<speaker>_nohash_<n>.wav of the 35 words: {entry[:100]!r}")
        listed[entry] = split
    return listed
