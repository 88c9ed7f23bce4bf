"""Data and training integrity: the feature store follows the index, bad clips are named and
skippable, non-finite numbers never pass silently, a full disk is one clear error."""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from safetensors.torch import load_file, save_file

from tests.conftest import TINY
from tympan import config as configuration
from tympan import inference, stages
from tympan.bundle import Predictor
from tympan.cli import main
from tympan.errors import AudioError, DataError, StorageError, TrainingError
from tympan.store import clip_features, open_split, read_meta, store_dir, store_in
from tympan.training import _disk_space

SPEAKERS = ("george", "jackson", "lucas")
SPLIT_A = {"train_speakers": ["george", "jackson"], "dev_speakers": ["lucas"], "test_speakers": []}
SPLIT_B = {"train_speakers": ["george"], "dev_speakers": ["jackson"], "test_speakers": ["lucas"]}


@pytest.fixture(scope="module")
def source(fsdd_mirror, tmp_path_factory):
    """A small FSDD copy: take 0 of every digit of three speakers (30 real recordings)."""
    recordings = tmp_path_factory.mktemp("source") / "recordings"
    recordings.mkdir()
    for speaker in SPEAKERS:
        for digit in range(10):
            name = f"{digit}_{speaker}_0.wav"
            shutil.copyfile(fsdd_mirror / "fsdd/recordings" / name, recordings / name)
    return recordings.parent


def _config(root, source, split, on_unreadable="raise"):
    dataset = {"preset": "FSDD", "args": {"source": str(source), **split}, "on_unreadable": on_unreadable}
    raw = {**TINY, "dataset": {**dataset, "root": str(root / "raw")}}
    raw["features"] = {**TINY["features"], "root": str(root / "features")}
    return configuration.parse(raw)


def _speakers(store, split):
    return {row["speaker"] for row in open_split(store, split).rows}


# ---------------------------------------------------------------- the store key


def test_a_changed_split_makes_a_new_store_and_the_same_one_is_reused(tmp_path, source, caplog):
    a, b = _config(tmp_path, source, SPLIT_A), _config(tmp_path, source, SPLIT_B)
    stages.fetch(a)
    store_a = stages.preprocess(a)
    assert _speakers(store_a, "train") == {"george", "jackson"}

    stages.fetch(b)  # adds b's own index beside the same audio
    with caplog.at_level(logging.INFO, logger="tympan"):
        store_b = stages.preprocess(b)
    assert "already extracted" not in caplog.text
    assert store_b != store_a and store_a.is_dir()
    assert (_speakers(store_b, "train"), _speakers(store_b, "test")) == ({"george"}, {"lucas"})
    assert store_dir(b, "fsdd") == store_b  # training finds it without extracting

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tympan"):
        assert stages.preprocess(b) == store_b
    assert "already extracted" in caplog.text
    assert stages.preprocess(a) == store_a  # a's own index: no fetch of a needed after b's
    # what is stored also depends on the unreadable-file policy and on the dataset's args
    assert store_dir(_config(tmp_path, source, SPLIT_A, "skip"), "fsdd") != store_a
    more = _config(tmp_path, source, {**SPLIT_A, "test_speakers": ["theo"]})  # no such recordings: same rows
    stages.fetch(more)
    assert stages.index_of(more).rows == stages.index_of(a).rows
    assert store_dir(more, "fsdd") != store_a  # other args: another store


def test_a_pipeline_step_without_the_index_finds_its_store(tmp_path, source):
    a = _config(tmp_path, source, SPLIT_A)
    stages.fetch(a)
    store = stages.preprocess(a)
    assert store_in(tmp_path / "features", a, "fsdd") == store  # named by the config digest alone
    skip = _config(tmp_path, source, SPLIT_A, "skip")
    with pytest.raises(DataError, match="no feature store; run `tympan fetch` and `tympan preprocess` with this"):
        read_meta(store_in(tmp_path / "features", skip, "fsdd"), skip)


