"""AudioSet (Gemmeke et al., ICASSP 2017): 10-s segments of YouTube videos with one or more of 527
sound-event labels, indexed from the official segment lists over a local folder of clips.

Facts, and where they come from (research.google.com/audioset/download.html unless said):

- Three disjoint subsets, each a CSV: eval_segments.csv (20,383 segments, at least 59 per class),
  balanced_train_segments.csv (22,176, chosen the same way) and unbalanced_train_segments.csv
  (2,042,985, the remainder). Each starts with three comment lines beginning with "#"; every other
  line is `YTID, start_seconds, end_seconds, "mid,mid,..."` (the labels are ontology MIDs).
- The CSVs are published at http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/<name>
  (the URLs PANN's scripts/1_download_dataset.sh uses), with no published checksum.
- The 527 classes and their order are `class_labels_indices.csv` (index, mid, display_name), kept in
  `tympan.datasets.audioset_classes`; the ontology (https://github.com/audioset/ontology,
  ontology.json: id, name, child_ids, ...) is needed only for `ancestors`.
- License: CC BY 4.0 for the labels, CC BY-SA 4.0 for the ontology. The audio is not distributed:
  videos are on YouTube, and a growing share of them is gone, so every copy holds fewer clips.

The clips are out of scope: `source` (or `$TYMPAN_DATA_MIRROR/audioset/`) is a folder of clips
downloaded beforehand, in any folder structure, each named by its video: `<YTID>.<ext>`,
`Y<YTID>.<ext>` (PANN's downloader, which prefixes a Y because an id may start with "-") or
`<YTID>_<start>[_<end>].<ext>` (downloaders that name the segment; start and end as seconds or
milliseconds), with ext one of wav, flac, ogg, mp3 (... as `tympan.datasets.folder` reads them). The
CSVs (and class_labels_indices.csv, ontology.json) are taken from the folder's top or its
`metadata/` folder (PANN's layout) when there, else downloaded. A segment whose clip is missing is
left out, with one warning that counts them per subset. The segment lists are read line by line and
a row kept only for a clip that is present, so memory follows the clips, not the 2M-line CSV.

Splits: test is the eval subset; train is the balanced subset, the unbalanced one or both (`train`);
dev is a fixed share of those train segments (`dev_fraction`), chosen by a hash of the YTID (the
first 8 bytes of its SHA-256, big-endian, over 2**64, below the share), so a segment's split never
depends on which other clips a copy has.

Target columns: one 0/1 column per class, named by the display name made safe (lower case, every
run of other characters than a-z and 0-9 one "_": "Male speech, man speaking" is
male_speech_man_speaking; the 527 stay distinct), or by the MID (`class_columns: mid`). With
`ancestors`, a segment also counts as an example of every ancestor (in ontology.json) of its
labels that is one of the 527. Metadata columns: subset, ytid, start_seconds, end_seconds and mids
(the labels as listed, joined by ";").

Where autrainer's AudioSet differs: its dev and test are both the eval subset (no held-out dev);
its targets are the names of all 632 ontology nodes, with each segment's labels widened to their
ancestors (as `ancestors` does, within the 527); it reads clips as `<subset CSV name>/<YTID>.wav`
only; and it reads the CSVs whole with pandas. The documented 527-class set is followed here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

import annotated_types as at

from tympan.datasets.audioset_classes import CLASSES
from tympan.datasets.corpus import About, Corpus
from tympan.datasets.folder import AUDIO_SUFFIXES
from tympan.datasets.index import parse_csv, read_csv_text
from tympan.downloads import download_file
from tympan.errors import DataError

__all__ = ["AudioSet", "class_column", "clip_ids", "held_out"]

log = logging.getLogger(__name__)

CSV_URL = "http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv"
ONTOLOGY_URL = "https://raw.githubusercontent.com/audioset/ontology/master/ontology.json"
#: Each subset's name in the index's `subset` column and its segment list.
SEGMENTS = {
    "balanced_train": "balanced_train_segments.csv",
    "unbalanced_train": "unbalanced_train_segments.csv",
    "eval": "eval_segments.csv",
}
TRAIN_SUBSETS = {
    "balanced": ("balanced_train",),
    "unbalanced": ("unbalanced_train",),
    "both": ("balanced_train", "unbalanced_train"),
}
CLASS_LIST = "class_labels_indices.csv"
ONTOLOGY = "ontology.json"
METADATA_FILES = (*SEGMENTS.values(), CLASS_LIST, ONTOLOGY)
METADATA_FOLDERS = ("", "metadata")  # where a copy's metadata files are: its top, or metadata/
META_COLUMNS = ("path", "split", "subset", "ytid", "start_seconds", "end_seconds", "mids")
YTID = re.compile(r"[A-Za-z0-9_-]{11}")
SEGMENT_SUFFIX = re.compile(r"(?:_\d+(?:\.\d+)?){1,2}")  # _<start> or _<start>_<end>

DevFraction = Annotated[float, at.Gt(0), at.Le(0.5)]


def class_column(mid: str, display_name: str, by: str = "name") -> str:
    """A class's column: its MID, or its display name in lower case with every run of other
    characters than a-z and 0-9 one "_"."""
    if by == "mid":
        return mid
    return re.sub(r"[^a-z0-9]+", "_", display_name.lower()).strip("_")


def clip_ids(stem: str) -> list[str]:
    """The YTIDs a clip's file name (without its extension) may name: `<YTID>`, `Y<YTID>`, each
    optionally followed by `_<start>` or `_<start>_<end>`. Rarely two (a YTID may start with Y)."""
    found = []
    for offset in (0, 1) if stem.startswith("Y") else (0,):
        ytid, rest = stem[offset : offset + 11], stem[offset + 11 :]
        if YTID.fullmatch(ytid) and (not rest or SEGMENT_SUFFIX.fullmatch(rest)):
            found.append(ytid)
    return found


def held_out(ytid: str, fraction: float) -> bool:
    """Whether a train segment is in dev: the first 8 bytes of its YTID's SHA-256 as a fraction."""
    value = int.from_bytes(hashlib.sha256(ytid.encode("ascii")).digest()[:8], "big")
    return value / 2**64 < fraction


