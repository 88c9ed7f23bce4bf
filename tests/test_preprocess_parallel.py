"""`tympan preprocess` in worker processes, packed as it goes and resumable: what it stores is the
per-clip extraction's bits whatever the worker count, a bad clip stops it (naming the first in
index order) or is skipped the same way, and a killed build resumes where it stopped."""

import io
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
import yaml

from tests.conftest import TINY
from tympan import audio, stages
from tympan import config as configuration
from tympan.errors import AudioError, ConfigError, DataError
from tympan.store import SPLITS, clip_features, extract, open_split, read_meta, staging

SPLIT = {"train_speakers": ["george", "jackson", "nicolas"], "dev_speakers": ["yweweler"], "test_speakers": ["lucas"]}
TAKES = 10  # 5 speakers x 10 digits x 10 takes: 500 files, 10 chunks of train
FILES = 500
# Bad clips at train positions 40 and 95 (chunks 2 and 3: in flight together with two workers),
# and one in dev; index order is sorted by name, so train runs digit by digit, george before jackson.
BAD = {
    "1_jackson_0.wav": "cannot decode audio",
    "3_george_5.wav": "too short for the features",
    "5_yweweler_3.wav": "non-finite features",
}


@pytest.fixture(scope="module")
def source(fsdd_mirror, tmp_path_factory):
    """A 500-file FSDD copy with the three bad clips of BAD, fetched into `<root>/raw`: the root."""
    root = tmp_path_factory.mktemp("fsdd500")
    recordings = root / "source" / "recordings"
    recordings.mkdir(parents=True)
    for wav in sorted((fsdd_mirror / "fsdd/recordings").glob("*.wav")):
        if int(wav.stem.split("_")[2]) < TAKES:
            shutil.copyfile(wav, recordings / wav.name)
    original, rate = sf.read(recordings / "3_george_5.wav", dtype="float32")
    (recordings / "1_jackson_0.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    sf.write(recordings / "3_george_5.wav", original[:80], rate)  # 10 ms: shorter than an STFT window
    sf.write(recordings / "5_yweweler_3.wav", original * 1e20, rate, subtype="FLOAT")
    stages.fetch(_config(root, "features", "skip"))
    return root


def _raw(root, features_root, on_unreadable):
    dataset = {"preset": "FSDD", "args": {"source": str(root / "source"), **SPLIT}, "on_unreadable": on_unreadable}
    raw = {**TINY, "dataset": {**dataset, "root": str(root / "raw")}}
    raw["features"] = {**TINY["features"], "root": str(root / features_root)}
    return raw


def _config(root, features_root, on_unreadable="skip"):
    return configuration.parse(_raw(root, features_root, on_unreadable))


def _files(store):
    """Every file of a store, by its path in the store: {path: bytes}."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def serial_store(source):
    """The store of the skip config, extracted in this process (workers=1)."""
    return stages.preprocess(_config(source, "serial"), progress=False, workers=1)


def test_stores_are_the_per_clip_features_whatever_the_workers(source, serial_store, tmp_path, capsys):
    raw = _raw(source, tmp_path / "parallel", "skip")
    config = configuration.parse({**raw, "training": {**raw["training"], "progress": True}})
    parallel = stages.preprocess(config, workers=2)
    assert parallel.name == serial_store.name and _files(parallel) == _files(serial_store)

    # the same bad clips are skipped, with their reasons, in index order
    meta = read_meta(parallel)
    assert meta["clips"] == {"train": 298, "dev": 99, "test": 100}
    assert [(e["path"].split("/")[-1], e["split"]) for e in meta["skipped"]] == [
        ("1_jackson_0.wav", "train"),
        ("3_george_5.wav", "train"),
        ("5_yweweler_3.wav", "dev"),
    ]
    for entry in meta["skipped"]:
        assert entry["reason"].startswith(BAD[entry["path"].split("/")[-1]]), entry

    # every clip holds the bits that per-clip extraction gives (the bundle's path when serving),
    # on one thread and on two, and each packed array is exactly what np.save writes
    pipeline, dataset_dir = config.features.pipeline(), source / "raw/fsdd"
    threads = torch.get_num_threads()
    for split in SPLITS:
        packed = open_split(parallel, split)
        assert packed.features.dtype == np.float32 and packed.features.shape[1:] == (64,)
        assert len(packed) == meta["clips"][split] and packed.offsets[-1] == len(packed.features)
        for i, row in enumerate(packed.rows):
            torch.set_num_threads(2 if i % 25 == 0 else 1)  # two threads are slow on a busy machine
            try:
                expected = clip_features(dataset_dir / row["path"], pipeline)
            finally:
                torch.set_num_threads(threads)
            assert np.array_equal(packed.clip(i), expected), row["path"]
        for name in ("features.npy", "offsets.npy"):
            saved = io.BytesIO()
            np.save(saved, np.load(parallel / split / name))
            assert saved.getvalue() == (parallel / split / name).read_bytes()

    shown = capsys.readouterr().err  # the progress bars
    assert "features train: 100%" in shown and "300/300" in shown and "features dev: 100%" in shown
    assert not list((tmp_path / "parallel").glob(".*")), "no staging directory is left behind"


def test_the_first_bad_clip_in_index_order_stops_it_and_leaves_nothing(source, tmp_path):
    root = tmp_path / "features"
    with pytest.raises(AudioError, match=r"1_jackson_0.wav: cannot decode audio"):
        stages.preprocess(_config(source, root, "raise"), progress=False, workers=2)
    assert not any(root.iterdir()), "neither a store nor a staging directory a later run would resume"


def test_a_killed_build_resumes_from_its_last_chunk_and_ends_identical(source, serial_store, tmp_path, caplog):
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(_raw(source, tmp_path / "features", "skip")))
    command = [sys.executable, "-m", "tympan.cli", "preprocess", "exp.yaml", "--workers", "2"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = tmp_path / "features/.fsdd-features.partial/progress.json"
    deadline = time.monotonic() + 240
    while not progress.is_file():
        assert process.poll() is None, "preprocess ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    workers = _children(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = sum(split["files"] for split in json.loads(progress.read_text())["splits"].values())
    assert 0 < done < FILES, done
    assert len(workers) == 2 and _gone(workers), "the workers die with the build"
    assert not list((tmp_path / "features").glob("fsdd-*")), "nothing that looks like a store"

    with caplog.at_level(logging.INFO, logger="tympan"):
        store = stages.preprocess(_config(source, tmp_path / "features"), progress=False, workers=1)
    assert f"{done} of {FILES} files were extracted already" in caplog.text
    assert f"{FILES - done} files extracted in" in caplog.text  # the finished chunks were not redone
    assert _files(store) == _files(serial_store)
    assert not list((tmp_path / "features").glob(".*"))


def _children(pid):
    """The process ids of a process's children (its pool's workers), once it has them."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
        if children:
            return children
        time.sleep(0.01)
    return []


