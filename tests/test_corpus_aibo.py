"""FAU-AIBO on a miniature replica of the corpus as distributed: wav/<school>_<child>_<turn>_<chunk>.wav
(16 kHz mono) and the IS2009 challenge's label files, beside files of the distribution that are not
needed. The corpus is on request, so: its error without a source, a source, the data mirror, and bad
label files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.datasets.aibo import FAUAIBO
from tympan.datasets.report import AUDIO_COLUMNS
from tympan.errors import DataError

# chunk id -> (5-class label, confidence); the 2-class label follows (A, E: NEG; N, P, R: IDL)
CHUNKS = {
    "Ohm_01_001_00": ("N", "1"),
    "Ohm_01_001_01": ("A", "0.6"),
    "Ohm_02_003_00": ("E", "0.8"),
    "Ohm_02_004_00": ("P", "1"),
    "Ohm_31_010_00": ("R", "0.4"),
    "Ohm_32_002_00": ("E", "1"),
    "Mont_01_000_00": ("N", "1"),
    "Mont_01_000_01": ("A", "0.6"),
    "Mont_02_007_00": ("P", "0.8"),
}
TWO = {"A": "NEG", "E": "NEG", "N": "IDL", "P": "IDL", "R": "IDL"}


def replica(folder: Path, chunks: dict = CHUNKS) -> Path:
    """The corpus folder as FAU distributes it (a few chunks of 0.1 s)."""
    (folder / "wav").mkdir(parents=True)
    labels = folder / "labels" / "IS2009EmotionChallenge"
    labels.mkdir(parents=True)
    for i, chunk in enumerate(chunks):
        sf.write(folder / "wav" / f"{chunk}.wav", np.full(1600, 0.01 * (i + 1), dtype="float32"), 16000,
                 subtype="PCM_16")  # fmt: skip
    five = "".join(f"{chunk} {label} {share}\n" for chunk, (label, share) in chunks.items())
    two = "".join(f"{chunk} {TWO[label]} {share}\n" for chunk, (label, share) in chunks.items())
    (labels / "chunk_labels_5cl_corpus.txt").write_text(five)
    (labels / "chunk_labels_2cl_corpus.txt").write_text(two)
    (folder / "labels" / "CEICES").mkdir()
    (folder / "labels" / "CEICES" / "chunk_labels_4cl_aibo_chunk_set.txt").write_text("Ohm_01_001_00 N 1\n")
    (folder / "transliteration").mkdir()
    (folder / "transliteration" / "Ohm_01.txt").write_text("not needed\n")
    (folder / "README.txt").write_text("FAU Aibo Emotion Corpus\n")
    return folder


def test_the_2_class_task_splits_by_school_with_autrainers_dev_children(tmp_path):
    source = replica(tmp_path / "FAU-Aibo-Emotion-Corpus")
    copy = FAUAIBO(source=str(source)).fetch(tmp_path / "data")
    index = FAUAIBO(source=str(source)).index(tmp_path / "data")
    assert index.columns == ["path", "split", "label", "speaker", "school", "confidence", *AUDIO_COLUMNS]
    by_path = {row["path"]: row for row in index}
    assert by_path["wav/Ohm_01_001_01.wav"] == {"path": "wav/Ohm_01_001_01.wav", "split": "train", "label": "NEG",
                                                "speaker": "Ohm_01", "school": "Ohm", "confidence": "0.6",
                                                "duration": "0.1", "sample_rate": "16000", "channels": "1"}  # fmt: skip
    assert Counter(row["split"] for row in index) == {"train": 4, "dev": 2, "test": 3}
    assert {row["speaker"] for row in index.split("dev")} == {"Ohm_31", "Ohm_32"}
    assert {row["school"] for row in index.split("test")} == {"Mont"}
    assert Counter(row["label"] for row in index) == {"IDL": 5, "NEG": 4}
    assert all(index.path_of(row).is_file() for row in index)
    taken = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file() and ".tympan" not in p.parts)
    assert taken == sorted([f"wav/{c}.wav" for c in CHUNKS] + [
        "labels/IS2009EmotionChallenge/chunk_labels_2cl_corpus.txt",
        "labels/IS2009EmotionChallenge/chunk_labels_5cl_corpus.txt"])  # fmt: skip
    assert sf.info(copy / "wav/Mont_02_007_00.wav").samplerate == 16000


def test_the_5_class_task_is_indexed_beside_the_2_class_one_in_the_same_copy(tmp_path):
    source = str(replica(tmp_path / "corpus"))
    FAUAIBO(source=source).fetch(tmp_path / "data")
    five = FAUAIBO(task="5cl", source=source)
    five.fetch(tmp_path / "data")
    index = five.index(tmp_path / "data")
    assert sorted(index.labels("label")) == ["A", "E", "N", "P", "R"]
    assert {(row["path"], row["label"]) for row in index} == {(f"wav/{c}.wav", five) for c, (five, _) in CHUNKS.items()}
    assert len(FAUAIBO(source=source).index(tmp_path / "data")) == len(CHUNKS)  # the 2-class index is still there
    three = FAUAIBO(task="5cl", dev_speakers=["Ohm_02"], source=source)
    three.fetch(tmp_path / "data")
    assert {row["speaker"] for row in three.index(tmp_path / "data").split("dev")} == {"Ohm_02"}


def test_without_a_source_the_error_names_the_corpus_where_to_request_it_and_the_layout(tmp_path, monkeypatch):
    monkeypatch.delenv("TYMPAN_DATA_MIRROR", raising=False)
    with pytest.raises(DataError) as err:
        FAUAIBO().fetch(tmp_path / "data")
    assert str(err.value) == (
        "fau_aibo is not public: request it at https://www5.cs.fau.de/de/mitarbeiter/steidl-stefan/"
        "fau-aibo-emotion-corpus/, then set dataset.args.source to the folder holding it (expected the layout "
        "wav/<school>_<child>_<turn>_<chunk>.wav (16 kHz) and labels/IS2009EmotionChallenge/"
        "chunk_labels_2cl_corpus.txt, labels/IS2009EmotionChallenge/chunk_labels_5cl_corpus.txt "
        "(lines '<chunk id> <label> <confidence>'))"
    )
    assert not (tmp_path / "data" / "fau_aibo").exists()


def test_the_data_mirror_may_hold_the_corpus_folder(tmp_path, monkeypatch):
    replica(tmp_path / "mirror" / "fau_aibo")
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(tmp_path / "mirror"))
    FAUAIBO(task="5cl").fetch(tmp_path / "data")
    assert len(FAUAIBO(task="5cl").index(tmp_path / "data")) == len(CHUNKS)
    assert (tmp_path / "mirror/fau_aibo/README.txt").is_file()  # the mirror is left as it is


def test_a_source_without_the_tasks_label_file_says_what_it_expects(tmp_path):
    source = replica(tmp_path / "corpus")
    (source / "labels/IS2009EmotionChallenge/chunk_labels_5cl_corpus.txt").unlink()
    with pytest.raises(DataError, match=r"corpus: not a copy of fau_aibo: no labels/IS2009EmotionChallenge/"
                                        r"chunk_labels_5cl_corpus.txt; expected the layout wav/"):  # fmt: skip
        FAUAIBO(task="5cl", source=str(source)).fetch(tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("Ohm_01_009_00 X 1", r":10: label 'X' is not one of the 5cl labels A, E, N, P, R"),
        ("Ohm_01_009_00 N", r":10: expected '<chunk id> <label> <confidence>', got 2 fields"),
        ("Ohm_01_009_00 N 1.5", r":10: confidence '1.5' is not a number in \[0, 1\]"),
        ("School_01_009_00 N 1", r":10: 'School_01_009_00' is not a chunk id"),
        ("Ohm_01_001_00 N 1", r":10: chunk Ohm_01_001_00 is listed twice"),
        ("Ohm_01_009_00 N 1", r":10: wav/Ohm_01_009_00.wav is missing from the copy"),
    ],
)
def test_a_malformed_label_line_is_an_error_naming_the_file_and_line(tmp_path, line, says):
    source = replica(tmp_path / "corpus")
    with open(source / "labels/IS2009EmotionChallenge/chunk_labels_5cl_corpus.txt", "a") as f:
        f.write(line + "\n")
    with pytest.raises(DataError, match=r"chunk_labels_5cl_corpus.txt" + says):
        FAUAIBO(task="5cl", source=str(source)).fetch(tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_dev_children_must_be_ohm_children_with_chunks(tmp_path):
    with pytest.raises(ValueError, match="'Mont_01' is not an Ohm child"):
        FAUAIBO(dev_speakers=["Mont_01"])
    with pytest.raises(ValueError, match="task must be one of 2cl, 5cl"):
        FAUAIBO(task="3cl")
    source = str(replica(tmp_path / "corpus"))
    with pytest.raises(DataError, match=r"chunk_labels_2cl_corpus.txt: no chunks of dev speaker\(s\) Ohm_40"):
        FAUAIBO(dev_speakers=["Ohm_31", "Ohm_40"], source=source).fetch(tmp_path / "data")
