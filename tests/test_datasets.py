"""Fetching and indexing FSDD from the real mirror, a local archive or directory, and real HTTP."""

import hashlib
import http.server
import io
import logging
import re
import shutil
import socket
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import soundfile as sf
import yaml

from tympan import config as configuration
from tympan.datasets import FSDD, download_file, read_index, write_index
from tympan.datasets.copies import META
from tympan.errors import ConfigError, DataError

TOP = "free-spoken-digit-dataset-1.0.10"
SUBSET_SPEAKERS = ("george", "yweweler")  # one train speaker, the dev speaker
SUBSET_TAKES = 3  # 2 speakers x 10 digits x 3 takes = 60 files


@pytest.fixture(autouse=True)
def no_mirror(monkeypatch):
    """Tests opt in to the mirror; local servers must never go through a proxy."""
    monkeypatch.delenv("TYMPAN_DATA_MIRROR", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def subset(fsdd_mirror, tmp_path_factory):
    """60 real recordings in the upstream layout, as a directory and as a .tar.gz archive."""
    base = tmp_path_factory.mktemp("upstream")
    recordings = base / "tree" / TOP / "recordings"
    recordings.mkdir(parents=True)
    (base / "tree" / TOP / "README.md").write_text("not a recording\n")
    for speaker in SUBSET_SPEAKERS:
        for digit in range(10):
            for take in range(SUBSET_TAKES):
                name = f"{digit}_{speaker}_{take}.wav"
                shutil.copyfile(fsdd_mirror / "fsdd" / "recordings" / name, recordings / name)
    archive = base / "v1.0.10.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(base / "tree" / TOP, arcname=TOP)
    data = archive.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    return SimpleNamespace(tree=base / "tree", archive=archive, sha256=sha256, size=len(data))


def _assert_nothing_left(root: Path):
    assert not (root / "fsdd").exists()
    assert not list(root.rglob("index-*.csv"))


def fetched(dataset: FSDD, root: Path):
    """Fetch `dataset` below `root`, and the index of its block."""
    dataset.fetch(root)
    return dataset.index(root)


# ---------------------------------------------------------------- the mirror


def test_fetch_from_mirror(tmp_path, fsdd_mirror, monkeypatch, caplog):
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(fsdd_mirror))
    mirror_files = sorted((fsdd_mirror / "fsdd" / "recordings").iterdir())
    with caplog.at_level(logging.INFO, logger="tympan"):
        dataset_dir = FSDD().fetch(tmp_path)

    assert dataset_dir == tmp_path / "fsdd"
    index = FSDD().index(tmp_path)
    train, dev, test = (index.split(s) for s in ("train", "dev", "test"))
    assert (len(index), len(train), len(dev), len(test)) == (2500, 2000, 500, 0)
    assert {r["speaker"] for r in train} == {"george", "jackson", "lucas", "nicolas"}
    assert {r["speaker"] for r in dev} == {"yweweler"}
    assert index.labels("label") == [str(d) for d in range(10)]
    assert index.columns == ["path", "split", "label", "speaker", "duration", "sample_rate", "channels"]
    row = index.rows[0]
    assert index.path_of(row) == dataset_dir / row["path"] and index.path_of(row).is_file()
    assert row["label"] == row["path"].split("/")[-1][0]
    frames, rate = sf.info(index.path_of(row)).frames, sf.info(index.path_of(row)).samplerate
    assert (float(row["duration"]), row["sample_rate"], row["channels"]) == (pytest.approx(frames / rate), "8000", "1")
    assert all(index.path_of(r).is_file() for r in index)
    assert "test split is empty" in caplog.text
    assert str(index.file) in caplog.text and index.file.parent == dataset_dir / META
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fsdd"]  # no staging dir left
    assert sorted((fsdd_mirror / "fsdd" / "recordings").iterdir()) == mirror_files

    index_file = index.file
    stamp = index_file.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tympan"):
        assert FSDD().fetch(tmp_path) == dataset_dir
    assert "already fetched" in caplog.text
    assert index_file.stat().st_mtime_ns == stamp


