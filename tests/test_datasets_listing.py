"""`tympan datasets`: every named corpus with its size, license, access, task, class count, presence
below the data root and presets; a class that is not there, or has no `about`, is an error."""

import importlib
import shutil

import pytest

from tympan.cli import main
from tympan.datasets import catalogue, copies
from tympan.datasets.base import AudioDataset
from tympan.datasets.fsdd import FSDD, FSDDSpeakers
from tympan.errors import DataError


class NoAbout(AudioDataset):
    """A dataset class that a catalogue lists without its `about`."""

    name = "no_about"

    def download(self, dest):
        raise AssertionError("never fetched")

    def prepare(self, dest):
        raise AssertionError("never indexed")


def available() -> list[type]:
    """The classes of CORPORA whose modules are there (others are still being written)."""
    found = []
    for path in catalogue.CORPORA:
        module, _, name = path.partition(":")
        try:
            found.append(getattr(importlib.import_module(module), name))
        except ModuleNotFoundError:
            continue
    return found


@pytest.fixture
def fsdd_copy(fsdd_mirror, tmp_path):
    """A data root holding a real (small) fetched FSDD copy: george's first two takes of each digit."""
    source = tmp_path / "source" / "recordings"
    source.mkdir(parents=True)
    for digit in range(10):
        for take in range(2):
            name = f"{digit}_george_{take}.wav"
            shutil.copyfile(fsdd_mirror / "fsdd" / "recordings" / name, source / name)
    root = tmp_path / "raw"
    FSDD(source=str(source.parent), train_speakers=["george"], dev_speakers=[], test_speakers=[]).fetch(root)
    return root


def blocks(text: str) -> dict[str, list[str]]:
    """The listing's lines per corpus: its table line first, then its detail lines."""
    found, current = {}, None
    for line in text.splitlines()[1:]:
        if line and not line.startswith(" "):
            current = line.split()[0]
            found[current] = [line]
        elif line and current:
            found[current].append(line.strip())
    return found


def test_every_corpus_is_listed_with_its_fields(tmp_path, capsys):
    assert main(["datasets", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    listed = blocks(out)
    classes = available()
    assert FSDD in classes and FSDDSpeakers in classes and len(classes) >= 4  # FSDD's two and the committed corpora
    for cls in classes:
        about, lines = cls.about, listed[cls.__name__]
        head = lines[0].split()
        assert head[1] == cls.name and head[-1] == "no", lines[0]  # folder, and nothing fetched below tmp_path
        assert about.access in lines[0] and ("-" if about.classes is None else str(about.classes)) in head
        details = dict(line.split(None, 1) for line in lines[1:])
        assert details["task"] == about.task and details["size"] == about.size
        assert details["license"] == about.license and details.get("home") == (about.homepage or None)
    assert listed["FSDD"][-1] == "config   dataset: FSDD"
    assert any(line.startswith("MSPPodcastAVD ") and " on request " in line for line in out.splitlines())
    assert f"present in {tmp_path}" in out.splitlines()[0]


def test_a_fetched_copy_is_present_and_shared_variants_too(fsdd_copy, tmp_path):
    (fsdd_copy / "emodb").mkdir()  # a folder under a corpus's name that no fetch made
    entries = {e.path: e for e in catalogue.entries(fsdd_copy)}
    assert entries["tympan.datasets.fsdd:FSDD"].present == "yes (1 index)"
    assert entries["tympan.datasets.fsdd:FSDDSpeakers"].present == "yes (1 index)"  # FSDD's own copy
    if "tympan.datasets.emodb:EmoDB" in {f"{c.__module__}:{c.__name__}" for c in available()}:
        assert entries["tympan.datasets.emodb:EmoDB"].present.startswith("no (a folder without a copy record")
    other = fsdd_copy / "other"
    copies.write_copy_record(other, {"dataset": "tympan.datasets.toy:ToyClassification"}, "test")
    (entry,) = catalogue.entries(fsdd_copy, ("tympan.datasets.fsdd:FSDD",))
    assert entry.present == "yes (1 index)" and entry.presets == ("FSDD",)
    shutil.move(fsdd_copy / "fsdd", tmp_path / "elsewhere")
    shutil.move(other, fsdd_copy / "fsdd")
    (entry,) = catalogue.entries(fsdd_copy, ("tympan.datasets.fsdd:FSDD",))
    assert entry.present == "no (the folder holds {'dataset': 'tympan.datasets.toy:ToyClassification'})"


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("tests.test_datasets_listing:NoAbout", "tests.test_datasets_listing:NoAbout: no `about`"),
        ("tympan.datasets.fsdd:FSDDWords", "tympan.datasets.fsdd:FSDDWords: no class FSDDWords"),
    ],
)
def test_a_class_without_about_or_not_there_is_an_error_naming_it(tmp_path, path, needle):
    with pytest.raises(DataError, match="^" + needle.replace("(", r"\(")):
        catalogue.table(tmp_path, ("tympan.datasets.fsdd:FSDD", path))


def test_the_cli_says_which_class_has_no_about(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(catalogue, "CORPORA", ("tests.test_datasets_listing:NoAbout",))
    assert main(["datasets", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("tympan: error: tests.test_datasets_listing:NoAbout: no `about`")
