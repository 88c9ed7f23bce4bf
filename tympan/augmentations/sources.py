"""Where a noise or reverberation augmentation gets its audio files: a folder, or a dataset.

`folder:` is a folder of your own recordings, used as it is. `source:` is any dataset block, as
a config's `dataset:` is written (a preset name such as `ColouredNoise` or `DCASE2016Task1`, or
`{target: module:Class, args: {...}}`): training fetches it into `<root>/<name>/` like any corpus
(checksums, mirror, staged fetch), and the files are its index's rows, optionally only some
`splits` and some `labels` (values of its target column). Building one (as config load does)
writes nothing; `prepare` fetches, in whatever process trains (CLI, `dvc repro`, a pipeline step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from tympan import components
from tympan.datasets.base import AudioDataset

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
DEFAULT_ROOT = "data/raw"  # where `tympan fetch` puts a config's corpus too
Split = Literal["train", "dev", "test"]


def folder_files(folder, what: str, first: bool = False) -> list[Path]:
    """The audio files under `folder` (recursively, sorted so picks are reproducible); errors call
    it a `what` folder. With `first`, just the first found: enough to check a folder cheaply."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{what} folder {root}: {'not a directory' if root.exists() else 'no such directory'}")
    found = (p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    files = [file for file in [next(found, None)] if file] if first else sorted(found)
    if not files:
        raise ValueError(f"{what} folder {root} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return files


def build_dataset(source: Any, where: str = "source") -> AudioDataset:
    """A dataset from `{target: package.module:Class, args: {...}}` (config load has expanded a
    preset name into that); anything else is a ValueError naming `where`."""
    if not isinstance(source, dict) or not isinstance(source.get("target"), str) or set(source) - {"target", "args"}:
        raise ValueError(f"{where}: expected a dataset preset name or {{target: package.module:Class, args: {{...}}}}, "
                         f"got {source!r}")  # fmt: skip
    args = source.get("args") or {}
    if not isinstance(args, dict):
        raise ValueError(f"{where}: args must be a mapping, got {args!r}")
    return components.build(source["target"], args, where=where, kind=AudioDataset)


class AudioFiles:
    """The files of a `folder`, or of a `source` dataset's index (some `splits`, some `labels`)."""

    def __init__(
        self,
        what: str,
        folder: str | None = None,
        source: dict | None = None,
        splits: list[str] | None = None,
        labels: list[str] | None = None,
        root: str = DEFAULT_ROOT,
    ):
        self.what, self.folder, self.root = what, folder, root
        self.splits, self.labels = splits, labels
        self.dataset = build_dataset(source) if source is not None else None
        self._files = folder_files(folder, what) if self.dataset is None else None

    @staticmethod
    def check(args: dict[str, Any], what: str) -> None:
        """For `check_together`: a folder that holds audio, or a dataset block that builds, not both;
        `splits` and `labels` only with a source. Nothing is fetched."""
        if (args["folder"] is None) == (args["source"] is None):
            raise ValueError(f"give either folder (your own {what} files) or source (a dataset to fetch), not "
                             f"{'both' if args['folder'] is not None else 'neither'}")  # fmt: skip
        if args["source"] is None:
            unused = [key for key in ("splits", "labels") if args[key] is not None]
            if unused:
                raise ValueError(f"{unused[0]} selects rows of a source dataset; a folder's files are all used")
            folder_files(args["folder"], what, first=True)
            return
        build_dataset(args["source"])

    def prepare(self) -> None:
        """Fetch the source (once; a complete copy is kept) and take its index's files."""
        if self._files is not None:
            return
        dataset = self.dataset
        copy = dataset.fetch(self.root)
        index = dataset.index(self.root)
        # a file fetching found unreadable (indexed with no duration, on_unreadable: skip) is left out
        rows = [
            row for row in index if (self.splits is None or row["split"] in self.splits) and row.get("duration") != ""
        ]
        if self.labels is not None:
            rows = [row for row in rows if row.get(dataset.target_column) in self.labels]
        if not rows:
            raise ValueError(
                f"{self.what} source {dataset.name} ({copy}) has no files in splits {self.splits or 'any'}"
                + (f" with {dataset.target_column} in {self.labels}" if self.labels is not None else "")
            )
        self._files = [index.path_of(row) for row in rows]

    @property
    def files(self) -> list[Path]:
        self.prepare()
        return self._files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Path:
        return self.files[i]