def test_explicit_source_wins_over_the_mirror(tmp_path, fsdd_mirror, subset, monkeypatch):
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(fsdd_mirror))
    assert len(fetched(FSDD(source=str(subset.archive)), tmp_path)) == 60


# ---------------------------------------------------------------- local sources


def test_fetch_from_local_archive(tmp_path, subset):
    dataset_dir = FSDD(source=str(subset.archive)).fetch(tmp_path)
    index = FSDD(source=str(subset.archive)).index(tmp_path)
    assert len(index.split("train")) == 30 and len(index.split("dev")) == 30
    assert {r["speaker"] for r in index.split("train")} == {"george"}
    assert sorted(p.name for p in dataset_dir.iterdir()) == [META, "recordings"]
    assert len(list((dataset_dir / "recordings").iterdir())) == 60


def test_fetch_from_local_directory(tmp_path, subset):
    index = fetched(FSDD(source=str(subset.tree)), tmp_path)
    assert len(index) == 60 and index.labels("speaker") == ["george", "yweweler"]


def test_speakers_in_no_split_are_left_out(tmp_path, subset):
    dataset = FSDD(source=str(subset.archive), train_speakers=["george"], dev_speakers=[], test_speakers=[])
    index = fetched(dataset, tmp_path)
    assert len(index) == 30 and index.labels("speaker") == ["george"]


def test_changed_splits_add_an_index_beside_the_audio(tmp_path, subset, caplog):
    first = FSDD(source=str(subset.archive))
    dataset_dir = first.fetch(tmp_path)
    wav = dataset_dir / "recordings" / "0_george_0.wav"
    stamp = wav.stat().st_mtime_ns
    regrouped = FSDD(source=str(subset.archive), train_speakers=["yweweler"], dev_speakers=["george"])
    with caplog.at_level(logging.INFO, logger="tympan"):
        regrouped.fetch(tmp_path)
    assert "60 files indexed" in caplog.text
    assert {r["speaker"] for r in regrouped.index(tmp_path).split("dev")} == {"george"}
    assert {r["speaker"] for r in first.index(tmp_path).split("dev")} == {"yweweler"}  # its own, untouched
    assert wav.stat().st_mtime_ns == stamp  # the audio was not fetched again


# ---------------------------------------------------------------- one index per dataset block

PARAMS_SPLIT = {}  # params.yaml's FSDD block: the preset's split (train george, jackson, lucas, nicolas)
TINY_SPLIT = {"train_speakers": ["george", "jackson"], "dev_speakers": ["yweweler"], "test_speakers": ["lucas"]}


@pytest.fixture(scope="module")
def five_speakers(fsdd_mirror, tmp_path_factory):
    """Take 0 of every digit of the five speakers that the two configs split differently (50 files)."""
    recordings = tmp_path_factory.mktemp("five") / "recordings"
    recordings.mkdir()
    for speaker in ("george", "jackson", "lucas", "nicolas", "yweweler"):
        for digit in range(10):
            shutil.copyfile(
                fsdd_mirror / f"fsdd/recordings/{digit}_{speaker}_0.wav", recordings / f"{digit}_{speaker}_0.wav"
            )
    return recordings.parent


def _write_config(path: Path, root: Path, source: Path, split: dict) -> Path:
    from tests.conftest import TINY

    dataset = {"preset": "FSDD", "root": str(root / "raw"), "args": {"source": str(source), **split}}
    features = {**TINY["features"], "root": str(root / "features")}
    path.write_text(yaml.safe_dump({**TINY, "dataset": dataset, "features": features}))
    return path


def _printed(capsys, key: str) -> Path:
    return Path(next(line for line in capsys.readouterr().out.splitlines() if line.startswith(key)).split(": ")[1])


