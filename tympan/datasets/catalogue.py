"""Every named corpus tympan fetches, and what `tympan datasets` prints about each.

`CORPORA` is the one list of the corpus classes (import paths, as a config names them). Each
class states `about` (`corpus.About`: task, class count, size, license, access, homepage); the
listing adds whether a fetched copy is present below a data root (`<root>/<name>/` with its
copy record, see `copies`) and the dataset presets that name the class. Modules are imported
only when listed; a class that is not there, or states no `about`, is an error naming it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from tympan.config.presets import available_presets, load_preset
from tympan.datasets import copies
from tympan.errors import DataError

__all__ = ["CORPORA", "Entry", "entries", "table"]

CORPORA = (
    "tympan.datasets.fsdd:FSDD",
    "tympan.datasets.fsdd:FSDDSpeakers",
    "tympan.datasets.emodb:EmoDB",
    "tympan.datasets.speech_commands:SpeechCommands",
    "tympan.datasets.dcase2016:DCASE2016Task1",
    "tympan.datasets.dcase2018:DCASE2018Task3",
    "tympan.datasets.dcase2020:DCASE2020Task1A",
    "tympan.datasets.edansa:EDANSA2019",
    "tympan.datasets.audioset:AudioSet",
    "tympan.datasets.aibo:FAUAIBO",
    "tympan.datasets.msp_podcast:MSPPodcast",
    "tympan.datasets.msp_podcast:MSPPodcastAVD",
    "tympan.datasets.noise:ColouredNoise",
)

DEFAULT_ROOT = "data/raw"


@dataclass(frozen=True)
class Entry:
    """One corpus as listed."""

    path: str  # module:Class
    name: str = ""  # the copy's folder below the data root
    about: object = None  # corpus.About
    present: str = ""  # "yes", "no" or what is there instead
    presets: tuple[str, ...] = ()


def entries(root: str | Path = DEFAULT_ROOT, corpora: tuple[str, ...] | None = None) -> list[Entry]:
    """Each corpus of `corpora` (default: CORPORA) with its `about`, its presence below `root` and
    its presets."""
    presets = _presets()
    return [_entry(path, Path(root), presets.get(path, ())) for path in (CORPORA if corpora is None else corpora)]


def _entry(path: str, root: Path, presets: tuple[str, ...]) -> Entry:
    module_name, _, class_name = path.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not isinstance(cls, type):
        raise DataError(f"{path}: no class {class_name} in {module_name} (tympan.datasets.catalogue.CORPORA)")
    about = getattr(cls, "about", None)
    if about is None or not all(hasattr(about, f) for f in ("task", "classes", "size", "license", "access")):
        raise DataError(
            f"{path}: no `about` (corpus.About: task, classes, size, license, access), "
            "which every corpus in tympan.datasets.catalogue.CORPORA states"
        )
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise DataError(f"{path}: no `name` (the folder of its copy below the data root)")
    return Entry(path, name, about, _presence(cls, path, root / name), presets)


def _presence(cls: type, path: str, copy: Path) -> str:
    """ "yes" when `copy` is a fetched copy of this corpus (its copy record says so), else "no",
    or what the folder holds instead."""
    found = copies.copy_record(copy)
    if found is None:
        return "no" if not copy.exists() else "no (a folder without a copy record: fetch it)"
    try:
        expected = cls().copy_of()  # a variant that shares another class's copy says so (FSDDSpeakers)
    except Exception:  # noqa: BLE001 (a class that needs arguments: its copy is the class's own)
        expected = {"dataset": path}
    if found.get("copy of") == expected:
        blocks = len(copies.block_indexes(copy))
        return f"yes ({blocks} {'index' if blocks == 1 else 'indexes'})"
    return f"no (the folder holds {found.get('copy of')})"


def _presets() -> dict[str, tuple[str, ...]]:
    """The dataset presets that name each class: {module:Class: (preset, ...)}."""
    named: dict[str, list[str]] = {}
    for preset in available_presets("datasets"):
        target = (load_preset("datasets", preset) or {}).get("target")
        if isinstance(target, str):
            named.setdefault(target, []).append(preset)
    return {target: tuple(names) for target, names in named.items()}


def table(root: str | Path = DEFAULT_ROOT, corpora: tuple[str, ...] | None = None) -> str:
    """The listing: a line per corpus (class, access, classes, present), then its task, size,
    license, homepage and presets."""
    listed = entries(root, corpora)
    header = ("corpus", "folder", "access", "classes", f"present in {root}")
    cells = [header] + [
        (e.path.partition(":")[2], e.name, e.about.access, _classes(e.about.classes), e.present) for e in listed
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for number, row in enumerate(cells):
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if number:
            lines += _details(listed[number - 1])
    return "\n".join(lines)


def _classes(classes: int | None) -> str:
    return "-" if classes is None else str(classes)


def _details(entry: Entry) -> list[str]:
    about = entry.about
    lines = [f"    task     {about.task}", f"    size     {about.size}", f"    license  {about.license}"]
    if about.homepage:
        lines.append(f"    home     {about.homepage}")
    first, *others = entry.presets or (f"{{target: {entry.path}}}",)
    lines.append(f"    config   dataset: {first}" + (f"  (or {', '.join(others)})" if others else ""))
    return lines
