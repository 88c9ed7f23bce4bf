"""Dataset base class, and safe, resumable fetching.

A dataset is fetched once into `<root>/<name>/`: its audio files, shared by every config that
uses the corpus, plus one index per dataset block in the copy's `.tympan/` folder (see
`copies`): the same corpus with another split is another index beside the same audio, and
`AudioDataset.index(root)` gives a block its own index or refuses, naming the others. Everything
after fetching reads only that index, so a new dataset needs nothing but a `download` and a
`prepare` method, as in lhotse's recipes.

Fetching is built so that an interrupted or corrupt fetch never looks done:
files are gathered in a hidden staging dir `<root>/.<name>.partial/` (where a
`.part` download survives and resumes), verified, indexed, and only then
renamed to `<root>/<name>/`. A read-only mirror named by `TYMPAN_DATA_MIRROR`
stands in for the download on machines without internet. A copy records what it is a copy of;
fetching anything else under its name is refused, so a fetch never replaces another dataset's copy.

Every fetch, whatever the dataset, reads each indexed file's header (never its samples) into the
index's `duration`, `sample_rate` and `channels` columns, and writes the block's data report
beside its index (see `report`): files and duration per split, rates and channels, class balance
or target ranges, and the files that are unreadable.
"""

from __future__ import annotations

import abc
import inspect
import json
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from tympan.components import Checked
from tympan.datasets import copies
from tympan.datasets import report as datareport
from tympan.datasets.copies import META
from tympan.datasets.index import SPLITS, Index, index_columns, kind, read_index, write_rows
from tympan.downloads import download_file
from tympan.errors import DataError
from tympan.fileio import write_text
from tympan.progress import bar

__all__ = [
    "About",
    "AudioDataset",
    "Index",
    "SPLITS",
    "download_file",
    "link_or_copy",
]

log = logging.getLogger(__name__)

MIRROR_ENV = "TYMPAN_DATA_MIRROR"


# ---------------------------------------------------------------- datasets


@dataclass(frozen=True)
class About:
    """What `tympan datasets` says about a corpus (see `corpus` and `catalogue`)."""

    task: str  # e.g. "7 emotions (classification)"
    classes: int | None  # None for regression
    size: str  # e.g. "535 clips, 25 min, 40 MB"
    license: str
    access: str = "public"  # or "on request"
    homepage: str = ""