def test_another_configs_fetch_never_changes_this_configs_split(tmp_path, five_speakers, capsys):
    """The issue's three commands: fetch params.yaml, fetch pipelines/tiny.yaml, preprocess params.yaml."""
    from tympan import config as configuration
    from tympan.cli import main
    from tympan.store import open_split, store_dir

    params = _write_config(tmp_path / "params.yaml", tmp_path, five_speakers, PARAMS_SPLIT)
    tiny = _write_config(tmp_path / "tiny.yaml", tmp_path, five_speakers, TINY_SPLIT)
    assert main(["fetch", str(params)]) == 0
    assert main(["fetch", str(tiny)]) == 0
    assert main(["preprocess", str(params)]) == 0
    store = _printed(capsys, "features:")

    def speakers(store, split):
        return {row["speaker"] for row in open_split(store, split).rows}

    assert speakers(store, "train") == {"george", "jackson", "lucas", "nicolas"}  # params.yaml's split, not tiny's
    assert speakers(store, "dev") == {"yweweler"} and speakers(store, "test") == set()
    assert main(["preprocess", str(tiny)]) == 0
    tiny_store = _printed(capsys, "features:")
    assert tiny_store != store and speakers(tiny_store, "test") == {"lucas"}  # two blocks, two stores
    for path, made in ((params, store), (tiny, tiny_store)):  # what `tympan train` trains on
        assert store_dir(configuration.load(path), "fsdd") == made
    assert len(list((tmp_path / "raw/fsdd/recordings").iterdir())) == 50  # one copy of the audio for both


