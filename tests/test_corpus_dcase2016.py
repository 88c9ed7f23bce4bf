"""DCASE 2016 Task 1 (TUT Acoustic Scenes 2016) on a miniature replica of its published layout:
44.1 kHz 24-bit stereo segments named <location>_<start>_<end>.wav, the development set's
tab-separated fold lists, meta.txt and error.txt, and the evaluation set's numbered files with
meta.txt and evaluate.txt; from the extracted folders and from the Zenodo archive names."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.datasets.corpus import Archive
from tympan.datasets.dcase2016 import DCASE2016Task1
from tympan.errors import DataError

DEV = "TUT-acoustic-scenes-2016-development"
EVAL = "TUT-acoustic-scenes-2016-evaluation"
RATE = 44100
#: scene -> its two recording locations; fold 1 evaluates on the first, fold 2 on the second
LOCATIONS = {"beach": ("a001", "a002"), "cafe/restaurant": ("b003", "b004"), "tram": ("c005", "c006")}
SEGMENTS = ("0_30", "30_60")
ERROR = ("a002_30_60.wav", "10.000", "12.500", "microphone failure")
#: evaluation file -> (scene, original name)
EVALUATION = {"1.wav": ("tram", "c107_60_90.wav"), "2.wav": ("beach", "a108_0_30.wav"),
              "3.wav": ("cafe/restaurant", "b109_30_60.wav")}  # fmt: skip


def clip(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.random.default_rng(seed).uniform(-0.3, 0.3, (int(0.1 * RATE), 2))
    sf.write(path, samples, RATE, subtype="PCM_24")


def lines(*rows: tuple[str, ...]) -> str:
    return "".join("\t".join(row) + "\n" for row in rows)


def replica(root: Path) -> Path:
    """The two extracted sets as the archives lay them out (doc files included, to be left out)."""
    dev, seed = root / DEV, 0
    for places in LOCATIONS.values():
        for place in places:
            for segment in SEGMENTS:
                clip(dev / "audio" / f"{place}_{segment}.wav", seed := seed + 1)
    every = [(f"audio/{p}_{s}.wav", scene) for scene, places in LOCATIONS.items() for p in places for s in SEGMENTS]
    (dev / "meta.txt").write_text(lines(*every))
    (dev / "error.txt").write_text(lines((f"audio/{ERROR[0]}", *ERROR[1:])))
    (dev / "README.html").write_text("<p>documentation</p>")
    setup = dev / "evaluation_setup"
    setup.mkdir()
    for fold in (1, 2):
        held = {places[fold - 1] for places in LOCATIONS.values()}
        evaluate = [row for row in every if row[0][6:10] in held]
        train = [row for row in every if row[0][6:10] not in held]
        (setup / f"fold{fold}_train.txt").write_text(lines(*train))
        (setup / f"fold{fold}_evaluate.txt").write_text(lines(*evaluate))
        (setup / f"fold{fold}_test.txt").write_text(lines(*[(name,) for name, _ in evaluate]))
    evaluation = root / EVAL
    for name in EVALUATION:
        clip(evaluation / "audio" / name, seed := seed + 1)
    (evaluation / "meta.txt").write_text(lines(*[(f"audio/{n}", scene) for n, (scene, _) in EVALUATION.items()]))
    (evaluation / "evaluation_setup").mkdir()
    (evaluation / "evaluation_setup/evaluate.txt").write_text(
        lines(*[(f"audio/{n}", scene, f"audio/{original}") for n, (scene, original) in EVALUATION.items()])
    )
    return root


def zipped(root: Path, folder: str, members: list[str], out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as archive:
        for member in members:
            archive.write(root / folder / member, f"{folder}/{member}")
    return out


def test_fold_1_is_the_official_cross_validation_fold_and_test_the_evaluation_set(tmp_path):
    source = replica(tmp_path / "tut")
    copy = DCASE2016Task1(source=str(source)).fetch(tmp_path / "data")
    index = DCASE2016Task1(source=str(source)).index(tmp_path / "data")
    rows = {row["path"]: row for row in index}
    assert [len(index.split(s)) for s in ("train", "dev", "test")] == [6, 6, 3]
    assert {row["location"] for row in index.split("dev")} == {"a001", "b003", "c005"}
    assert {row["location"] for row in index.split("train")} == {"a002", "b004", "c006"}
    assert rows[f"{DEV}/audio/b004_30_60.wav"]["scene_label"] == "cafe/restaurant"
    assert rows[f"{DEV}/audio/a002_30_60.wav"]["audio_error"] == "10.000-12.500 s: microphone failure"
    assert sum(bool(row["audio_error"]) for row in index) == 1  # kept, as the official folds keep it
    assert [(r["path"], r["scene_label"], r["location"]) for r in index.split("test")] == [
        (f"{EVAL}/audio/1.wav", "tram", "c107"), (f"{EVAL}/audio/2.wav", "beach", "a108"),
        (f"{EVAL}/audio/3.wav", "cafe/restaurant", "b109")]  # fmt: skip
    assert sf.info(copy / f"{EVAL}/audio/1.wav").channels == 2
    assert not (copy / DEV / "README.html").exists()


def test_another_fold_is_another_index_of_the_same_copy_and_drop_errors_follows_autrainer(tmp_path):
    source = str(replica(tmp_path / "tut"))
    DCASE2016Task1(source=source).fetch(tmp_path / "data")
    second = DCASE2016Task1(fold=2, drop_errors=True, source=source)
    second.fetch(tmp_path / "data")
    index = second.index(tmp_path / "data")
    assert {row["location"] for row in index.split("dev")} == {"a002", "b004", "c006"}
    assert len(index.split("dev")) == 5 and f"{DEV}/audio/{ERROR[0]}" not in {row["path"] for row in index}
    assert len(DCASE2016Task1(source=source).index(tmp_path / "data")) == 15  # fold 1's index is still there


def test_the_mirror_may_hold_the_zenodo_archives(tmp_path, monkeypatch):
    root = replica(tmp_path / "tut")
    mirror = tmp_path / "mirror" / DCASE2016Task1.name
    mirror.mkdir(parents=True)
    dev_audio = sorted(p.relative_to(root / DEV).as_posix() for p in (root / DEV / "audio").iterdir())
    setup = sorted(f"evaluation_setup/{p.name}" for p in (root / DEV / "evaluation_setup").iterdir())
    files = [
        zipped(root, DEV, ["meta.txt", "README.html", *setup], mirror / f"{DEV}.meta.zip"),
        zipped(root, DEV, ["error.txt"], mirror / f"{DEV}.error.zip"),
        zipped(root, DEV, dev_audio, mirror / f"{DEV}.audio.1.zip"),
        zipped(root, EVAL, ["meta.txt", "evaluation_setup/evaluate.txt"], mirror / f"{EVAL}.meta.zip"),
        zipped(root, EVAL, [f"audio/{n}" for n in EVALUATION], mirror / f"{EVAL}.audio.1.zip"),
    ]
    published = tuple(Archive(f"https://unreachable.invalid/{f.name}", f"md5:{_md5(f)}") for f in files)
    monkeypatch.setattr(DCASE2016Task1, "archives", published)
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(tmp_path / "mirror"))
    copy = DCASE2016Task1().fetch(tmp_path / "data")
    from_archives = [dict(row) for row in DCASE2016Task1().index(tmp_path / "data")]
    monkeypatch.delenv("TYMPAN_DATA_MIRROR")
    DCASE2016Task1(source=str(root)).fetch(tmp_path / "other")
    assert from_archives == [dict(row) for row in DCASE2016Task1(source=str(root)).index(tmp_path / "other")]
    assert not (copy / DEV / "README.html").exists() and not (copy / ".archives").exists()


def test_the_published_archives_are_named_with_their_md5():
    names = [a.file_name for a in DCASE2016Task1.archives]
    assert len(names) == 14 and all(
        a.checksum.startswith("md5:") and len(a.checksum) == 36 for a in DCASE2016Task1.archives
    )
    assert f"{DEV}.audio.8.zip" in names and f"{EVAL}.audio.3.zip" in names and f"{DEV}.error.zip" in names


def test_an_unknown_scene_or_a_missing_meta_file_names_the_file(tmp_path):
    source = replica(tmp_path / "tut")
    train = source / DEV / "evaluation_setup/fold1_train.txt"
    train.write_text(train.read_text().replace("\tbeach", "\tbeach_party", 1))
    with pytest.raises(DataError, match=r"fold1_train.txt:1: scene 'beach_party' is not one of the 15 scenes"):
        DCASE2016Task1(source=str(source)).fetch(tmp_path / "data")
    source = replica(tmp_path / "tut2")
    (source / EVAL / "meta.txt").unlink()
    with pytest.raises(DataError, match=rf"{EVAL}/meta.txt: no such meta file of the evaluation set"):
        DCASE2016Task1(source=str(source)).fetch(tmp_path / "data")
    assert not (tmp_path / "data" / DCASE2016Task1.name).exists()


def _md5(file: Path) -> str:
    return hashlib.md5(file.read_bytes()).hexdigest()
