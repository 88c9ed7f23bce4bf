"""EmoDB (tympan.datasets.emodb) on a miniature replica of its download.zip."""

import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.datasets.corpus import Archive
from tympan.datasets.emodb import SPEAKERS, EmoDB
from tympan.errors import DataError

RATE = 16_000
# two utterances a speaker: (text, emotion letter, version)
TAKES = (("a01", "F", "a"), ("b10", "W", "b"))


@pytest.fixture(autouse=True)
def no_mirror(monkeypatch):
    monkeypatch.delenv("TYMPAN_DATA_MIRROR", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(EmoDB, "utterances", len(SPEAKERS) * len(TAKES))


def names() -> list[str]:
    return [f"{speaker}{text}{emotion}{version}.wav" for speaker in SPEAKERS for text, emotion, version in TAKES]


def ratings(rows: list[str]) -> bytes:
    """erkennung.txt as published: Latin-1, a header, decimal commas, some no-break spaces."""
    lines = ["Satz\terkannt\tnatürlich"] + rows
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> Path:
    """download.zip's layout: wav/, erkennung.txt, erklaerung.txt and the label folders."""
    root = tmp_path_factory.mktemp("emodb")
    rows = []
    for n, name in enumerate(names()):
        path = root / "wav" / name
        path.parent.mkdir(exist_ok=True)
        sf.write(path, np.random.default_rng(n).uniform(-0.3, 0.3, RATE // 5), RATE, subtype="PCM_16")
        rows.append(f"{name}\t{50 + n},5\xa0\t{80 + n % 7},1")
    (root / "erkennung.txt").write_bytes(ratings(rows))
    (root / "erklaerung.txt").write_bytes("Erklärung der Spalten\n".encode("latin-1"))
    for folder in ("lablaut", "labsilb", "silb"):
        (root / folder).mkdir()
        (root / folder / "03a01Faxx.lablaut").write_text("label\n")
    return root


def fetch(tmp_path: Path, source: Path | None, **args):
    dataset = EmoDB(source=str(source) if source else None, **args)
    copy = dataset.fetch(tmp_path / "data")
    return copy, dataset.index(tmp_path / "data")


def test_the_index_splits_by_speaker_with_the_documented_metadata(replica, tmp_path):
    copy, index = fetch(tmp_path, replica)
    assert {s: len(index.split(s)) for s in ("train", "dev", "test")} == {"train": 12, "dev": 4, "test": 4}
    assert {r["speaker"] for r in index.split("dev")} == {"13", "14"}
    assert {r["speaker"] for r in index.split("test")} == {"15", "16"}
    assert index.labels("emotion") == ["anger", "happiness"]
    row = next(r for r in index if r["path"] == "wav/09a01Fa.wav")
    assert row == {"path": "wav/09a01Fa.wav", "split": "train", "emotion": "happiness", "speaker": "09",
                   "gender": "female", "age": "21", "text": "a01", "version": "a", "recognition": "54.5",
                   "duration": "0.2", "sample_rate": "16000", "channels": "1"}  # fmt: skip
    assert {r["gender"] for r in index if r["speaker"] in ("03", "10", "11", "12", "15")} == {"male"}
    assert sorted(p.name for p in copy.iterdir() if not p.name.startswith(".")) == [
        "erkennung.txt", "erklaerung.txt", "wav"
    ]  # fmt: skip


def test_another_speaker_split_and_speakers_left_out(replica, tmp_path):
    _, index = fetch(tmp_path, replica, train_speakers=["03", "08"], dev_speakers=["09"], test_speakers=[])
    assert sorted({r["speaker"] for r in index}) == ["03", "08", "09"] and not index.split("test")
    with pytest.raises(ValueError, match="in both train_speakers and test_speakers"):
        EmoDB(train_speakers=["03"], test_speakers=["03"])
    with pytest.raises(ValueError, match="train_speakers"):
        EmoDB(train_speakers=["3"])


def zipped(root: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue()


def test_a_mirror_holding_download_zip_keeps_only_what_is_indexed(replica, tmp_path, monkeypatch):
    data = zipped(replica)
    (tmp_path / "mirror" / "emodb").mkdir(parents=True)
    (tmp_path / "mirror" / "emodb" / "download.zip").write_bytes(data)
    archive = Archive("http://example.invalid/download/download.zip", f"md5:{hashlib.md5(data).hexdigest()}")
    monkeypatch.setattr(EmoDB, "archives", (archive,))
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(tmp_path / "mirror"))
    copy, index = fetch(tmp_path, None)
    assert len(index) == 20 and not (copy / "lablaut").exists() and (copy / "erkennung.txt").is_file()


def test_a_download_from_a_server(replica, tmp_path, serve):
    _, base = serve({"download.zip": zipped(replica)})
    dataset = EmoDB()
    dataset.archives = (Archive(f"{base}/download.zip"),)  # no checksum published: the content is checked
    copy = dataset.fetch(tmp_path / "data")
    assert len(dataset.index(tmp_path / "data")) == 20 and not (copy / "silb").exists()


def edited(replica: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(replica, folder)
    return folder


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("03a01Fa.wav\tgut\t80,0", r"erkennung\.txt: line 2: erkannt 'gut' is not a number"),
        ("03a01Fa.wav", r"erkennung\.txt: line 2 has 1 fields"),
        ("03a01Fa.wav\t150,0\t80,0", r"erkennung\.txt: line 2: erkannt '150,0' is not a per cent"),
    ],
)
def test_a_malformed_rating_row_is_an_error_naming_the_file(replica, tmp_path, row, message):
    source = edited(replica, tmp_path)
    lines = (source / "erkennung.txt").read_bytes().decode("latin-1").splitlines()
    (source / "erkennung.txt").write_bytes(ratings([row, *lines[2:]]))
    with pytest.raises(DataError, match=message):
        fetch(tmp_path, source)
    assert not (tmp_path / "data" / "emodb").exists()


def test_a_missing_rating_or_recording_is_an_error_naming_it(replica, tmp_path, monkeypatch):
    source = edited(replica, tmp_path)
    lines = (source / "erkennung.txt").read_bytes().decode("latin-1").splitlines()
    (source / "erkennung.txt").write_bytes(ratings(lines[2:]))
    with pytest.raises(DataError, match=r"erkennung\.txt: no row for 03a01Fa\.wav"):
        fetch(tmp_path, source)
    (source / "erkennung.txt").unlink()
    with pytest.raises(DataError, match=r"erkennung\.txt: missing"):
        fetch(tmp_path, source)
    shutil.copy(replica / "erkennung.txt", source)
    (source / "wav" / "16b10Wb.wav").unlink()
    with pytest.raises(DataError, match=r"wav: 19 recordings, EmoDB has 20"):
        fetch(tmp_path, source)
    (source / "wav" / "notes.wav").write_bytes(b"RIFF")  # not an EmoDB name: never taken
    shutil.copy(replica / "wav" / "16b10Wb.wav", source / "wav")
    copy, index = fetch(tmp_path, source)
    assert len(index) == 20 and not (copy / "wav" / "notes.wav").exists()