class AudioSet(Corpus):
    """AudioSet's official segment lists over a local folder of clips (`source`, or the data
    mirror): test is eval, train the balanced and/or unbalanced subset, dev a hashed share of train."""

    name = "audioset"
    default_task = "multilabel"
    layout = (
        "clips named <YTID>.wav, Y<YTID>.wav or <YTID>_<start>[_<end>].wav (or .flac, .ogg, .mp3) anywhere "
        f"below the folder, and optionally {', '.join(METADATA_FILES)} at its top or in metadata/"
    )
    about = About(
        task="527 sound event classes (multi-label)",
        classes=len(CLASSES),
        size="2.1M 10-s segments as published (22,176 balanced train, 20,383 eval); clips are not distributed",
        license="CC BY 4.0 (labels), CC BY-SA 4.0 (ontology); the audio is its YouTube uploaders'",
        access="labels public; bring your own clips (source)",
        homepage="https://research.google.com/audioset/",
    )

    def __init__(
        self,
        source: str | None = None,
        train: Literal["balanced", "unbalanced", "both"] = "balanced",
        dev_fraction: DevFraction = 0.1,
        class_columns: Literal["name", "mid"] = "name",
        ancestors: bool = False,
        csv_url: str = CSV_URL,
        ontology_url: str = ONTOLOGY_URL,
    ):
        super().__init__(source)
        self.train = train
        self.dev_fraction = dev_fraction
        self.class_columns = class_columns
        self.ancestors = ancestors
        self.csv_url = csv_url.rstrip("/")
        self.ontology_url = ontology_url
        self.columns = {mid: class_column(mid, name, class_columns) for mid, name in CLASSES}
        self.target_column = self.columns[CLASSES[0][0]]

    @property
    def targets(self) -> list[str]:
        return list(self.columns.values())

    def needed(self) -> list[str]:
        """The metadata files this block reads."""
        subsets = [*TRAIN_SUBSETS[self.train], "eval"]
        return [SEGMENTS[s] for s in subsets] + ([ONTOLOGY] if self.ancestors else [])

    # ---- fetching

    def download(self, dest: Path) -> None:
        if not self.source:
            raise DataError(
                "audioset: the clips are not distributed (they are YouTube audio): download them first, then "
                f"set dataset.args.source to their folder ({self._expected()})"
            )
        super().download(dest)

    def wanted(self, relative: PurePosixPath) -> bool:
        """Clips named by a YTID, and the metadata files where a copy keeps them."""
        if relative.name in METADATA_FILES:
            return relative.parent in (PurePosixPath("."), PurePosixPath("metadata"))
        return relative.suffix.lower() in AUDIO_SUFFIXES and bool(clip_ids(relative.stem))

    def copy_from(self, src: Path, dest: Path) -> None:
        """Link or copy the clips and metadata files of `src`; download the segment lists it lacks."""
        self.link_layout(src, dest)
        for name in self.needed():
            if _find(dest, name) is None:
                url = self.ontology_url if name == ONTOLOGY else f"{self.csv_url}/{name}"
                log.info("audioset: %s is not in %s; downloading it from %s", name, src, url)
                download_file(url, dest / name)

    def verify(self, dest: Path) -> None:
        for name in self.needed():
            if _find(dest, name) is None:
                raise DataError(f"{dest / name}: missing (AudioSet's {name}); put it in the source folder or fetch it")
        listed = _find(dest, CLASS_LIST)
        if listed is not None:
            _check_class_list(listed)

    # ---- indexing

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        """One row per listed segment whose clip is in the copy, subset by subset."""
        clips, files, duplicates = _clips(dest)
        if not clips:
            raise DataError(f"{dest}: no AudioSet clips ({self.layout})")
        if duplicates:
            log.warning("audioset: %d YTIDs have several clips (e.g. %s); the first in path order is used", *duplicates)
        widen = _ancestors(_find(dest, ONTOLOGY), self.columns) if self.ancestors else {}
        zeros = dict.fromkeys(self.columns.values(), "0")
        rows, counts, seen = [], {}, {}
        for subset in [*TRAIN_SUBSETS[self.train], "eval"]:
            file = _find(dest, SEGMENTS[subset]) or dest / SEGMENTS[subset]
            listed = kept = 0
            for line, ytid, start, end, mids in _segments(file, self.columns):
                listed += 1
                path = clips.get(ytid)
                if path is None:
                    continue
                if ytid in seen:
                    raise DataError(f"{file}, line {line}: {ytid} is also in {seen[ytid]}: the subsets are disjoint")
                seen[ytid] = file.name
                split = "test" if subset == "eval" else "dev" if held_out(ytid, self.dev_fraction) else "train"
                row = {"path": path, "split": split, "subset": subset, "ytid": ytid, "start_seconds": start,
                       "end_seconds": end, "mids": ";".join(mids), **zeros}  # fmt: skip
                for mid in mids:
                    for label in (mid, *widen.get(mid, ())):
                        row[self.columns[label]] = "1"
                rows.append(row)
                kept += 1
            counts[subset] = (listed - kept, listed)
        _report(counts, files, len(rows))
        if not rows:
            raise DataError(f"{dest}: none of its {files} clips is a segment of {', '.join(counts)}")
        for split in ("train", "dev", "test"):
            if not any(row["split"] == split for row in rows):
                log.warning("audioset: the %s split is empty (no clip of its segments in the copy)", split)
        return rows


