"""MSP-Podcast on a miniature replica of a release as distributed: Audios/MSP-PODCAST_<podcast>_<turn>.wav
(16 kHz mono) and Labels/labels_consensus.csv, beside files of the release that are not needed. The
categorical and the dimensional tasks share one copy; the corpus is on request, so: its error without
a source, a source, the data mirror, and bad label files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.datasets.msp_podcast import MSPPodcast, MSPPodcastAVD
from tympan.datasets.report import AUDIO_COLUMNS
from tympan.errors import DataError

HEADER = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"
# FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set
TURNS = [
    ("MSP-PODCAST_0001_0008.wav", "N", "4.2", "4.0", "4.4", "127", "Female", "Train"),
    ("MSP-PODCAST_0001_0010.wav", "A", "5.8", "2.2", "5.6", "127", "Female", "Train"),
    ("MSP-PODCAST_0002_0031.wav", "H", "4.6", "5.8", "4.2", "Unknown", "Unknown", "Train"),
    ("MSP-PODCAST_0002_0040.wav", "X", "3.0", "3.4", "3.2", "Unknown", "Unknown", "Train"),
    ("MSP-PODCAST_0003_0001.wav", "O", "4.0", "4.6", "4.0", "310", "Male", "Train"),
    ("MSP-PODCAST_0004_0012.wav", "S", "2.4", "2.6", "3.0", "59", "Male", "Development"),
    ("MSP-PODCAST_0004_0020.wav", "U", "5.2", "4.4", "4.6", "59", "Male", "Development"),
    ("MSP-PODCAST_0005_0002.wav", "C", "4.0", "3.2", "4.8", "18", "Female", "Test1"),
    ("MSP-PODCAST_0005_0003.wav", "H", "4.8", "6.0", "4.6", "18", "Female", "Test1"),
    ("MSP-PODCAST_0006_0100.wav", "D", "4.4", "2.8", "4.4", "1207", "Male", "Test2"),
    ("MSP-PODCAST_0006_0101.wav", "N", "3.8", "4.2", "3.8", "1207", "Male", "Test2"),
    ("MSP-PODCAST_0007_0005.wav", "", "", "", "", "Unknown", "Unknown", "Test3"),  # labels withheld
]


def replica(folder: Path, turns: list[tuple] = TURNS, header: str = HEADER) -> Path:
    """A release folder as distributed (a few turns of 0.1 s)."""
    (folder / "Audios").mkdir(parents=True)
    (folder / "Labels").mkdir()
    for i, turn in enumerate(turns):
        sf.write(folder / "Audios" / turn[0], np.full(1600, 0.01 * (i + 1), dtype="float32"), 16000, subtype="PCM_16")
    (folder / "Labels/labels_consensus.csv").write_text("\n".join([header, *(",".join(t) for t in turns)]) + "\n")
    (folder / "Labels/labels_detailed.csv").write_text("FileName,Annotator\n")
    (folder / "Transcripts").mkdir()
    (folder / "Transcripts/MSP-PODCAST_0001_0008.txt").write_text("not needed\n")
    (folder / "Partitions.txt").write_text("Train; MSP-PODCAST_0001_0008.wav\n")
    return folder


def test_the_categorical_task_keeps_the_primary_emotions_of_train_development_and_test1(tmp_path):
    source = str(replica(tmp_path / "MSP-PODCAST-Publish-1.11"))
    copy = MSPPodcast(source=source).fetch(tmp_path / "data")
    index = MSPPodcast(source=source).index(tmp_path / "data")
    assert index.columns == [
        "path",
        "split",
        "emotion",
        "arousal",
        "valence",
        "dominance",
        "speaker",
        "gender",
        *AUDIO_COLUMNS,
    ]
    assert {(row["path"], row["split"], row["emotion"]) for row in index} == {
        ("Audios/MSP-PODCAST_0001_0008.wav", "train", "N"),
        ("Audios/MSP-PODCAST_0001_0010.wav", "train", "A"),
        ("Audios/MSP-PODCAST_0002_0031.wav", "train", "H"),
        ("Audios/MSP-PODCAST_0004_0012.wav", "dev", "S"),
        ("Audios/MSP-PODCAST_0004_0020.wav", "dev", "U"),
        ("Audios/MSP-PODCAST_0005_0002.wav", "test", "C"),
        ("Audios/MSP-PODCAST_0005_0003.wav", "test", "H"),
    }  # X (no agreement), O (other), Test2 and the unlabelled Test3 left out
    unknown = next(row for row in index if row["path"].endswith("0002_0031.wav"))
    assert unknown == {"path": "Audios/MSP-PODCAST_0002_0031.wav", "split": "train", "emotion": "H", "arousal": "4.6",
                       "valence": "5.8", "dominance": "4.2", "speaker": "Unknown", "gender": "Unknown",
                       "duration": "0.1", "sample_rate": "16000", "channels": "1"}  # fmt: skip
    taken = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file() and ".tympan" not in p.parts)
    assert taken == sorted([f"Audios/{t[0]}" for t in TURNS] + ["Labels/labels_consensus.csv"])
    assert sf.info(copy / "Audios/MSP-PODCAST_0001_0008.wav").samplerate == 16000


def test_four_classes_and_test2_are_options(tmp_path):
    source = str(replica(tmp_path / "release"))
    four = MSPPodcast(classes=["A", "H", "N", "S"], test_set="Test2", source=source)
    four.fetch(tmp_path / "data")
    index = four.index(tmp_path / "data")
    assert Counter((row["split"], row["emotion"]) for row in index) == {
        ("train", "N"): 1, ("train", "A"): 1, ("train", "H"): 1, ("dev", "S"): 1, ("test", "N"): 1}  # fmt: skip
    with_other = MSPPodcast(classes=["N", "O"], source=source)
    with pytest.raises(DataError, match=r"labels_consensus.csv: no labelled turns of Development for emotion"):
        with_other.fetch(tmp_path / "data")


def test_the_dimensional_task_regresses_every_rated_turn_on_the_same_copy(tmp_path):
    source = str(replica(tmp_path / "release"))
    MSPPodcast(source=source).fetch(tmp_path / "data")
    avd = MSPPodcastAVD(source=source)
    assert avd.targets == ["arousal", "valence", "dominance"] and avd.default_task == "regression"
    assert avd.fetch(tmp_path / "data") == tmp_path / "data" / "msp_podcast"
    index = avd.index(tmp_path / "data")
    assert Counter(row["split"] for row in index) == {"train": 5, "dev": 2, "test": 2}  # X and O rated too
    rated = next(row for row in index if row["emotion"] == "X")
    assert (rated["arousal"], rated["valence"], rated["dominance"]) == ("3.0", "3.4", "3.2")
    assert all(1 <= float(row[t]) <= 7 for row in index for t in avd.targets)
    assert len(MSPPodcast(source=source).index(tmp_path / "data")) == 7  # the categorical index is still there
    valence = MSPPodcastAVD(dimensions=["valence"], test_set="Test2", source=source)
    valence.fetch(tmp_path / "data")
    assert valence.targets == ["valence"] and valence.target_column == "valence"
    assert [row["valence"] for row in valence.index(tmp_path / "data").split("test")] == ["2.8", "4.2"]


def test_a_turn_without_its_target_is_left_out(tmp_path):
    turns = [*TURNS, ("MSP-PODCAST_0008_0001.wav", "N", "4.0", "", "4.0", "7", "Male", "Train")]
    source = str(replica(tmp_path / "release", turns))
    valence = MSPPodcastAVD(dimensions=["valence"], source=source)
    valence.fetch(tmp_path / "data")
    assert "Audios/MSP-PODCAST_0008_0001.wav" not in {row["path"] for row in valence.index(tmp_path / "data")}
    arousal = MSPPodcastAVD(dimensions=["arousal"], source=source)
    arousal.fetch(tmp_path / "data")
    assert "Audios/MSP-PODCAST_0008_0001.wav" in {row["path"] for row in arousal.index(tmp_path / "data")}


def test_without_a_source_the_error_names_the_corpus_where_to_request_it_and_the_layout(tmp_path, monkeypatch):
    monkeypatch.delenv("TYMPAN_DATA_MIRROR", raising=False)
    for dataset in (MSPPodcast(), MSPPodcastAVD()):
        with pytest.raises(DataError) as err:
            dataset.fetch(tmp_path / "data")
        assert str(err.value) == (
            "msp_podcast is not public: request it at https://ecs.utdallas.edu/research/researchlabs/msp-lab/"
            "MSP-Podcast.html, then set dataset.args.source to the folder holding it (expected the layout "
            "Audios/<FileName>.wav (16 kHz) and Labels/labels_consensus.csv (columns FileName, EmoClass, EmoAct, "
            "EmoVal, EmoDom, SpkrID, Gender, Split_Set))"
        )
    assert not (tmp_path / "data" / "msp_podcast").exists()


def test_the_data_mirror_may_hold_the_release_folder(tmp_path, monkeypatch):
    replica(tmp_path / "mirror" / "msp_podcast")
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(tmp_path / "mirror"))
    MSPPodcastAVD().fetch(tmp_path / "data")
    assert len(MSPPodcastAVD().index(tmp_path / "data")) == 9
    assert (tmp_path / "mirror/msp_podcast/Partitions.txt").is_file()  # the mirror is left as it is


def test_a_release_without_the_consensus_labels_says_what_it_expects(tmp_path):
    source = replica(tmp_path / "release")
    (source / "Labels/labels_consensus.csv").unlink()
    with pytest.raises(DataError, match=r"release: not a copy of msp_podcast: no Labels/labels_consensus.csv; "
                                        r"expected the layout Audios/"):  # fmt: skip
        MSPPodcast(source=str(source)).fetch(tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize(
    ("turn", "says"),
    [
        (("MSP-PODCAST_0009_0001.wav", "Q", "4", "4", "4", "1", "Male", "Train"), r":14: EmoClass 'Q' is not one"),
        (("MSP-PODCAST_0009_0001.wav", "N", "9", "4", "4", "1", "Male", "Train"), r":14: EmoAct '9' is not a rating"),
        (("MSP-PODCAST_0009_0001.wav", "N", "4", "high", "4", "1", "Male", "Train"), r":14: EmoVal 'high' is not"),
        (("MSP-PODCAST_0009_0001.wav", "N", "4", "4", "4", "1", "Male", "Validation"), r":14: Split_Set 'Valida"),
        (
            ("MSP-PODCAST_0001_0008.wav", "N", "4", "4", "4", "1", "Male", "Train"),
            r":14: MSP-PODCAST_0001_0008.wav "
            r"is listed twice",
        ),
        (("../secret.wav", "N", "4", "4", "4", "1", "Male", "Train"), r":14: FileName '../secret.wav' is not a .wav"),
        (("MSP-PODCAST_0009_0001.wav", "N", "4", "4", "4", "1", "Male"), r":14: expected the 8 columns"),
    ],
)
def test_a_malformed_label_row_is_an_error_naming_the_file_and_line(tmp_path, turn, says):
    source = replica(tmp_path / "release")
    with open(source / "Labels/labels_consensus.csv", "a") as f:
        f.write(",".join(turn) + "\n")
    with pytest.raises(DataError, match=r"labels_consensus.csv" + says):
        MSPPodcast(source=str(source)).fetch(tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_a_missing_column_or_audio_file_is_an_error_naming_the_file(tmp_path):
    source = replica(tmp_path / "a", header=HEADER.replace("SpkrID", "Speaker"))
    with pytest.raises(DataError, match=r"labels_consensus.csv: missing column\(s\) SpkrID \(columns: FileName"):
        MSPPodcast(source=str(source)).fetch(tmp_path / "data")
    source = replica(tmp_path / "b")
    (source / "Audios/MSP-PODCAST_0004_0020.wav").unlink()
    with pytest.raises(DataError, match=r"labels_consensus.csv:8: Audios/MSP-PODCAST_0004_0020.wav is missing"):
        MSPPodcast(source=str(source)).fetch(tmp_path / "data")


def test_options_are_checked():
    with pytest.raises(ValueError, match="classes must be"):
        MSPPodcast(classes=["A", "X"])  # X: no agreement, never a class
    with pytest.raises(ValueError, match="classes lists an emotion twice"):
        MSPPodcast(classes=["A", "A"])
    with pytest.raises(ValueError, match="test_set must be one of Test1, Test2"):
        MSPPodcast(test_set="Test3")
    with pytest.raises(ValueError, match="dimensions lists one twice"):
        MSPPodcastAVD(dimensions=["valence", "valence"])