# ---------------------------------------------------------------- clips that cannot be used


def _write_bad_clips(recordings, fsdd_mirror):
    """Five real ways a clip breaks, each under the name of a real recording of george."""
    original, rate = sf.read(fsdd_mirror / "fsdd/recordings/2_george_0.wav", dtype="float32")
    sf.write(recordings / "0_george_0.wav", original[:80], rate)  # 10 ms: shorter than an STFT window
    sf.write(recordings / "1_george_0.wav", original[:1], rate)
    sf.write(recordings / "2_george_0.wav", original * 1e20, rate, subtype="FLOAT")  # finite, but its power is not
    sf.write(recordings / "3_george_0.wav", original[:7919], 7919)
    (recordings / "4_george_0.wav").write_bytes(b"")
    return {
        "0_george_0.wav": "too short for the features",
        "1_george_0.wav": "too short for the features",
        "2_george_0.wav": "non-finite features",
        "3_george_0.wav": "sample rate unsupported (7919 Hz",
        "4_george_0.wav": "empty file (0 bytes)",
    }


@pytest.fixture(scope="module")
def broken(source, fsdd_mirror, tmp_path_factory):
    """A copy of `source` with five unusable clips: (source dir, {file name: reason})."""
    copy = tmp_path_factory.mktemp("broken") / "fsdd"
    shutil.copytree(source, copy)
    return copy, _write_bad_clips(copy / "recordings", fsdd_mirror)


def test_each_unusable_clip_is_an_audio_error_naming_it(broken):
    directory, reasons = broken
    pipeline = configuration.parse(TINY).features.pipeline()
    for name, reason in reasons.items():
        with pytest.raises(AudioError) as info:
            clip_features(directory / "recordings" / name, pipeline)
        assert info.value.path.endswith(name) and info.value.reason.startswith(reason), info.value


def test_an_empty_file_fails_the_fetch_unless_it_is_to_be_skipped(tmp_path, broken):
    directory, _ = broken
    with pytest.raises(DataError, match="4_george_0.wav: empty file"):
        stages.fetch(_config(tmp_path, directory, SPLIT_A))
    assert not (tmp_path / "raw/fsdd").exists()
    dataset_dir = stages.fetch(_config(tmp_path, directory, SPLIT_A, "skip"))
    assert (dataset_dir / "recordings/4_george_0.wav").stat().st_size == 0


def test_unusable_clips_stop_preprocessing_or_are_skipped_with_their_reason(tmp_path, broken):
    directory, reasons = broken
    skip = _config(tmp_path, directory, SPLIT_A, "skip")
    stages.fetch(skip)
    with pytest.raises(AudioError, match="0_george_0.wav: too short for the features"):
        stages.preprocess(_config(tmp_path, directory, SPLIT_A))  # same index, policy "raise"
    assert not (tmp_path / "features").exists() or not any((tmp_path / "features").iterdir())

    store = stages.preprocess(skip)
    meta = read_meta(store)
    assert meta["clips"] == {"train": 20 - len(reasons), "dev": 10, "test": 0}
    listed = {row["path"].split("/")[-1]: row["reason"] for row in meta["skipped"]}
    assert listed.keys() == reasons.keys()
    for name, reason in reasons.items():
        assert listed[name].startswith(reason), listed[name]
    assert (store / "skipped.csv").read_text().count("\n") == 1 + len(reasons)
    train = open_split(store, "train")
    assert np.isfinite(train.features).all()


