"""Speech Commands v0.02 (tympan.datasets.speech_commands) on a miniature replica of its archives."""

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.speech_commands_replica import RATE, write_layout
from tympan.datasets.corpus import Archive
from tympan.datasets.speech_commands import COMMANDS, WORDS, SpeechCommands
from tympan.errors import DataError

NOISES = {"running_tap.wav": 20.0, "white_noise.wav": 10.5}  # 20 pieces (16/2/2), 10 (8/1/1)
TEST_SET_CLIPS = {"yes": 2, "no": 1, "up": 1, "down": 1, "left": 1, "right": 1, "on": 1, "off": 1, "stop": 1,
                  "go": 1, "_silence_": 2, "_unknown_": 2}  # fmt: skip


@pytest.fixture(autouse=True)
def no_mirror(monkeypatch):
    monkeypatch.delenv("TYMPAN_DATA_MIRROR", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def noise(seed: int, seconds: float = 0.1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, int(RATE * seconds))


def clip(path: Path, seed: int, seconds: float = 0.1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, noise(seed, seconds), RATE, subtype="PCM_16")


def speaker_of(word: str, take: int) -> str:
    return hashlib.sha1(f"{word}{take}".encode()).hexdigest()[:8]


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> Path:
    """The main archive's layout, and the test-set archive's in `test_set/`: every word has three
    clips (take 0 of speaker a train, b dev, c test), "yes" a second take of its train speaker."""
    root = tmp_path_factory.mktemp("speech_commands")
    speakers = ("aaaa0001", "bbbb0002", "cccc0003")  # train, dev, test
    clips = [(w, speaker, 0, noise(100 * i + n)) for i, w in enumerate(WORDS) for n, speaker in enumerate(speakers)]
    clips.append(("yes", "aaaa0001", 1, noise(9999)))
    noises = {name: noise(50_000 + n, seconds) for n, (name, seconds) in enumerate(NOISES.items())}
    main = write_layout(root / "main", clips, dev={"bbbb0002"}, test={"cccc0003"}, noises=noises)
    (main / "README.md").write_text("# Speech Commands Data Set v0.02\n")
    (main / ".DS_Store").write_bytes(b"\0")
    tests = root / "test_set"
    for name, count in TEST_SET_CLIPS.items():
        for n in range(count):
            clip(tests / name / f"{speaker_of(name, n)}_nohash_{n}.wav", 70_000 + 10 * len(name) + n)
    return root


def tar_gz(folder: Path) -> bytes:
    """`folder` as a .tar.gz whose members start with "./", as the published archives' do."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=f"./{path.relative_to(folder).as_posix()}", recursive=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def archives(replica) -> dict[str, bytes]:
    return {
        "speech_commands_v0.02.tar.gz": tar_gz(replica / "main"),
        "speech_commands_test_set_v0.02.tar.gz": tar_gz(replica / "test_set"),
    }


def layout(replica: Path, tmp_path: Path) -> Path:
    """The extracted layout a user keeps: the main archive at the top, the test set in test_set/."""
    folder = tmp_path / "layout"
    if not folder.is_dir():
        shutil.copytree(replica / "main", folder)
        shutil.copytree(replica / "test_set", folder / "test_set")
    return folder


def fetch(tmp_path: Path, source: Path | None, **args):
    dataset = SpeechCommands(source=str(source) if source else None, **args)
    copy = dataset.fetch(tmp_path / "data")
    return copy, dataset.index(tmp_path / "data")


def counts(index) -> dict[tuple[str, str], int]:
    found = {}
    for row in index:
        found[row["split"], row["label"]] = found.get((row["split"], row["label"]), 0) + 1
    return found


def test_35_words_follow_the_official_lists(replica, tmp_path):
    copy, index = fetch(tmp_path, layout(replica, tmp_path))
    assert sorted(index.labels("label")) == sorted(WORDS) and len(WORDS) == 35
    assert {s: len(index.split(s)) for s in ("train", "dev", "test")} == {"train": 36, "dev": 35, "test": 35}
    assert {row["speaker"] for row in index.split("dev")} == {"bbbb0002"}
    row = next(r for r in index if r["path"] == "yes/aaaa0001_nohash_1.wav")
    assert row == {"path": "yes/aaaa0001_nohash_1.wav", "split": "train", "label": "yes", "word": "yes",
                   "speaker": "aaaa0001", "utterance": "1", "duration": "0.1", "sample_rate": "16000",
                   "channels": "1"}  # fmt: skip
    # the silence pieces are in the copy whichever variant fetched it, the hidden file is not
    assert len(list((copy / "_silence_").glob("*.wav"))) == 30
    assert not (copy / ".DS_Store").exists() and (copy / "test_set" / "_unknown_").is_dir()


def test_12_classes_test_on_the_test_set_archive_and_cut_silence_for_train_and_dev(replica, tmp_path):
    _, index = fetch(tmp_path, layout(replica, tmp_path), classes=12)
    assert index.labels("label") == sorted([*COMMANDS, "_silence_", "_unknown_"])
    found = counts(index)
    assert found["train", "_silence_"] == 16 + 8 and found["dev", "_silence_"] == 2 + 1
    assert found["train", "_unknown_"] == 25 and found["dev", "_unknown_"] == 25 and found["train", "yes"] == 2
    assert {k[1]: v for k, v in found.items() if k[0] == "test"} == TEST_SET_CLIPS
    assert all(row["path"].startswith("test_set/") for row in index.split("test"))
    unknown = [r for r in index.split("test") if r["label"] == "_unknown_"]
    assert {(r["word"], r["speaker"]) for r in unknown} == {("", speaker_of("_unknown_", n)) for n in range(2)}
    piece = next(r for r in index if r["path"] == "_silence_/white_noise_008.wav")
    assert piece == {"path": "_silence_/white_noise_008.wav", "split": "dev", "label": "_silence_", "word": "",
                     "speaker": "", "utterance": "", "noise": "white_noise.wav", "duration": "1",
                     "sample_rate": "16000", "channels": "1"}  # fmt: skip
    word = next(r for r in index if r["path"] == "cat/bbbb0002_nohash_0.wav")
    assert (word["label"], word["word"], word["split"], word["noise"]) == ("_unknown_", "cat", "dev", "")


def test_12_classes_with_the_test_list_take_the_last_silence_pieces(replica, tmp_path):
    _, index = fetch(tmp_path, layout(replica, tmp_path), classes=12, test="list")
    found = counts(index)
    assert found["test", "_silence_"] == 2 + 1 and found["test", "_unknown_"] == 25 and found["test", "yes"] == 1
    tests = {row["path"] for row in index.split("test") if row["label"] == "_silence_"}
    assert tests == {"_silence_/running_tap_018.wav", "_silence_/running_tap_019.wav", "_silence_/white_noise_009.wav"}
    assert not any(row["path"].startswith("test_set/") for row in index)


def test_the_pieces_are_the_noise_cut_in_seconds_and_written_once_for_every_variant(replica, tmp_path):
    copy, _ = fetch(tmp_path, layout(replica, tmp_path))
    noise, _ = sf.read(replica / "main" / "_background_noise_" / "white_noise.wav", dtype="int16")
    pieces = sorted((copy / "_silence_").glob("white_noise_*.wav"))
    assert len(pieces) == 10  # 10.5 s: the half second left over is dropped
    for n, piece in enumerate(pieces):
        samples, rate = sf.read(piece, dtype="int16")
        assert rate == RATE and sf.info(piece).subtype == "PCM_16"
        assert np.array_equal(samples, noise[n * RATE : (n + 1) * RATE])
    stamp = pieces[3].stat().st_mtime_ns
    _, twelve = fetch(tmp_path, layout(replica, tmp_path), classes=12)  # the same copy, another index
    assert pieces[3].stat().st_mtime_ns == stamp
    assert len(twelve.split("test")) == sum(TEST_SET_CLIPS.values())


def test_a_mirror_holding_the_archives(replica, archives, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror" / "speech_commands"
    mirror.mkdir(parents=True)
    published = []
    for name, data in archives.items():
        (mirror / name).write_bytes(data)
        published.append(Archive(f"http://example.invalid/{name}", f"sha256:{hashlib.sha256(data).hexdigest()}"))
    monkeypatch.setattr(SpeechCommands, "archives", tuple(published))
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(tmp_path / "mirror"))
    copy, index = fetch(tmp_path, None, classes=12)
    assert len(index.split("test")) == sum(TEST_SET_CLIPS.values()) and (copy / "test_set" / "yes").is_dir()
    assert not list(copy.glob("*.tar.gz")) and not (copy / ".DS_Store").exists()

    wrong = (published[0], Archive(published[1].url, "sha256:" + "0" * 64))
    monkeypatch.setattr(SpeechCommands, "archives", wrong)
    with pytest.raises(DataError, match="checksum|sha256"):
        fetch(tmp_path / "again", None, classes=12)


def test_a_download_from_a_server(replica, archives, tmp_path, monkeypatch, serve):
    _, base = serve(archives)
    published = tuple(Archive(f"{base}/{n}", f"sha256:{hashlib.sha256(d).hexdigest()}") for n, d in archives.items())
    monkeypatch.setattr(SpeechCommands, "archives", published)
    copy, index = fetch(tmp_path, None)
    assert len(index) == 36 + 35 + 35 and not (copy / ".archives").exists()


def test_the_35_word_variant_has_no_test_set_archive_split():
    with pytest.raises(ValueError, match="test: archive"):
        SpeechCommands(classes=35, test="archive")
    with pytest.raises(ValueError, match="classes"):
        SpeechCommands(classes=10)


def copy_of(replica: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(replica / "main", folder)
    return folder


def test_a_list_naming_a_missing_or_malformed_clip_is_an_error_naming_the_list(replica, tmp_path):
    source = copy_of(replica, tmp_path)
    with open(source / "testing_list.txt", "a") as out:
        out.write("yes/dddd0004_nohash_0.wav\n")
    with pytest.raises(DataError, match=r"testing_list\.txt: lists yes/dddd0004_nohash_0\.wav, which is not"):
        fetch(tmp_path, source)
    (source / "validation_list.txt").write_text("yes bbbb0002_nohash_0.wav\n")
    with pytest.raises(DataError, match=r"validation_list\.txt: line 1 is not"):
        fetch(tmp_path, source)
    assert not (tmp_path / "data" / "speech_commands").exists()


def test_a_missing_word_or_test_set_is_an_error_naming_it(replica, tmp_path):
    source = copy_of(replica, tmp_path)
    fetch(tmp_path / "35", source)  # no test set: enough for 35 words
    with pytest.raises(DataError, match=r"test_set/yes: no clips; the 12-class test split is the test-set archive"):
        fetch(tmp_path / "12", source, classes=12)
    assert len(fetch(tmp_path / "list", source, classes=12, test="list")[1].split("test")) == 35 + 3
    for clip_file in (source / "visual").iterdir():
        clip_file.unlink()
    with pytest.raises(DataError, match=r"visual: no clips of 'visual'"):
        fetch(tmp_path / "gone", source)
