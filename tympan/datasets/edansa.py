"""EDANSA-2019, the Ecoacoustic Dataset from Arctic North Slope Alaska: multi-label sound tags of
10-s clips from autonomous recorders on Alaska's North Slope, summer 2019.

Facts, and where they come from:

- The release is one archive, `EDANSA-2019.zip`, in Zenodo record 6824272
  (https://zenodo.org/records/6824272, DOI 10.5281/zenodo.6824271), as the corpus's repository
  (github.com/speechLabBcCuny/EDANSA-2019, README) and autrainer's `EDANSA2019.download` fetch it.
  Zenodo shows an md5 for the file on the record page; it could not be read here (no network), so
  `checksum` is None unless configured ("md5:<hex>" from the record page pins it).
- The archive holds `EDANSA-2019/labels.csv` and the clips below `EDANSA-2019/data/`, at the
  labels' `Clip Path` (`<region>/<site>/<file>.wav`); that is where autrainer reads them from.
- `labels.csv` (the same file is `assets/labels.csv` in the repository) has the columns `batch,
  set, region, Site ID, Date, Start Time, End Time, Length, Clip Path`, then one 0/1 column per tag
  (`ALL_LABELS`, 41). `set` is the published split: train, valid (tympan's dev) or test. The split
  is by recording site (the repository's runs/augment/run.py lists which sites go where), so no
  site is heard in two splits.
- The tags are the corpus's taxonomy (assets/taxonomy/taxonomy_V2.yaml): the four top-level
  categories Anth(ropophony), Bio(phony), Geo(phony) and Sil(ence), and finer ones below them
  (Bird, SongB, DGS, Airc, ...). The paper (Çoban et al., DCASE 2022 workshop) trains its baseline
  on nine of them (run.py's `target_taxo`: Bio, Bird, SongB, DGS, Anth, Bug, Grous, Airc, Sil).
- The recordings are 48 kHz (run.py's `SAMPLING_RATE`; autrainer's model card for
  autrainer/edansa-2019-cnn10-32k-t); clips are at most 10 s, some shorter (`Length`).

Label sets (`labels`): "coarse" (the default) is Anth, Bio, Geo, Sil, as autrainer's
EDANSA2019-wav configuration and its published model use; "baseline" is the paper's nine; "all"
is every tag column of labels.csv; a list names columns. autrainer allows any column after
`Clip Path` as a target but has no named sets, and keeps no metadata beyond labels.csv's own
columns; it agrees with the corpus's documentation on the split and the files.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Literal

from tympan.datasets.corpus import About, Archive, Corpus
from tympan.datasets.index import parse_csv, read_csv_text, shown_header
from tympan.errors import DataError

__all__ = ["ALL_LABELS", "EDANSA2019", "LABEL_SETS"]

URL = "https://zenodo.org/records/6824272/files/EDANSA-2019.zip?download=1"
ARCHIVE = "EDANSA-2019.zip"
TOP = "EDANSA-2019"  # the archive's top folder
LABELS = "labels.csv"
DATA = "data"
AUDIO_SUFFIXES = (".wav", ".flac")

#: labels.csv's tag columns, in its order (after `Clip Path`).
ALL_LABELS = (
    "Anth", "Bio", "Geo", "Sil", "Auto", "Airc", "Mach", "Flare", "Bird", "Mam", "Bug", "Wind", "Rain",
    "Water", "Truck", "Car", "Prop", "Helo", "Jet", "Corv", "SongB", "DGS", "Grous", "Crane", "Loon",
    "SeaB", "Owl", "Hum", "Rapt", "Woop", "ShorB", "Woof", "Bear", "Mous", "Deer", "Weas", "Meow",
    "Hare", "Shrew", "Mosq", "Fly",
)  # fmt: skip
LABEL_SETS = {
    "coarse": ("Anth", "Bio", "Geo", "Sil"),
    "baseline": ("Bio", "Bird", "SongB", "DGS", "Anth", "Bug", "Grous", "Airc", "Sil"),
    "all": ALL_LABELS,
}
#: labels.csv's metadata columns -> the index's column names.
METADATA = {
    "batch": "batch",
    "region": "region",
    "Site ID": "site",
    "Date": "date",
    "Start Time": "start_time",
    "End Time": "end_time",
    "Length": "length",
}
SPLITS = {"train": "train", "valid": "dev", "test": "test"}
FLAGS = {"0": "0", "1": "1", "0.0": "0", "1.0": "1"}


class EDANSA2019(Corpus):
    """EDANSA-2019 from its Zenodo archive, a local copy (`source`) or the data mirror: one 0/1
    column per tag of the chosen label set, the published site-disjoint split, and each clip's
    region, site, date and times."""

    name = "edansa2019"
    default_task = "multilabel"
    layout = f"{LABELS} and {DATA}/<region>/<site>/<clip>.wav (the archive's {TOP}/ folder, or that folder itself)"
    marker = LABELS
    about = About(
        task="ecoacoustic tags: Anth, Bio, Geo, Sil by default, up to 41 finer ones (multi-label)",
        classes=len(LABEL_SETS["coarse"]),
        size="27 h of 10-s clips, 48 kHz, one Zenodo archive",
        license="see the Zenodo record",
        homepage="https://zenodo.org/records/6824272",
    )

    def __init__(
        self,
        source: str | None = None,
        labels: Literal["coarse", "baseline", "all"] | list[str] = "coarse",
        url: str = URL,
        checksum: str | None = None,
    ):
        super().__init__(source)
        self.labels = _label_columns(labels)
        self.target_column = self.labels[0]
        self.archives = (Archive(url, checksum, ARCHIVE),)

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        _label_columns(args["labels"])

    @property
    def targets(self) -> list[str]:
        return list(self.labels)

    # ---- fetching

    def place(self, member: PurePosixPath) -> PurePosixPath | None:
        """labels.csv and the clips below data/, without the archive's top folder."""
        parts = member.parts[1:] if member.parts[:1] == (TOP,) else member.parts
        if not parts:
            return None
        relative = PurePosixPath(*parts)
        return relative if self.wanted(relative) else None

    def wanted(self, relative: PurePosixPath) -> bool:
        if relative == PurePosixPath(LABELS):
            return True
        return relative.parts[:1] == (DATA,) and relative.suffix.lower() in AUDIO_SUFFIXES

    def copy_from(self, src: Path, dest: Path) -> None:
        """A source may be the extracted archive's top folder or the folder it was extracted in."""
        if not (src / LABELS).is_file() and (src / TOP / LABELS).is_file():
            src = src / TOP
        super().copy_from(src, dest)

    # ---- indexing

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        """One row per labels.csv row: its clip, split, tags of the label set and metadata."""
        file = dest / LABELS
        header, lines = parse_csv(file, read_csv_text(file, "EDANSA labels file"), "EDANSA labels file")
        needed = ["set", "Clip Path", *METADATA, *self.labels]
        missing = [c for c in needed if c not in header]
        if missing:
            raise DataError(f"{file}: missing column(s) {missing} ({shown_header(header)})")
        rows, absent = [], []
        for line, record in lines:
            rows.append(self._row(file, line, record))
            if not (dest / rows[-1]["path"]).is_file():
                absent.append(rows[-1]["path"])
        if not rows:
            raise DataError(f"{file}: no clips listed")
        if absent:
            raise DataError(f"{dest}: {len(absent)} clip(s) listed in {LABELS} are missing, e.g. {absent[0]}")
        return rows

    def _row(self, file: Path, line: int, record: dict) -> dict[str, str]:
        if None in record or None in record.values():
            raise DataError(f"{file}, line {line}: missing or extra fields")
        split = SPLITS.get(record["set"].strip())
        if split is None:
            raise DataError(f"{file}, line {line}: set {record['set']!r} is not one of {list(SPLITS)}")
        clip = PurePosixPath(record["Clip Path"].strip().replace("\\", "/"))
        if not clip.parts or clip.is_absolute() or ".." in clip.parts:
            raise DataError(f"{file}, line {line}: Clip Path {record['Clip Path']!r} is not a path below {DATA}/")
        row = {"path": f"{DATA}/{clip}", "split": split}
        for label in self.labels:
            flag = FLAGS.get(record[label].strip())
            if flag is None:
                raise DataError(f"{file}, line {line}: {label} is {record[label]!r}, not 0 or 1")
            row[label] = flag
        row.update({column: record[source].strip() for source, column in METADATA.items()})
        return row


def _label_columns(labels: str | list[str]) -> tuple[str, ...]:
    """The tag columns a label set names; an unknown or repeated column is a ValueError."""
    if isinstance(labels, str):
        if labels not in LABEL_SETS:
            raise ValueError(f"labels: {labels!r} is not one of {list(LABEL_SETS)} or a list of tag columns")
        return LABEL_SETS[labels]
    unknown = [label for label in labels if label not in ALL_LABELS]
    if unknown:
        raise ValueError(f"labels: {unknown} are not tag columns of labels.csv ({', '.join(ALL_LABELS)})")
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels: {list(labels)} must name at least one tag column, each once")
    return tuple(labels)