def _gone(pids, seconds=10.0):
    """Whether every process exits (or is a zombie) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        states = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:
                states.append("gone")
        if all(state in ("Z", "X", "gone") for state in states):
            return True
        time.sleep(0.05)
    return False


def _interrupted(monkeypatch, config, after_commits=2):
    """Stop an in-process build with Ctrl-C after its `after_commits`-th chunk is committed."""
    commit, commits = staging.Staging.commit, []

    def stop_after(self, *arrays):
        commit(self, *arrays)
        commits.append(1)
        if len(commits) == after_commits:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(staging.Staging, "commit", stop_after)
        with pytest.raises(KeyboardInterrupt):
            stages.preprocess(config, progress=False, workers=1)


def test_a_staging_directory_that_does_not_add_up_is_discarded(source, serial_store, tmp_path, monkeypatch, caplog):
    root = tmp_path / "features"
    _interrupted(monkeypatch, _config(source, root))
    staging = root / ".fsdd-features.partial"
    features = staging / "train/features.npy"
    assert json.loads((staging / "progress.json").read_text())["splits"]["train"]["files"] == 64
    with open(features, "r+b") as f:  # as if the last chunk's data never reached the disk
        f.truncate(features.stat().st_size - 4096)
    with caplog.at_level(logging.INFO, logger="tympan"):
        store = stages.preprocess(_config(source, root), progress=False, workers=1)
    assert f"discarding {staging}: train: features.npy holds fewer than" in caplog.text
    assert f"{FILES} files extracted in" in caplog.text
    assert _files(store) == _files(serial_store)


def test_a_progress_json_cut_short_by_the_kill_is_not_kept_in_the_store(source, serial_store, tmp_path, monkeypatch):
    """A kill while progress.json is being replaced leaves its temporary file beside it."""
    root = tmp_path / "features"
    _interrupted(monkeypatch, _config(source, root))
    staging = root / ".fsdd-features.partial"
    (staging / ".progress.json.0123456789ab.tmp").write_text('{\n  "key": ')
    store = stages.preprocess(_config(source, root), progress=False, workers=1)
    assert _files(store) == _files(serial_store)


def test_skipped_files_are_appended_as_they_come_and_counted_in_progress_json(
    source, serial_store, tmp_path, monkeypatch, caplog
):
    """progress.json counts the skipped files, so a commit rewrites none of the earlier ones (with many
    skipped, rewriting them all at each chunk made a build quadratic); a line written after the last
    commit, by a build killed meanwhile, is not resumed."""
    root = tmp_path / "features"
    _interrupted(monkeypatch, _config(source, root), after_commits=3)  # past both bad train clips
    train = root / ".fsdd-features.partial/train"
    assert json.loads((train.parent / "progress.json").read_text())["splits"]["train"]["skipped"] == 2
    lines = (train / staging.SKIPPED).read_text().splitlines()
    assert [json.loads(line)["at"] for line in lines] == [40, 95]
    with open(train / staging.SKIPPED, "a") as f:
        f.write(json.dumps({"at": 97, "path": "recordings/x.wav", "reason": "not committed"}) + "\n")
    with caplog.at_level(logging.INFO, logger="tympan"):
        store = stages.preprocess(_config(source, root), progress=False, workers=1)
    assert f"96 of {FILES} files were extracted already" in caplog.text
    assert _files(store) == _files(serial_store)


def test_a_staging_directory_missing_committed_skipped_files_is_discarded(
    source, serial_store, tmp_path, monkeypatch, caplog
):
    root = tmp_path / "features"
    _interrupted(monkeypatch, _config(source, root), after_commits=3)
    staged = root / ".fsdd-features.partial"
    skipped = staged / "train" / staging.SKIPPED
    skipped.write_text(skipped.read_text().splitlines()[0] + "\n")
    with caplog.at_level(logging.INFO, logger="tympan"):
        store = stages.preprocess(_config(source, root), progress=False, workers=1)
    assert f"discarding {staged}: train: skipped.jsonl does not hold the 2 skipped files" in caplog.text
    assert _files(store) == _files(serial_store)


def test_a_staging_directory_of_another_store_key_is_discarded(source, tmp_path, monkeypatch, caplog):
    root = tmp_path / "features"
    _interrupted(monkeypatch, _config(source, root))
    other = _raw(source, root, "skip")
    logmel = {"target": "tympan.transforms.logmel:PannLogMel", "args": {"n_mels": 32}}
    other["features"] = {"root": str(root), "offline": [logmel], "online": TINY["features"]["online"]}
    with caplog.at_level(logging.INFO, logger="tympan"):
        store = stages.preprocess(configuration.parse(other), progress=False, workers=2)
    assert "another store key" in caplog.text and "were extracted already" not in caplog.text
    assert open_split(store, "train").features.shape[1:] == (32,)


def test_a_second_build_waits_for_the_first(source, serial_store, tmp_path, caplog):
    root = tmp_path / "features"
    root.mkdir()
    result = {}
    with caplog.at_level(logging.INFO, logger="tympan"):
        with extract._locked(root):  # another build holds the features root
            waiter = threading.Thread(
                target=lambda: result.setdefault("store", stages.preprocess(_config(source, root), workers=1))
            )
            waiter.start()
            deadline = time.monotonic() + 60
            while "waiting for another tympan preprocess" not in caplog.text:
                assert time.monotonic() < deadline and waiter.is_alive()
                time.sleep(0.01)
            assert not list(root.iterdir())
        waiter.join(timeout=120)
    assert _files(result["store"]) == _files(serial_store)


@pytest.mark.parametrize("workers", [0, -1, 1.5, "two", True])
def test_workers_must_be_a_positive_whole_number(source, tmp_path, workers):
    with pytest.raises(ConfigError, match=f"workers must be a whole number of processes, at least 1, not {workers!r}"):
        stages.preprocess(_config(source, tmp_path / "features"), workers=workers)


LIAR = '''
from tympan.transforms.logmel import PannLogMel


class Liar(PannLogMel):
    """Declares 64 bins, as PannLogMel does, but gives 63."""

    def forward(self, waveform, generator=None):
        return super().forward(waveform)[..., :63]
'''


def test_features_that_are_not_what_the_pipeline_declares_stop_it(source, tmp_path):
    (tmp_path / "liar.py").write_text(LIAR)
    raw = _raw(source, tmp_path / "features", "skip")
    raw["features"] = {"root": raw["features"]["root"], "offline": [{"target": f"{tmp_path / 'liar.py'}:Liar"}]}
    with pytest.raises(DataError, match=r"0_george_0.wav: its features have shape \(\d+, 63\), but the pipeline "):
        stages.preprocess(configuration.parse(raw), progress=False, workers=2)
    assert not any((tmp_path / "features").iterdir())


@pytest.mark.parametrize(("orig", "new"), [(8000, 16000), (44100, 16000), (48000, 32000), (16000, 8000)])
def test_resampling_with_a_kernel_kept_per_rate_pair_gives_torchaudio_functional_bits(fsdd_mirror, orig, new):
    """audio.resample keeps one kernel per rate pair (a worker resamples thousands of clips); its
    result must stay what torchaudio.functional.resample gives, which computes the kernel each time."""
    samples, _ = sf.read(fsdd_mirror / "fsdd/recordings/3_lucas_7.wav", dtype="float32")
    for _ in range(2):  # the kernel is computed, then reused
        resampled = audio.resample(samples, orig, new)
        assert resampled.dtype == np.float32 and len(resampled) == math.ceil(len(samples) * new / orig)
        assert np.array_equal(resampled, AF.resample(torch.from_numpy(samples), orig, new).numpy())


def test_chunks_hold_at_most_chunk_bytes_of_audio_and_the_store_is_the_same(
    source, serial_store, tmp_path, monkeypatch
):
    """Long recordings make small chunks (a chunk's features are held in memory twice over)."""
    paths = sorted((source / "raw/fsdd/recordings").glob("*.wav"))
    sizes = {p: p.stat().st_size for p in paths}
    monkeypatch.setattr(extract, "CHUNK_BYTES", 3 * max(sizes.values()))
    chunks = extract._chunks(paths)
    assert [p for chunk in chunks for p in chunk] == paths
    assert all(len(c) <= extract.CHUNK and sum(sizes[p] for p in c) <= extract.CHUNK_BYTES for c in chunks)
    assert max(len(c) for c in chunks) < extract.CHUNK  # the size cap, not the count, made them
    store = stages.preprocess(_config(source, tmp_path / "features"), progress=False, workers=2)
    assert _files(store) == _files(serial_store)