# ---- the copy's files


def _find(dest: Path, name: str) -> Path | None:
    """A metadata file of the copy: at its top, else in metadata/."""
    for folder in METADATA_FOLDERS:
        file = dest / folder / name
        if file.is_file():
            return file
    return None


def _clips(dest: Path) -> tuple[dict[str, str], int, tuple[int, str] | None]:
    """{YTID: clip path relative to `dest`} of every clip below `dest` (the first in path order
    where a YTID has several), how many clip files, and (how many YTIDs had several, one) or None."""
    clips: dict[str, str] = {}
    files_seen = extra = 0
    example = ""
    for folder, subfolders, files in os.walk(dest):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        relative = PurePosixPath(Path(folder).relative_to(dest).as_posix())
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            ids = clip_ids(stem) if suffix.lower() in AUDIO_SUFFIXES else []
            files_seen += bool(ids)
            for ytid in ids:
                if ytid in clips:
                    extra, example = extra + 1, ytid
                else:
                    clips[ytid] = str(relative / name)
    return clips, files_seen, ((extra, example) if extra else None)


def _segments(file: Path, columns: dict[str, str]) -> Iterator[tuple[int, str, str, str, list[str]]]:
    """(line number, YTID, start, end, MIDs) of each segment of a segment list, read line by line;
    a malformed line is a DataError naming the file and line."""
    if not file.is_file():
        raise DataError(f"{file}: no such segment list")
    try:
        with open(file, encoding="utf-8", newline="") as lines:
            for number, line in enumerate(lines, start=1):
                if line.startswith("#") or not line.strip():
                    continue
                yield (number, *_segment(file, number, line, columns))
    except UnicodeDecodeError as err:
        raise DataError(f"{file}: not UTF-8 text ({err.reason}), so not an AudioSet segment list") from None


