"""The named-corpus base: archives downloaded from a real HTTP server on 127.0.0.1 (verified,
resumed, extracted safely), a source folder or mirror holding the archives or the extracted
layout, and a request-only corpus that says where to ask."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import time
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import soundfile as sf

from tympan.datasets import archives
from tympan.datasets.corpus import About, Archive, Corpus
from tympan.errors import DataError


class Words(Corpus):
    """A two-word corpus published as `words.tar.gz` holding `words/wav/*.wav` and `words/splits.txt`."""

    name = "words"
    layout = "wav/<word>_<n>.wav and splits.txt"
    marker = "splits.txt"
    about = About(task="2 words (classification)", classes=2, size="4 clips", license="CC0")

    def place(self, member: PurePosixPath) -> PurePosixPath | None:
        inner = PurePosixPath(*member.parts[1:])
        return inner if inner.suffix in (".wav", ".txt") else None

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        lines = (dest / "splits.txt").read_text().split()
        return [{"path": f"wav/{name}", "split": split, "label": name.split("_")[0]}
                for name, split in zip(lines[::2], lines[1::2], strict=True)]  # fmt: skip


def replica(folder: Path) -> Path:
    (folder / "wav").mkdir(parents=True)
    splits = []
    for i, word in enumerate(["yes", "no", "yes", "no"]):
        sf.write(folder / "wav" / f"{word}_{i}.wav", np.full(1600, 0.1 * (i + 1), dtype="float32"), 16000)
        splits += [f"{word}_{i}.wav", ["train", "train", "dev", "test"][i]]
    (folder / "splits.txt").write_text(" ".join(splits))
    (folder / "README.exe").write_text("not wanted")
    return folder


def tar_of(folder: Path, extra: list[tarfile.TarInfo] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname="words")
        for member in extra:
            tar.addfile(member, io.BytesIO(b"evil") if member.isfile() else None)
    return buffer.getvalue()


def published(body: bytes, url: str) -> type[Words]:
    checksum = f"md5:{hashlib.md5(body).hexdigest()}"
    return type("Published", (Words,), {"archives": (Archive(url=url, checksum=checksum),)})


def test_a_download_is_verified_extracted_and_leaves_only_the_layout(serve, tmp_path):
    body = tar_of(replica(tmp_path / "made"))
    server, base = serve({"words.tar.gz": body}, cut="words.tar.gz")
    corpus = published(body, f"{base}/words.tar.gz")
    with pytest.raises(DataError, match="resume"):
        corpus().fetch(tmp_path / "data")  # the first response is cut short: the .part stays
    copy = corpus().fetch(tmp_path / "data")
    assert [r for _, r in server.requests][-1] == f"bytes={len(body) // 2}-"  # resumed, not restarted
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*.wav")) == [
        "wav/no_1.wav", "wav/no_3.wav", "wav/yes_0.wav", "wav/yes_2.wav"]  # fmt: skip
    assert not (copy / "README.exe").exists() and not (copy / ".archives").exists()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["words"]
    index = corpus().index(tmp_path / "data")
    assert [(r["split"], r["label"]) for r in index] == [("train", "yes"), ("train", "no"), ("dev", "yes"),
                                                         ("test", "no")]  # fmt: skip


def test_a_checksum_mismatch_leaves_nothing(serve, tmp_path):
    body = tar_of(replica(tmp_path / "made"))
    _, base = serve({"words.tar.gz": body + b"tampered"})
    with pytest.raises(DataError, match=r"md5 is [0-9a-f]{32}, expected"):
        published(body, f"{base}/words.tar.gz")().fetch(tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_a_server_that_is_down_is_one_line_within_seconds(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(DataError, match=f"127.0.0.1:{port}/words.tar.gz: download failed") as err:
        published(b"", f"http://127.0.0.1:{port}/words.tar.gz")().fetch(tmp_path / "data")
    assert time.perf_counter() - started < 5 and "\n" not in str(err.value)
    assert list((tmp_path / "data").iterdir()) == []


def test_a_mirror_holds_the_archives_or_the_extracted_layout(tmp_path, monkeypatch):
    body = tar_of(replica(tmp_path / "made"))
    corpus = published(body, "https://unreachable.invalid/words.tar.gz")
    (tmp_path / "archives/words").mkdir(parents=True)
    (tmp_path / "archives/words/words.tar.gz").write_bytes(body)
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(tmp_path / "archives"))
    assert len(corpus().index(corpus().fetch(tmp_path / "a").parent)) == 4
    assert (tmp_path / "archives/words/words.tar.gz").read_bytes() == body  # the mirror is left as it is

    replica(tmp_path / "layout/words")
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(tmp_path / "layout"))
    assert len(corpus().index(corpus().fetch(tmp_path / "b").parent)) == 4

    (tmp_path / "archives/words/words.tar.gz").write_bytes(body[:-1] + b"x")
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(tmp_path / "archives"))
    with pytest.raises(DataError, match="expected"):
        corpus().fetch(tmp_path / "c")
    assert (tmp_path / "archives/words/words.tar.gz").exists()  # a mismatch never removes a mirror's file
    assert list((tmp_path / "c").iterdir()) == []


def test_a_source_that_is_neither_says_what_it_expects(tmp_path):
    (tmp_path / "empty").mkdir()
    corpus = published(b"", "https://unreachable.invalid/words.tar.gz")
    with pytest.raises(DataError, match=r"not a copy of words: no splits.txt and no archive words.tar.gz; "
                                        r"expected the layout wav/<word>_<n>.wav and splits.txt"):  # fmt: skip
        corpus(source=str(tmp_path / "empty")).fetch(tmp_path / "data")
    with pytest.raises(DataError, match="is not a folder"):
        corpus(source=str(tmp_path / "nowhere")).fetch(tmp_path / "data")


def test_a_request_only_corpus_names_where_to_ask_and_the_layout(tmp_path):
    class Private(Words):
        name = "private"
        request = "https://example.org/request-form"

    with pytest.raises(DataError) as err:
        Private().fetch(tmp_path / "data")
    assert str(err.value) == (
        "private is not public: request it at https://example.org/request-form, then set dataset.args.source to "
        "the folder holding it (expected the layout wav/<word>_<n>.wav and splits.txt)"
    )
    copy = Private(source=str(replica(tmp_path / "given"))).fetch(tmp_path / "data")
    assert len(Private(source=str(tmp_path / "given")).index(copy.parent)) == 4


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, target, 4 if kind == tarfile.REGTYPE else 0
    return info


def test_extraction_writes_only_regular_files_below_the_target(tmp_path):
    hostile = [
        _member("../escape.wav"),
        _member("/etc/absolute.wav"),
        _member("words/wav/link.wav", tarfile.SYMTYPE, "/etc/passwd"),
        _member("words/wav/hard.wav", tarfile.LNKTYPE, "words/splits.txt"),
        _member("words/wav/fifo.wav", tarfile.FIFOTYPE),
    ]
    archive = tmp_path / "hostile.tar.gz"
    archive.write_bytes(tar_of(replica(tmp_path / "made"), hostile))
    out = tmp_path / "out"
    assert archives.extract(archive, out) == 6  # 4 clips, splits.txt, README.exe; nothing hostile
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if "out" in p.parts)
    assert not any(name.endswith(("escape.wav", "absolute.wav", "link.wav", "hard.wav", "fifo.wav"))
                   for name in written)  # fmt: skip
    assert not (tmp_path / "escape.wav").exists()

    zipped = tmp_path / "hostile.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("ok/a.wav", b"RIFF")
        z.writestr("../../escape.wav", b"evil")
        link = zipfile.ZipInfo("ok/link.wav")
        link.external_attr = (0o120777) << 16  # a symbolic link
        z.writestr(link, "/etc/passwd")
    assert archives.extract(zipped, tmp_path / "zout") == 1
    assert [p.name for p in (tmp_path / "zout").rglob("*") if p.is_file()] == ["a.wav"]


def test_a_corrupt_archive_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(tar_of(replica(tmp_path / "made"))[:200])
    with pytest.raises(DataError, match="bad.tar.gz: cannot extract the archive"):
        archives.extract(bad, tmp_path / "out")