@pytest.mark.parametrize("speakers", [["lucas"], list(SPEAKERS)], ids=["the-dev-split", "every-split"])
def test_skipping_every_file_of_a_split_is_an_error(tmp_path, source, fsdd_mirror, capsys, speakers):
    """`on_unreadable: skip` that skipped them all made an empty split (or store) and exited 0."""
    copy = tmp_path / "source"
    shutil.copytree(source, copy)
    original, rate = sf.read(fsdd_mirror / "fsdd/recordings/2_george_0.wav", dtype="float32")
    for path in copy.glob("recordings/*.wav"):
        if path.name.split("_")[1] in speakers:
            sf.write(path, original[:80], rate)  # 10 ms: too short for the features
    raw = {**TINY, "dataset": {"preset": "FSDD", "args": {"source": str(copy), **SPLIT_A}, "on_unreadable": "skip"}}
    raw["dataset"]["root"], raw["features"] = str(tmp_path / "raw"), {**TINY["features"], "root": str(tmp_path / "f")}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(raw))
    assert main(["fetch", str(tmp_path / "exp.yaml")]) == 0
    capsys.readouterr()
    assert main(["preprocess", str(tmp_path / "exp.yaml")]) == 1
    errors = capsys.readouterr().err.splitlines()
    split, files = ("dev", 10) if speakers == ["lucas"] else ("train", 20)
    assert errors == [
        f"tympan: error: fsdd: every one of the {files} files of the {split} split was skipped as unusable "
        f"(first: recordings/0_{speakers[0]}_0.wav: too short for the features (160 samples at 16000 Hz)); "
        "nothing was stored"
    ]
    assert not any((tmp_path / "f").iterdir())  # neither a store nor a staging directory


def test_cli_names_the_clip_that_stops_preprocessing(tmp_path, broken):
    directory, _ = broken
    raw = {**TINY, "dataset": {"preset": "FSDD", "args": {"source": str(directory), **SPLIT_A}}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(raw))
    tympan = [sys.executable, "-m", "tympan.cli"]
    run = {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 300}
    fetched = subprocess.run([*tympan, "fetch", "exp.yaml", "dataset.on_unreadable=skip"], **run)
    assert fetched.returncode == 0, fetched.stderr
    result = subprocess.run([*tympan, "preprocess", "exp.yaml"], **run)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("tympan: error:")]
    reason = "too short for the features (160 samples at 16000 Hz)"
    assert errors == [f"tympan: error: data/raw/fsdd/recordings/0_george_0.wav: {reason}"]


# ---------------------------------------------------------------- non-finite numbers


@pytest.mark.parametrize(
    ("lr", "message"),
    [(1.0e30, "the training loss became nan at step 2"), (1.0e20, "weights became NaN or infinite by step 2")],
    ids=["loss", "weights"],
)
def test_a_diverging_run_stops_and_keeps_its_last_finite_state(tiny_workspace, tmp_path, caplog, lr, message):
    """Plain SGD at an absurd learning rate (gradients clipped to norm 1, so step 1 stays finite)."""
    _, raw = tiny_workspace
    raw = {**raw, "optimizer": {"preset": "SGD", "args": {"lr": lr, "momentum": 0.0}}}
    raw["training"] = {**raw["training"], "steps": 4, "eval_every": 4, "save_every": 1, "grad_clip": 1.0}
    config = configuration.parse(raw)
    with pytest.raises(TrainingError, match=message):
        stages.train(config, tmp_path / "run")
    assert not (tmp_path / "run/summary.json").exists() and not (tmp_path / "run/best").exists()
    assert not (tmp_path / "run/running.pid").exists()  # removed on every exit, not only a finished one
    state = torch.load(tmp_path / "run/last/training_state.pt", weights_only=True)
    assert state["step"] == 1
    assert all(torch.isfinite(v).all() for v in load_file(tmp_path / "run/last/model.safetensors").values())
    with caplog.at_level(logging.INFO, logger="tympan"), pytest.raises(TrainingError, match=message):
        stages.train(config, tmp_path / "run")  # it resumes from that state, and diverges again
    assert "after step 1" in caplog.text


