"""DCASE 2018 Task 3 (bird audio detection) on a miniature replica of its three development sets:
44.1 kHz mono clips in wav/<itemid>.wav and the 2018 label CSVs (itemid,datasetid,hasbird); from
the extracted folder, from a mirror of the published files and from a download served here."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.datasets.corpus import Archive
from tympan.datasets.dcase2018 import DCASE2018Task3
from tympan.errors import DataError

RATE = 44100
#: datasetid -> (audio archive, label CSV, item ids: three with bird sound, three without)
SETS = {
    "ff1010bird": ("ff1010bird_wav.zip", "ff1010bird_metadata_2018.csv", ["64486", "2525", "44981", "101", "7", "88"]),
    "warblrb10k": ("warblrb10k_public_wav.zip", "warblrb10k_public_metadata_2018.csv",
                   [f"759808e5-f824-401e-9058-{n:012d}" for n in range(6)]),
    "BirdVox-DCASE-20k": ("BirdVox-DCASE-20k.zip", "BirdVoxDCASE20k_csvpublic.csv",
                          [f"00053d90-e4b9-4045-a2f1-{n:012d}" for n in range(6)]),
}  # fmt: skip


def replica(root: Path) -> Path:
    (root / "wav").mkdir(parents=True)
    for k, (subset, (_, csv_name, items)) in enumerate(SETS.items()):
        for n, item in enumerate(items):
            samples = np.random.default_rng(10 * k + n).uniform(-0.3, 0.3, int(0.1 * RATE))
            sf.write(root / "wav" / f"{item}.wav", samples, RATE, subtype="PCM_16")
        rows = "".join(f"{item},{subset},{int(n < 3)}\n" for n, item in enumerate(items))
        (root / csv_name).write_text("itemid,datasetid,hasbird\n" + rows)
    return root


def published(root: Path) -> dict[str, bytes]:
    """The six published files of the replica: an audio zip per set (wav/<itemid>.wav) and the CSVs."""
    files = {}
    for _, (zip_name, csv_name, items) in SETS.items():
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for item in items:
                archive.write(root / "wav" / f"{item}.wav", f"wav/{item}.wav")
        files[zip_name] = buffer.getvalue()
        files[csv_name] = (root / csv_name).read_bytes()
    return files


def archives_at(base: str, files: dict[str, bytes]) -> tuple[Archive, ...]:
    return tuple(
        Archive(f"{base}/{name}", f"md5:{hashlib.md5(body).hexdigest()}", name, extract=not name.endswith(".csv"))
        for name, body in files.items()
    )


def test_test_is_warblrb10k_and_dev_a_seeded_tenth_of_each_training_set_and_label(tmp_path):
    source = str(replica(tmp_path / "bad"))
    DCASE2018Task3(source=source).fetch(tmp_path / "data")
    index = DCASE2018Task3(source=source).index(tmp_path / "data")
    assert len(index) == 18 and {r["datasetid"] for r in index.split("test")} == {"warblrb10k"}
    dev = index.split("dev")
    assert sorted((r["datasetid"], r["hasbird"]) for r in dev) == [
        ("BirdVox-DCASE-20k", "0"), ("BirdVox-DCASE-20k", "1"), ("ff1010bird", "0"), ("ff1010bird", "1")]  # fmt: skip
    assert len(index.split("train")) == 8 and index.labels("hasbird") == ["0", "1"]
    row = next(r for r in index if r["itemid"] == "2525")
    assert row == {**row, "path": "wav/2525.wav", "hasbird": "1", "datasetid": "ff1010bird"}
    again = DCASE2018Task3(seed=0, source=source)
    again.fetch(tmp_path / "again")
    assert [r["path"] for r in again.index(tmp_path / "again").split("dev")] == [r["path"] for r in dev]


def test_dev_and_test_may_each_be_a_whole_set(tmp_path):
    source = str(replica(tmp_path / "bad"))
    corpus = DCASE2018Task3(test_set="ff1010bird", dev_set="BirdVox-DCASE-20k", source=source)
    corpus.fetch(tmp_path / "data")
    index = corpus.index(tmp_path / "data")
    assert {s: {r["datasetid"] for r in index.split(s)} for s in ("train", "dev", "test")} == {
        "train": {"warblrb10k"}, "dev": {"BirdVox-DCASE-20k"}, "test": {"ff1010bird"}}  # fmt: skip
    with pytest.raises(ValueError, match="dev_set and test_set are both warblrb10k"):
        DCASE2018Task3(dev_set="warblrb10k")


def test_a_download_places_the_csvs_as_they_are_and_extracts_the_audio(serve, tmp_path, monkeypatch):
    files = published(replica(tmp_path / "bad"))
    _, base = serve(files)
    monkeypatch.setattr(DCASE2018Task3, "archives", archives_at(base, files))
    copy = DCASE2018Task3().fetch(tmp_path / "data")
    assert sorted(p.name for p in copy.iterdir() if not p.name.startswith(".")) == sorted(
        ["wav", *(csv for _, csv, _ in SETS.values())]
    )
    assert len(list((copy / "wav").iterdir())) == 18
    assert len(DCASE2018Task3().index(tmp_path / "data")) == 18


def test_the_mirror_may_hold_the_published_files(tmp_path, monkeypatch):
    files = published(replica(tmp_path / "bad"))
    mirror = tmp_path / "mirror" / DCASE2018Task3.name
    mirror.mkdir(parents=True)
    for name, body in files.items():
        (mirror / name).write_bytes(body)
    monkeypatch.setattr(DCASE2018Task3, "archives", archives_at("https://unreachable.invalid", files))
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(tmp_path / "mirror"))
    DCASE2018Task3().fetch(tmp_path / "data")
    assert len(DCASE2018Task3().index(tmp_path / "data").split("test")) == 6
    assert sorted(p.name for p in mirror.iterdir()) == sorted(files)  # the mirror is left as it was


def test_a_malformed_label_or_a_missing_clip_names_the_csv_line(tmp_path):
    source = replica(tmp_path / "bad")
    labels = source / "warblrb10k_public_metadata_2018.csv"
    labels.write_text(labels.read_text().replace(",warblrb10k,1", ",warblrb10k,yes", 1))
    with pytest.raises(DataError, match=r"warblrb10k_public_metadata_2018.csv:2: hasbird 'yes' is not 0 or 1"):
        DCASE2018Task3(source=str(source)).fetch(tmp_path / "data")
    source = replica(tmp_path / "bad2")
    (source / "wav/7.wav").unlink()
    with pytest.raises(DataError, match=r"ff1010bird_metadata_2018.csv:6: wav/7.wav is missing from the copy"):
        DCASE2018Task3(source=str(source)).fetch(tmp_path / "data")
    assert not (tmp_path / "data" / DCASE2018Task3.name).exists()