def test_a_block_without_its_own_index_is_refused_naming_the_others(tmp_path, five_speakers, capsys):
    from tympan.cli import main

    assert main(["fetch", str(_write_config(tmp_path / "params.yaml", tmp_path, five_speakers, PARAMS_SPLIT))]) == 0
    split = {"train_speakers": ["george", "jackson", "nicolas"], "test_speakers": ["lucas"]}
    other = _write_config(tmp_path / "other.yaml", tmp_path, five_speakers, split)
    other_split = FSDD(source=str(five_speakers), **split)
    capsys.readouterr()
    with pytest.raises(DataError) as info:
        other_split.index(tmp_path / "raw")  # lucas is in train there: not this block's index
    message = str(info.value)
    assert "\n" not in message and "no index of this dataset block (tympan.datasets.fsdd:FSDD)" in message
    assert "test_speakers ['theo'] there, ['lucas'] here" in message and "run `tympan fetch`" in message
    assert main(["preprocess", str(other)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tympan: error:")]
    assert len(errors) == 1 and "test_speakers ['theo'] there" in errors[0]
    assert not (tmp_path / "features").exists() or not any((tmp_path / "features").iterdir())


def test_fetching_a_damaged_copy_again_keeps_the_other_blocks_indexes(tmp_path, subset, caplog):
    first = FSDD(source=str(subset.archive))
    second = FSDD(source=str(subset.archive), train_speakers=["yweweler"], dev_speakers=["george"])
    dataset_dir = first.fetch(tmp_path)
    second.fetch(tmp_path)
    (dataset_dir / "recordings" / "3_george_1.wav").unlink()
    first.fetch(tmp_path)
    assert "fetching again" in caplog.text and (dataset_dir / "recordings" / "3_george_1.wav").is_file()
    assert {r["speaker"] for r in second.index(tmp_path).split("train")} == {"yweweler"}
    assert {r["speaker"] for r in first.index(tmp_path).split("train")} == {"george"}


def test_a_copy_from_an_older_tympan_is_adopted(tmp_path, subset):
    dataset = FSDD(source=str(subset.archive))
    dataset_dir = dataset.fetch(tmp_path)
    shutil.rmtree(dataset_dir / META)
    (dataset_dir / "index.csv").write_text("path,split\n")  # the one shared index of before
    with pytest.raises(DataError, match="fetched by an older tympan; run `tympan fetch`"):
        dataset.index(tmp_path)
    stamp = (dataset_dir / "recordings" / "0_george_0.wav").stat().st_mtime_ns
    assert len(fetched(dataset, tmp_path)) == 60
    assert (dataset_dir / "recordings" / "0_george_0.wav").stat().st_mtime_ns == stamp  # not fetched again
    assert sorted(p.name for p in dataset_dir.iterdir()) == [META, "recordings"]  # the old index is gone


def test_a_speaker_in_two_splits_is_refused_when_built_and_at_config_load():
    with pytest.raises(ValueError, match="speaker 'theo' is in both train_speakers and test_speakers"):
        FSDD(train_speakers=["george", "theo"])
    block = {"target": "tympan.datasets.fsdd:FSDD", "args": {"dev_speakers": "george"}}
    with pytest.raises(ConfigError, match="dataset.args: speaker 'george' is in both train_speakers and dev_speakers"):
        configuration.parse({"dataset": block})


def test_a_damaged_dataset_dir_is_fetched_again(tmp_path, subset, caplog):
    dataset = FSDD(source=str(subset.archive))
    dataset_dir = dataset.fetch(tmp_path)
    (dataset_dir / "recordings" / "3_george_1.wav").unlink()
    assert dataset.fetch(tmp_path) == dataset_dir
    assert "3_george_1.wav" in caplog.text and "fetching again" in caplog.text
    assert (dataset_dir / "recordings" / "3_george_1.wav").is_file()
    assert len(dataset.index(tmp_path)) == 60


def test_incomplete_source_fails_verification(tmp_path, subset):
    source = tmp_path / "partial"
    shutil.copytree(subset.tree / TOP, source)
    (source / "recordings" / "5_yweweler_2.wav").unlink()
    root = tmp_path / "raw"
    with pytest.raises(DataError, match="5_yweweler_2.wav"):
        FSDD(source=str(source)).fetch(root)
    _assert_nothing_left(root)
    assert not list(root.iterdir())


@pytest.mark.parametrize("make_source", [lambda p: p / "missing.tar.gz", lambda p: _write(p / "junk.tar.gz", b"junk")])
def test_bad_source_is_a_data_error(tmp_path, make_source):
    source = make_source(tmp_path)
    with pytest.raises(DataError, match=re.escape(str(source))):
        FSDD(source=str(source)).fetch(tmp_path / "raw")
    _assert_nothing_left(tmp_path / "raw")


def test_archive_members_cannot_escape(tmp_path, subset):
    archive = tmp_path / "evil.tar.gz"
    wav = (subset.tree / TOP / "recordings" / "0_george_0.wav").read_bytes()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(subset.tree / TOP, arcname=TOP)
        _add_bytes(tar, f"{TOP}/recordings/../../0_george_9.wav", wav)
        _add_bytes(tar, "../0_george_8.wav", wav)
        link = tarfile.TarInfo(f"{TOP}/recordings/0_george_7.wav")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    root = tmp_path / "deep" / "raw"
    assert len(fetched(FSDD(source=str(archive)), root)) == 60
    assert sorted(p.name for p in tmp_path.rglob("0_george_[789].wav")) == []


# ---------------------------------------------------------------- HTTP


class _ArchiveHandler(http.server.BaseHTTPRequestHandler):
    """Serves `server.payload`, honouring `Range: bytes=N-`; can cut the body short."""

    def do_GET(self):
        server, data, start = self.server, self.server.payload, 0
        server.ranges.append(self.headers.get("Range"))
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and server.honor_range:
            start = int(match[1])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if server.cut_after is None else body[: server.cut_after])
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server(subset):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ArchiveHandler)
    srv.payload, srv.ranges, srv.cut_after, srv.honor_range = subset.archive.read_bytes(), [], None, True
    srv.url = f"http://127.0.0.1:{srv.server_port}/v1.0.10.tar.gz"
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_download_over_http(tmp_path, server, subset):
    dataset_dir = FSDD(url=server.url, sha256=subset.sha256).fetch(tmp_path)
    assert len(FSDD(url=server.url, sha256=subset.sha256).index(tmp_path)) == 60
    assert sorted(p.name for p in dataset_dir.iterdir()) == [META, "recordings"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fsdd"]
    assert server.ranges == [None]


def test_download_resumes_a_part_file(tmp_path, server, subset):
    half = subset.size // 2
    (tmp_path / "a.tar.gz.part").write_bytes(server.payload[:half])
    path = download_file(server.url, tmp_path / "a.tar.gz", sha256=subset.sha256)
    assert server.ranges == [f"bytes={half}-"]
    assert path.read_bytes() == server.payload
    assert not (tmp_path / "a.tar.gz.part").exists()


def test_download_restarts_when_the_server_ignores_range(tmp_path, server, subset):
    server.honor_range = False
    (tmp_path / "a.tar.gz.part").write_bytes(b"x" * 1000)
    path = download_file(server.url, tmp_path / "a.tar.gz", sha256=subset.sha256)
    assert path.read_bytes() == server.payload


def test_interrupted_download_fails_then_resumes(tmp_path, server, subset):
    server.cut_after = half = subset.size // 2
    with pytest.raises(DataError, match=f"after {half} of {subset.size} bytes"):
        FSDD(url=server.url, sha256=subset.sha256).fetch(tmp_path)
    _assert_nothing_left(tmp_path)

    server.cut_after = None
    index = fetched(FSDD(url=server.url, sha256=subset.sha256), tmp_path)
    assert server.ranges == [None, f"bytes={half}-"]
    assert len(index) == 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fsdd"]


def test_wrong_sha256_is_a_data_error(tmp_path, server):
    with pytest.raises(DataError, match="sha256"):
        FSDD(url=server.url, sha256="0" * 64).fetch(tmp_path)
    _assert_nothing_left(tmp_path)
    assert not list(tmp_path.iterdir())  # not even the bad .part survives


def test_unreachable_server_is_a_data_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1.0.10.tar.gz"
    with pytest.raises(DataError, match=re.escape(url)):
        FSDD(url=url).fetch(tmp_path)
    _assert_nothing_left(tmp_path)


# ---------------------------------------------------------------- the index


def test_index_round_trip(tmp_path):
    rows = [
        {"path": "a.wav", "split": "train", "label": "1", "speaker": "x"},
        {"path": "sub/b.wav", "split": "dev", "label": "0"},
    ]
    write_index(tmp_path / "index.csv", rows)
    index = read_index(tmp_path / "index.csv", tmp_path)
    assert index.columns == ["path", "split", "label", "speaker"]
    assert index.rows[1] == {"path": "sub/b.wav", "split": "dev", "label": "0", "speaker": ""}
    assert index.labels("label") == ["0", "1"] and index.split("test") == []
    assert index.path_of(index.rows[1]) == tmp_path / "sub" / "b.wav"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.csv"]  # no temp file left
    with pytest.raises(DataError, match="no column 'genre'"):
        index.labels("genre")


def test_write_index_rejects_bad_rows_and_keeps_the_old_file(tmp_path):
    write_index(tmp_path / "index.csv", [{"path": "a.wav", "split": "train"}])
    before = (tmp_path / "index.csv").read_text()
    with pytest.raises(DataError, match="split 'valid'"):
        write_index(tmp_path / "index.csv", [{"path": "a.wav", "split": "valid"}])
    assert (tmp_path / "index.csv").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.csv"]


@pytest.mark.parametrize(
    "text, match",
    [
        (None, "no such dataset index"),
        ("file,split\na.wav,train\n", r"missing column\(s\) \['path'\]"),
        ("path,split\na.wav,valid\n", "line 2: split 'valid'"),
        ("path,split\n../a.wav,train\n", "not relative"),
        ("path,split,label\na.wav,train\n", "line 2: missing or extra fields"),
    ],
)
def test_read_index_errors_name_the_file(tmp_path, text, match):
    if text is not None:
        (tmp_path / "index.csv").write_text(text)
    with pytest.raises(DataError, match=match) as info:
        read_index(tmp_path / "index.csv", tmp_path)
    assert str(tmp_path / "index.csv") in str(info.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_an_emptied_file_is_fetched_again_or_kept_when_skipped(tmp_path, subset, caplog):
    dataset = FSDD(source=str(subset.archive))
    dataset_dir = dataset.fetch(tmp_path)
    wav = dataset_dir / "recordings" / "3_george_1.wav"
    wav.write_bytes(b"")
    assert dataset.fetch(tmp_path, on_unreadable="skip") == dataset_dir
    assert wav.stat().st_size == 0 and "preprocessing will skip them" in caplog.text
    assert dataset.fetch(tmp_path) == dataset_dir  # "raise": the copy is damaged, so it is fetched again
    assert "3_george_1.wav: empty file" in caplog.text and wav.stat().st_size > 0
