"""DCASE 2020 Task 1A (TAU Urban Acoustic Scenes 2020 Mobile, development set) on a miniature
replica of its published layout: 44.1 kHz mono segments named
<scene>-<city>-<location>-<segment>-<device>.wav, the tab-separated meta.csv and fold-1 lists;
from the extracted folder and from the Zenodo archive names."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.datasets.corpus import Archive
from tympan.datasets.dcase2020 import DCASE2020Task1A
from tympan.errors import DataError

ROOT = "TAU-urban-acoustic-scenes-2020-mobile-development"
RATE = 44100
SCENES = ("airport", "bus", "tram")
TRAIN_CITIES, TEST_CITY = ("barcelona", "helsinki", "london"), "lisbon"


def replica(root: Path) -> Path:
    """Per scene and city one location with two segments, recorded by devices a and b (test: s4
    too); an s5 segment is in meta.csv but in neither list, as the official setup leaves some out."""
    base = root / ROOT
    (base / "audio").mkdir(parents=True)
    (base / "evaluation_setup").mkdir()
    meta, lists, location = [], {"train": [], "test": []}, 0
    for scene in SCENES:
        for city in (*TRAIN_CITIES, TEST_CITY):
            location += 1
            split = "test" if city == TEST_CITY else "train"
            devices = ("a", "b", "s4") if split == "test" else ("a", "b")
            for segment in (0, 1):
                for device in (*devices, "s5") if segment == 0 else devices:
                    name = f"audio/{scene}-{city}-{location}-{segment}-{device}.wav"
                    seed = len(meta)
                    sf.write(base / name, np.random.default_rng(seed).uniform(-0.3, 0.3, int(0.1 * RATE)), RATE)
                    meta.append((name, scene, f"{city}-{location}", device))
                    if device != "s5":
                        lists[split].append((name, scene))
    (base / "meta.csv").write_text(_tsv(("filename", "scene_label", "identifier", "source_label"), meta))
    (base / "evaluation_setup/fold1_train.csv").write_text(_tsv(("filename", "scene_label"), lists["train"]))
    (base / "evaluation_setup/fold1_evaluate.csv").write_text(_tsv(("filename", "scene_label"), lists["test"]))
    (base / "evaluation_setup/fold1_test.csv").write_text(_tsv(("filename",), [(n,) for n, _ in lists["test"]]))
    (base / "README.md").write_text("documentation")
    return root


def _tsv(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    return "".join("\t".join(row) + "\n" for row in [header, *rows])


def test_test_is_fold1_evaluate_and_dev_whole_locations_held_out_of_fold1_train(tmp_path):
    source = str(replica(tmp_path / "tau"))
    copy = DCASE2020Task1A(source=source).fetch(tmp_path / "data")
    index = DCASE2020Task1A(source=source).index(tmp_path / "data")
    assert [len(index.split(s)) for s in ("train", "dev", "test")] == [24, 12, 18]
    by_split = {s: {r["location"] for r in index.split(s)} for s in ("train", "dev", "test")}
    assert not (by_split["train"] & by_split["dev"]) and not (by_split["dev"] & by_split["test"])
    assert sorted(r["scene_label"] for r in index.split("dev"))[::4] == ["airport", "bus", "tram"]  # one place each
    assert {r["city"] for r in index.split("test")} == {"lisbon"}
    assert {r["device"] for r in index.split("test")} == {"a", "b", "s4"} and "s5" not in index.labels("device")
    row = next(r for r in index if r["path"].endswith("bus-lisbon-8-1-s4.wav"))
    assert row == {"path": f"{ROOT}/audio/bus-lisbon-8-1-s4.wav", "split": "test", "scene_label": "bus",
                   "device": "s4", "city": "lisbon", "location": "lisbon-8", "duration": "0.1",
                   "sample_rate": "44100", "channels": "1"}  # fmt: skip
    assert not (copy / ROOT / "README.md").exists()
    again = DCASE2020Task1A(seed=0, source=source)
    again.fetch(tmp_path / "again")
    assert [dict(r) for r in again.index(tmp_path / "again")] == [dict(r) for r in index]


def test_the_mirror_may_hold_the_zenodo_archives(tmp_path, monkeypatch):
    base = replica(tmp_path / "tau") / ROOT
    mirror = tmp_path / "mirror" / DCASE2020Task1A.name
    mirror.mkdir(parents=True)
    parts = {
        "meta": [
            "meta.csv",
            "README.md",
            *(f"evaluation_setup/{p.name}" for p in (base / "evaluation_setup").iterdir()),
        ],
        "audio.1": sorted(f"audio/{p.name}" for p in (base / "audio").iterdir())[:30],
        "audio.2": sorted(f"audio/{p.name}" for p in (base / "audio").iterdir())[30:],
    }
    published = []
    for part, members in parts.items():
        file = mirror / f"{ROOT}.{part}.zip"
        with zipfile.ZipFile(file, "w") as archive:
            for member in members:
                archive.write(base / member, f"{ROOT}/{member}")
        published.append(Archive(f"https://unreachable.invalid/{file.name}", f"md5:{_md5(file)}"))
    monkeypatch.setattr(DCASE2020Task1A, "archives", tuple(published))
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(tmp_path / "mirror"))
    copy = DCASE2020Task1A().fetch(tmp_path / "data")
    assert len(DCASE2020Task1A().index(tmp_path / "data")) == 54 and not (copy / ROOT / "README.md").exists()


def test_the_published_archives_are_the_sixteen_audio_zips_and_the_meta_zip():
    names = [a.file_name for a in DCASE2020Task1A.archives]
    assert names[0] == f"{ROOT}.meta.zip" and names[1:] == [f"{ROOT}.audio.{n}.zip" for n in range(1, 17)]
    assert all(len(a.checksum) == 36 and a.checksum[:4] == "md5:" for a in DCASE2020Task1A.archives)


def test_a_file_missing_from_meta_or_a_missing_list_names_the_file(tmp_path):
    source = replica(tmp_path / "tau")
    meta = source / ROOT / "meta.csv"
    meta.write_text("".join(line for line in meta.read_text().splitlines(True) if "tram-london-11-1-b" not in line))
    with pytest.raises(DataError, match=r"meta.csv: no row for audio/tram-london-11-1-b.wav \(listed at .*fold1_train"):
        DCASE2020Task1A(source=str(source)).fetch(tmp_path / "data")
    source = replica(tmp_path / "tau2")
    (source / ROOT / "evaluation_setup/fold1_evaluate.csv").unlink()
    with pytest.raises(DataError, match=r"fold1_evaluate.csv: no such list of the evaluation setup"):
        DCASE2020Task1A(source=str(source)).fetch(tmp_path / "data")
    source = replica(tmp_path / "tau3")
    train = source / ROOT / "evaluation_setup/fold1_train.csv"
    train.write_text(train.read_text().replace("\tbus", "\ttram", 1))
    with pytest.raises(DataError, match=r"meta.csv:\d+: scene 'bus' for audio/bus-barcelona-5-0-a.wav, but 'tram'"):
        DCASE2020Task1A(source=str(source)).fetch(tmp_path / "data")
    assert not (tmp_path / "data" / DCASE2020Task1A.name).exists()


def _md5(file: Path) -> str:
    return hashlib.md5(file.read_bytes()).hexdigest()
