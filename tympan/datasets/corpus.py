"""A named corpus as its publishers distribute it: archives to download, or a local folder.

A `Corpus` subclass states its archives (URL and published checksum), the layout they extract to
(`layout`, with one `marker` path that proves an extracted copy), and how its own metadata files
become index rows (`prepare`). From that it gets, with no more code:

- a download of each archive (resumable, verified, see `tympan.downloads`), extracted safely
  (`archives.extract`) and then deleted;
- `dataset.args.source: /path` and `TYMPAN_DATA_MIRROR/<name>/`: a folder holding either the
  archives (verified, then extracted) or the extracted layout (linked or copied);
- for a corpus that is only given on request (`request` says where), a clear error naming the
  corpus, where to request it and the layout expected, when no source is there.

`about` feeds `tympan datasets`: size, license, access, task and class count.
"""

from __future__ import annotations

import logging
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tympan.datasets import archives
from tympan.datasets.base import About, AudioDataset, link_or_copy
from tympan.downloads import download_file, verify
from tympan.errors import DataError
from tympan.progress import bar

__all__ = ["About", "Archive", "Corpus"]

log = logging.getLogger(__name__)

ARCHIVES = ".archives"  # below the staging folder, so a partial download survives there and resumes


@dataclass(frozen=True)
class Archive:
    """One published file of a corpus: where it is and its published checksum ("md5:..." or
    "sha256:..."; None where the publisher gives none)."""

    url: str
    checksum: str | None = None
    name: str = ""  # the file name; by default the URL's last path segment
    extract: bool = True  # False: a plain file (a label CSV), placed at the top of the copy as it is

    @property
    def file_name(self) -> str:
        return self.name or PurePosixPath(urllib.parse.urlparse(self.url).path).name


class Corpus(AudioDataset):
    """A corpus fetched from its published archives, from `source` or from the data mirror."""

    #: The published files; empty for a corpus given only on request.
    archives: tuple[Archive, ...] = ()
    #: Where to request a corpus that is not public (None: it is public).
    request: str | None = None
    #: The folder layout a local copy has, for error messages ("wav/*.wav, labels.csv").
    layout: str = ""
    #: A path (relative to the copy) that only an extracted copy has.
    marker: str = ""
    about: About

    def __init__(self, source: str | None = None):
        self.source = source

    # ---- what subclasses may refine

    def place(self, member: PurePosixPath) -> PurePosixPath | None:
        """Where an archive member goes in the copy (None: not needed). By default everything, at
        its own path."""
        return member

    def placer(self, archive: Archive) -> archives.Place:
        """How the members of one `archive` are placed: `place` for all, unless a corpus whose
        archives hold the same paths (a separate test set) puts one of them elsewhere."""
        return self.place

    def wanted(self, relative: PurePosixPath) -> bool:
        """Whether a file of an extracted local copy is taken (by default: all)."""
        return True

    # ---- fetching

    def download(self, dest: Path) -> None:
        if self.source:
            source = Path(self.source).expanduser()
            if not source.is_dir():
                raise DataError(f"{self.name}: source {source} is not a folder; {self._expected()}")
            self.copy_from(source, dest)
            return
        if self.request:
            raise DataError(
                f"{self.name} is not public: request it at {self.request}, then set dataset.args.source to "
                f"the folder holding it ({self._expected()})"
            )
        # all downloaded before any is extracted, and all kept until every one is: a failure never
        # costs a finished download
        files = [download_file(a.url, dest / ARCHIVES / a.file_name, checksum=a.checksum) for a in self.archives]
        for archive, file in zip(self.archives, files, strict=True):
            self.take(archive, file, dest)
        shutil.rmtree(dest / ARCHIVES, ignore_errors=True)

    def copy_from(self, src: Path, dest: Path) -> None:
        """Take the extracted layout from `src` if it is there (`marker`), else its archives."""
        if self.marker and (src / self.marker).exists():
            self.link_layout(src, dest)
            return
        found = [src / a.file_name for a in self.archives]
        if self.archives and all(f.is_file() for f in found):
            for archive, file in zip(self.archives, found, strict=True):
                verify(str(file), file, archive.checksum, remove=False)
                self.take(archive, file, dest)
            return
        missing = [f.name for f in found if not f.is_file()]
        raise DataError(
            f"{src}: not a copy of {self.name}: no {self.marker or 'extracted layout'}"
            + (f" and no archive {missing[0]}" if missing else "")
            + f"; {self._expected()}"
        )

    def take(self, archive: Archive, file: Path, dest: Path) -> None:
        """Put one verified published file's content into the copy: extracted, or as it is."""
        if archive.extract:
            archives.extract(file, dest, self.placer(archive))
        else:
            link_or_copy(file, dest / archive.file_name)

    def link_layout(self, src: Path, dest: Path) -> None:
        """Link or copy the `wanted` files of an extracted copy at `src`; hidden files and folders
        (a fetched copy's `.tympan/` records among them) are never taken."""
        for file in bar(sorted(src.rglob("*")), desc=f"copy {self.name}", unit="file"):
            relative = PurePosixPath(file.relative_to(src).as_posix())
            hidden = any(part.startswith(".") for part in relative.parts)
            if not hidden and file.is_file() and self.wanted(relative):
                target = dest / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(file, target)

    def _expected(self) -> str:
        names = ", ".join(a.file_name for a in self.archives)
        archives_text = f" or the archives {names}" if names else ""
        return f"expected the layout {self.layout}{archives_text}"