def test_inference_reports_a_non_finite_prediction_as_a_failure(tiny_run, tmp_path, fsdd_mirror):
    run_dir, _ = tiny_run
    predictor = Predictor(run_dir / "bundle")
    clean = fsdd_mirror / "fsdd/recordings/2_george_0.wav"
    samples, rate = sf.read(clean, dtype="float32")
    loud = tmp_path / "loud.wav"
    sf.write(loud, samples * 1e20, rate, subtype="FLOAT")
    for window in (None, 0.2):
        results = inference.run(predictor, [clean, loud], window=window, progress=False)
        assert results.failed == [(str(loud), results.failed[0][1])]
        assert results.failed[0][1].startswith("non-finite output")
        assert results.rows and {row["file"] for row in results.rows} == {str(clean)}


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path, request):
    """A real tmpfs of 3 MB, or of the size an indirect parameter gives (skipped where mounting is
    not allowed); yields its path."""
    disk = tmp_path / "disk"
    disk.mkdir()
    size = getattr(request, "param", "3m")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def _fill(disk, leave_kib):
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "fill").write_bytes(b"\0" * (free - leave_kib * 1024))


def test_safetensors_on_a_full_disk_is_a_storage_error(small_disk):
    _fill(small_disk, 0)
    with pytest.raises(StorageError, match="no space left on device"), _disk_space(small_disk):
        save_file({"w": torch.zeros(100_000)}, small_disk / "w.safetensors")


@pytest.mark.parametrize("leave_kib", [40, 270], ids=["at-the-first-state", "near-the-bundle"])
def test_a_full_disk_stops_training_with_one_line_and_no_corrupt_state(tiny_workspace, small_disk, leave_kib):
    """With 40 KiB free the first best/ state does not fit; with 270 KiB the states and plots do
    and the bundle does not (measured; the assertions hold wherever the space runs out)."""
    root, raw = tiny_workspace
    training = {**raw["training"], "steps": 2, "eval_every": 1, "save_every": 1}
    (small_disk / "exp.yaml").write_text(yaml.safe_dump({**raw, "training": training}))
    _fill(small_disk, leave_kib)
    run_dir = small_disk / "run"
    command = [sys.executable, "-m", "tympan.cli", "train", str(small_disk / "exp.yaml"), "--run-dir", str(run_dir)]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("tympan: error:")]
    assert len(errors) == 1 and f"{run_dir}: no space left on device" in errors[0], result.stderr
    assert not (run_dir / "summary.json").exists() and not (run_dir / "bundle").exists()
    assert not [n for n in (".last.tmp", ".last.old", ".best.tmp", ".best.old") if (run_dir / n).exists()]
    for name in ("last", "best"):
        if (run_dir / name).exists():  # absent or complete
            torch.load(run_dir / name / "training_state.pt", weights_only=True)
            load_file(run_dir / name / "model.safetensors")

    (small_disk / "fill").unlink()
    again = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and (run_dir / "summary.json").is_file(), again.stderr


@pytest.mark.parametrize("small_disk", ["24m"], indirect=True)
def test_a_full_disk_stops_preprocess_with_one_line_and_it_resumes(toy_regression_workspace, small_disk):
    """A real full disk (tmpfs) under the features root: one `tympan: error:` line, no store, and once
    there is space again the same store as one built without trouble."""
    root, raw = toy_regression_workspace
    features = small_disk / "features"
    (small_disk / "exp.yaml").write_text(
        yaml.safe_dump({**raw, "features": {**raw["features"], "root": str(features)}})
    )
    command = [sys.executable, "-m", "tympan.cli", "preprocess", str(small_disk / "exp.yaml"), "--workers", "1"]
    _fill(small_disk, 200)
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("tympan: error:")]
    assert errors == [
        f"tympan: error: {features}: no space left on device; free some space and run `tympan preprocess` "
        "again: it resumes from its last complete chunk"
    ], result.stderr
    assert not list(features.glob("*/meta.json")) and not list(features.glob("[!.]*"))  # no store, even partly

    (small_disk / "fill").unlink()
    again = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    [store] = features.glob("*/meta.json")
    reference = Path(raw["features"]["root"]) / store.parent.name
    for path in sorted(p for p in reference.rglob("*") if p.is_file()):
        assert (store.parent / path.relative_to(reference)).read_bytes() == path.read_bytes(), path