class AudioDataset(Checked, abc.ABC):
    """One corpus: how to get its raw files (`download`) and how to index them (`prepare`).

    Subclasses set `name` (the directory name, lower-case), `target_column` (or `targets`,
    when a task reads several columns) and `default_task`, and may override `verify` (check
    the gathered files), `copy_from` (take files from a local mirror or directory), `copy_of`
    (what a copy holds) and `inputs` (local files that `prepare` reads besides the copy).
    """

    name: str
    target_column: str = "label"
    #: The task preset used when the config has no `task:` block.
    default_task: str = "classification"
    #: An explicit local directory or archive (set by subclasses that accept one);
    #: when set, it wins over the `TYMPAN_DATA_MIRROR` mirror.
    source: str | None = None
    #: Whether a fetch adds this block's files to an existing copy (local audio, where blocks may
    #: list different files of one source) instead of fetching a damaged copy again whole.
    adds_in_place: bool = False
    #: What `tympan datasets` says about a named corpus (size, license, access, task, classes);
    #: every corpus in `catalogue.CORPORA` has one. Your own audio (table, folder) has none.
    about: About | None = None

    def __new__(cls, *args, **kwargs):
        """Keep the arguments the dataset is built with, defaults included: with the class they are
        the dataset block that keys its index, however the dataset was built (config or code)."""
        self = super().__new__(cls)
        try:
            bound = inspect.signature(cls).bind(*args, **kwargs)
            bound.apply_defaults()
            self._arguments = copies.plain(dict(bound.arguments))
        except TypeError:  # the constructor says what is wrong; an unpickled copy gets its own __dict__
            self._arguments = {}
        return self

    @property
    def targets(self) -> list[str]:
        """The index columns a task reads (subclasses with several targets override this)."""
        return [self.target_column]

    @abc.abstractmethod
    def download(self, dest: Path) -> None:
        """Put the raw files into `dest` (a staging dir that may hold a previous partial attempt)."""

    @abc.abstractmethod
    def prepare(self, dest: Path) -> list[dict[str, str]]:
        """Return the index rows for the files in `dest` (new dicts each call: fetching adds each
        file's measured `duration`, `sample_rate` and `channels` to them)."""

    def verify(self, dest: Path) -> None:  # noqa: B027 (optional hook, not abstract)
        """Raise DataError if the files in `dest` are incomplete or not what was expected."""

    def copy_from(self, src: Path, dest: Path) -> None:
        """Take the raw files from a local directory `src` (never modifying it) into `dest`."""
        files = [p for p in sorted(src.rglob("*")) if p.is_file()]
        for file in bar(files, desc=f"copy {self.name}", unit="file"):
            target = dest / file.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(file, target)

    def mirror(self) -> Path | None:
        """`$TYMPAN_DATA_MIRROR/<name>/` when that exists and no explicit source is set."""
        root = os.environ.get(MIRROR_ENV)
        if self.source or not root:
            return None
        path = Path(root) / self.name.lower()
        return path if path.is_dir() else None

    # ---- what a copy holds and which index is this block's

    def block(self) -> dict:
        """This dataset block: its class and the arguments it was built with."""
        cls = type(self)
        return {"dataset": f"{cls.__module__}:{cls.__qualname__}", "args": self._arguments}

    def copy_of(self) -> dict:
        """What a copy of this dataset holds: a copy of anything else under its name is refused. A
        corpus is the same corpus from any source (its `verify` checks the files), so: the class."""
        return {"dataset": self.block()["dataset"]}

    def inputs(self) -> dict[str, str | None]:
        """What `prepare` reads besides the copy, as {path: digest of its content, None if it is
        gone}: a table's CSV. Its content keys the index, so an edit needs a new fetch."""
        return {}

    def index_record(self) -> dict:
        """What this block's index depends on: the block and its inputs' digests."""
        return {**self.block(), "inputs": self.inputs()}

    def index(self, root: str | Path) -> Index:
        """The index that this dataset block's fetch made in its copy below `root`.

        Another block's index (another split of the same corpus) never stands in for it: without
        one of its own this is a DataError that names the block and the copy's other indexes,
        or the local file that changed since the fetch."""
        copy, record = Path(root) / self.name, self.index_record()
        file = copies.index_file(copy, copies.key_of(record))
        if file.is_file():
            return read_index(file, copy)
        others = copies.block_indexes(copy)
        mine = [key for key, found in others.items() if copies.same_block(found, record)]
        fetched = [others[key].get("inputs", {}) for key in mine]
        changed = [p for p, sha in record["inputs"].items() if sha and all(f.get(p) != sha for f in fetched)]
        gone = [p for p, sha in record["inputs"].items() if sha is None]
        if mine and changed:
            raise DataError(
                f"{changed[0]}: changed since `tympan fetch` indexed it into {copy}; "
                "run `tympan fetch` with this config again"
            )
        if len(mine) == 1 and gone:  # e.g. a copy pulled with DVC, without the CSV it was made from
            log.warning("%s: not found, so not checked; using the index fetched from it", ", ".join(gone))
            return read_index(copies.index_file(copy, mine[0]), copy)
        if others:
            raise DataError(
                f"{copy}: no index of this dataset block ({record['dataset']}), only other blocks' indexes "
                f"({copies.others_text(record, others)}); run `tympan fetch` with this config"
            )
        if (copy / "index.csv").is_file():
            raise DataError(f"{copy}: fetched by an older tympan; run `tympan fetch` with this config to index it")
        raise DataError(
            f"{copy}: no index of this dataset block; fetch the dataset first (`tympan fetch` with this config)"
        )

    # ---- fetching

    def fetch(self, root: str | Path, on_unreadable: str = "raise") -> Path:
        """Make `<root>/<name>/` hold the verified files and this block's index; return that dir.

        Does nothing if the files are there and verify and the index is this block's, only writes
        the index if the audio is there, else fetches again (keeping other blocks' indexes). A
        copy of another source under the same name is refused, never replaced. A failure leaves
        no new `<root>/<name>/`; a partial download stays in `<root>/.<name>.partial/` and the
        next call resumes it. Each indexed file's header gives its row `duration`, `sample_rate` and
        `channels`; a file without a readable header (empty, not audio) fails the fetch, or with
        `on_unreadable="skip"` (the dataset block's policy) stays indexed with those columns empty
        and a warning, for preprocessing to skip and report. The data report goes beside the index.
        """
        root = Path(root)
        final = root / self.name
        if final.exists():
            self._claim(final)
            if self.adds_in_place:  # never fetched again whole: other blocks' files are in it
                self._gather(final)
                return self._write_index(final, final, *self._check_copy(final, on_unreadable))
            checked = self._complete_rows(final, on_unreadable)
            if checked is not None:
                return self._write_index(final, final, *checked)
        staging = root / f".{self.name}.partial"
        staging.mkdir(parents=True, exist_ok=True)
        try:
            self._gather(staging)
            self.verify(staging)
            rows = self.prepare(staging)
            unreadable = datareport.measure(Index(staging, rows), on_unreadable, self._what())
            copies.write_copy_record(staging, self.copy_of(), self.block()["dataset"])
            self._write_index(staging, final, rows, unreadable)
            _keep_indexes(final, staging, self.index_record())
        except BaseException:
            _discard_unless_resumable(staging)
            raise
        _replace_dir(staging, final)
        return final

    def _claim(self, final: Path) -> None:
        """Refuse a copy of anything else; adopt a copy made before copies had records if it verifies."""
        found = copies.copy_record(final)
        if found is None:
            try:
                self.verify(final)
            except DataError as err:
                raise DataError(
                    f"{final}: not a copy of {self.copy_of()} (no {META}/{copies.COPY_RECORD}, and {err}); "
                    "move it away, or set dataset.args.name where the dataset takes one"
                ) from None
            (final / "index.csv").unlink(missing_ok=True)  # an older tympan's one index; superseded
            copies.write_copy_record(final, self.copy_of(), self.block()["dataset"])
        elif found["copy of"] != self.copy_of():
            raise DataError(
                f"{final}: already a copy of {found['copy of']}, not of {self.copy_of()}; a fetch never "
                "replaces another dataset's copy: set dataset.args.name to fetch this one beside it"
            )

    def _gather(self, staging: Path) -> None:
        mirror = self.mirror()
        if mirror is not None:
            log.info("%s: taking files from the mirror %s", self.name, mirror)
            self.copy_from(mirror, staging)
        else:
            self.download(staging)

    def _check_copy(self, dataset_dir: Path, on_unreadable: str) -> tuple[list[dict[str, str]], dict[str, str]]:
        """This block's rows (measured) and its unreadable files ({path: reason}), once its files are
        all there (readable, unless skipped) and verify."""
        self.verify(dataset_dir)
        rows = self.prepare(dataset_dir)
        index = Index(dataset_dir, rows)
        missing = [row["path"] for row in index if not index.path_of(row).is_file()]
        if missing:
            raise DataError(f"{dataset_dir}: {len(missing)} indexed files missing, e.g. {missing[0]}")
        return rows, datareport.measure(index, on_unreadable, self._what())

    def _complete_rows(self, dataset_dir: Path, on_unreadable: str) -> tuple[list, dict] | None:
        """`_check_copy`'s rows and unreadable files if the copy is complete for this block, else
        None (with a warning)."""
        try:
            return self._check_copy(dataset_dir, on_unreadable)
        except DataError as err:
            log.warning("%s; fetching again", err)
            return None

    def _what(self) -> str:
        """What an error about the index rows names: the file they come from, else the dataset."""
        inputs = self.inputs()
        return next(iter(inputs)) if inputs else f"{self.name} ({self.block()['dataset']})"

    def _write_index(
        self, dataset_dir: Path, final: Path, rows: list[dict[str, str]], unreadable: dict[str, str]
    ) -> Path:
        """Write this block's index of `rows` into `dataset_dir` (to be `final`) unless it is there,
        and its data report beside it; one pass over the rows does both, a row at a time."""
        record = self.index_record()
        key = copies.key_of(record)
        file = copies.index_file(dataset_dir, key)
        tally = datareport.Tally(self.name, self.default_task, self.targets)

        def tallied():
            for row in rows:
                yield row
                tally.add(row, unreadable.get(row["path"]))  # once the writer has checked it

        columns = index_columns(rows)
        write = lambda out: write_rows(out, file, columns, tallied())  # noqa: E731
        if copies.write_block_index(dataset_dir, key, {**record, "rows": len(rows)}, write):
            log.info("%s: %d files indexed in %s", self.name, len(rows), copies.index_file(final, key))
        else:
            log.info("%s is already fetched in %s; nothing to do", self.name, final)
        found = tally.result(f"{META}/{file.name}", record)
        data, text = copies.report_files(dataset_dir, key)
        for path, content in ((data, json.dumps(found, indent=2) + "\n"), (text, datareport.markdown(found))):
            if not path.is_file() or path.read_text(encoding="utf-8") != content:
                write_text(path, content)
        return final

    def report_files(self, root: str | Path) -> tuple[Path, Path]:
        """Where this block's data report is in its copy below `root`: JSON and Markdown."""
        return copies.report_files(Path(root) / self.name, copies.key_of(self.index_record()))

    def report(self, root: str | Path) -> dict | None:
        """The data report of this block's index in its copy below `root` (see `report`); None
        when there is none (a copy indexed by an older tympan: fetch again to make one)."""
        found = copies.read_json(self.report_files(root)[0])
        return found if isinstance(found, dict) and "splits" in found else None