def _segment(file: Path, number: int, line: str, columns: dict[str, str]) -> tuple[str, str, str, list[str]]:
    head, quote, rest = line.rstrip("\r\n").partition('"')
    fields = [field.strip() for field in head.split(",")]
    if len(fields) != 4 or (quote and fields[3]):
        raise DataError(f'{file}, line {number}: not `YTID, start_seconds, end_seconds, "labels"`')
    if not quote or not rest.rstrip().endswith('"'):
        raise DataError(
            f"{file}, line {number}: the labels {(quote + rest).strip() or fields[3]!r} are not a quoted list"
        )
    ytid, start, end = fields[:3]
    if not YTID.fullmatch(ytid):
        raise DataError(f"{file}, line {number}: {ytid!r} is not a YouTube video id (11 of A-Z a-z 0-9 _ -)")
    for value in (start, end):
        try:
            float(value)
        except ValueError:
            raise DataError(f"{file}, line {number}: {value!r} is not a time in seconds") from None
    mids = [mid.strip() for mid in rest.rstrip()[:-1].split(",")]
    unknown = [mid for mid in mids if mid not in columns]
    if unknown:
        raise DataError(f"{file}, line {number}: {unknown[0]!r} is not one of AudioSet's 527 class MIDs")
    return ytid, start, end, mids


def _check_class_list(file: Path) -> None:
    """A copy's class_labels_indices.csv must list AudioSet's 527 classes in their published order."""
    header, lines = parse_csv(file, read_csv_text(file, "AudioSet class list"), "AudioSet class list")
    if header[:3] != ["index", "mid", "display_name"]:
        raise DataError(f"{file}: not AudioSet's class list (columns {header[:3]}, not index, mid, display_name)")
    found = [(row["mid"], row["display_name"]) for _, row in lines]
    if found != list(CLASSES):
        differ = next((i for i, (a, b) in enumerate(zip(found, CLASSES, strict=False)) if a != b), None)
        where = f"row {differ + 2} is {found[differ]}, not {CLASSES[differ]}" if differ is not None else ""
        raise DataError(
            f"{file}: not AudioSet v1's 527 classes in their published order ({where or f'{len(found)} classes'})"
        )


def _ancestors(ontology: Path | None, columns: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """{MID: the MIDs of its ancestors that are among the 527} from ontology.json."""
    if ontology is None:
        raise DataError(f"no {ONTOLOGY} in the copy; `ancestors` needs AudioSet's ontology")
    try:
        nodes = json.loads(read_csv_text(ontology, "AudioSet ontology"))
        parents: dict[str, set[str]] = {}
        for node in nodes:
            for child in node["child_ids"]:
                parents.setdefault(child, set()).add(node["id"])
    except (ValueError, TypeError, KeyError) as err:
        raise DataError(f"{ontology}: not AudioSet's ontology (a list of nodes with id and child_ids): {err}") from None
    widened = {}
    for mid in columns:
        found, todo = set(), list(parents.get(mid, ()))
        while todo:
            parent = todo.pop()
            if parent not in found:
                found.add(parent)
                todo.extend(parents.get(parent, ()))
        widened[mid] = tuple(sorted(p for p in found if p in columns))
    return widened


def _report(counts: dict[str, tuple[int, int]], files: int, indexed: int) -> None:
    """One warning for the segments left out (per subset), one note for the clips not indexed."""
    gone = ", ".join(f"{subset} {n} of {listed}" for subset, (n, listed) in counts.items() if n)
    if gone:
        log.warning("audioset: segments without a clip in the copy, left out: %s", gone)
    if files > indexed:
        log.info("audioset: %d clips are in none of the segment lists read (%s)", files - indexed, ", ".join(counts))