def _keep_indexes(old: Path, new: Path, record: dict) -> None:
    """Carry the other blocks' indexes of a copy fetched again (the same source) into the new one."""
    for key, found in copies.block_indexes(old).items() if old.is_dir() else []:
        if not copies.same_block(found, record):
            for file in copies.block_files(old, key):
                if file.is_file():  # an index made by an older tympan has no report
                    shutil.copyfile(file, new / META / file.name)


def _replace_dir(src: Path, dest: Path) -> None:
    """Rename `src` to `dest`, moving an old `dest` out of the way first."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(src, dest)
        shutil.rmtree(old)
    else:
        os.replace(src, dest)


def _discard_unless_resumable(staging: Path) -> None:
    if any(staging.rglob("*.part")):
        log.warning("partial download kept in %s; fetch again to resume", staging)
    else:
        shutil.rmtree(staging, ignore_errors=True)


def link_or_copy(src: Path, dest: Path) -> None:
    """Put the regular file `src` at `dest` (atomically, keeping its permissions): hard-linked
    when that cannot expose `src` to writes, else copied. Anything but a regular file (a FIFO, a
    device) is a DataError: it is never read.

    A hard link shares the file, so it is used only when `src` is read-only to
    us: then nothing done to `dest` can change the mirror it came from.
    """
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    except OSError as err:
        raise DataError(f"{src}: cannot read it ({err.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DataError(f"{src}: not a regular file ({kind(mode)}); only regular files are fetched")
    with os.fdopen(fd, "rb") as source:
        if not _linked(src, tmp, fd):
            with open(tmp, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            os.chmod(tmp, stat.S_IMODE(mode))  # the source's permissions, not the umask's default
    os.replace(tmp, dest)


def _linked(src: Path, tmp: Path, fd: int) -> bool:
    """Hard-link `src` to `tmp` if `src` is read-only to us and the link is the file `fd` holds open."""
    if os.access(src, os.W_OK):
        return False
    try:
        os.link(src, tmp, follow_symlinks=False)
    except OSError:
        return False  # another file system, or links not allowed: copy instead
    if os.stat(tmp, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:  # src was swapped meanwhile
        tmp.unlink()
        return False
    return True
