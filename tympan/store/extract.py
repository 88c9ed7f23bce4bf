"""Building a store: the fetched index's clips decoded and extracted, in chunks, by worker processes.

A store holds one config's offline features, packed per split into a few large files (thousands
of tiny files are slow to read and slow for DVC to hash; three per split are not):
  meta.json                      the offline pipeline, the stored kind (its Spec), target columns, the
                                 config and index digests, skipped files
  <split>/features.npy           float32, every clip of the split end to end along the first axis
                                 (waveforms and frames); fixed-size kinds (vectors, images) one row a clip
  <split>/offsets.npy            (clips + 1,) int64: clip i is rows offsets[i]:offsets[i + 1]
  <split>/index.csv              the dataset index rows of the split, in the same order
It lies where the config says (`tympan.store.key`). It is built in a staging directory beside it
(`tympan.store.staging`), which a killed build resumes, and moved into place when complete; a store
whose recorded index is not the fetched one is rebuilt that way, so it stays readable meanwhile.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import math
import multiprocessing
import os
import shutil
import signal
import sys
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from tympan import audio
from tympan.config import Config, DataConfig
from tympan.datasets.base import SPLITS, AudioDataset, Index
from tympan.errors import AudioError, ConfigError, DataError, TympanError
from tympan.fileio import disk_space
from tympan.progress import bar as progress_bar
from tympan.store.key import config_digest, content_key, index_digest, store_dir
from tympan.store.reader import read_meta
from tympan.store.staging import Staging
from tympan.transforms.spec import Spec

log = logging.getLogger("tympan")


def build(
    config: Config | DataConfig, dataset: AudioDataset, index: Index, progress: bool = True, workers: int = 1
) -> Path:
    """Extract features for every clip of the index into the config's store; returns its directory.

    A complete store of this config and index is reused; one built from another index (or for
    another config, at a path the config names) is rebuilt beside it and then replaced. `workers`
    processes (1: this one) decode and extract chunks of files in index order, one torch thread
    each. Their results are appended to the packed arrays of a staging directory beside the store
    as chunks finish, and the store appears only when complete (meta.json last, then a rename,
    an exchange with the store it replaces); a killed build resumes from its
    last completed chunk. A clip that cannot be used (undecodable, unsupported rate, too short
    for the features, non-finite features) stops the build, naming the file and leaving nothing
    behind, unless `dataset.on_unreadable: skip`, which leaves it out and lists it with its
    reason in meta.json and `skipped.csv`.
    """
    out = store_dir(config, dataset.name)
    if _outdated(out, config, index) is None:
        log.info("features already extracted in %s", out)
        return out
    try:
        pipeline = config.features.pipeline()
    except ValueError as exc:
        raise ConfigError(f"features: {exc}") from None
    advice = "free some space and run `tympan preprocess` again: it resumes from its last complete chunk"
    with disk_space(out.parent, advice):  # what was staged stays valid, as after a kill
        return _build(config, dataset, index, pipeline, out, progress, workers)


def _build(config: Config, dataset: AudioDataset, index: Index, pipeline, out: Path, progress: bool, workers: int):
    """`build` itself, under the lock of the store's parent folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out.parent):
        outdated = _outdated(out, config, index)
        if outdated is None:  # built by the build this one waited for
            log.info("features already extracted in %s", out)
            return out
        if out.exists():
            log.info("rebuilding %s: %s", out, outdated)
        staging = Staging(out, dataset.name, content_key(config, index), pipeline.stored, index)
        started, todo = time.monotonic(), staging.files_left(index)
        stop_at_error = config.dataset.on_unreadable == "raise"
        try:
            with _extractor(pipeline, min(workers, math.ceil(todo / CHUNK))) as run:
                for split in SPLITS:
                    _extract_split(staging, split, index, run, stop_at_error, progress)
            _check_kept(staging, dataset.name)
        except TympanError:  # bad data or a bad pipeline: what was staged must not be resumed
            shutil.rmtree(staging.dir, ignore_errors=True)
            raise
        counts = staging.finish(index, _meta(config, dataset, index, pipeline.stored))
    seconds = time.monotonic() - started
    clips = ", ".join(f"{k}: {v} clips" for k, v in counts.items())
    log.info("features written to %s (%s); %d files extracted in %.1f s", out, clips, todo, seconds)
    return out


def _outdated(out: Path, config: Config | DataConfig, index: Index) -> str | None:
    """Why the store at `out` must be built, or None when it holds this config's features of this index.
    A folder there that is no store is refused: it may be anything a mistyped `features.store` names."""
    if not (out / "meta.json").is_file():
        if (out.is_dir() and any(out.iterdir())) or (out.exists() and not out.is_dir()):
            raise DataError(
                f"{out}: not a feature store (no meta.json), so `tympan preprocess` does not replace it; "
                "remove it, or name another path as features.store"
            )
        return "no store yet"
    meta = read_meta(out)
    theirs, ours = str(meta.get("config_digest"))[:10], config_digest(config)[:10]
    if theirs != ours:
        return f"it holds another config's features (config digest {theirs}, this config's is {ours})"
    if meta.get("index_digest") != index_digest(index):
        return "the fetched index is not the one it was built from"
    return None


def _check_kept(staging: Staging, dataset_name: str) -> None:
    """A split whose files were all skipped (`on_unreadable: skip`) is an error, not an empty split:
    such a store trained, or tested, on nothing without a word."""
    for split, done in staging.progress["splits"].items():
        if done["files"] and not done["clips"]:
            first = staging.skipped[split][0]
            raise DataError(
                f"{dataset_name}: every one of the {done['files']} files of the {split} split was skipped as unusable "
                f"(first: {first['path']}: {first['reason']}); nothing was stored"
            )


def _meta(config: Config | DataConfig, dataset: AudioDataset, index: Index, stored: Spec) -> dict:
    return {
        "dataset": dataset.name,
        "targets": list(dataset.targets),
        "features": config.features.stored_part(),
        "key": content_key(config, index)[:10],
        "config_digest": config_digest(config),
        "index_digest": index_digest(index),
        "stored": asdict(stored),
    }


def clip_features(path: Path, pipeline) -> np.ndarray:
    """The stored features of one file; any reason it cannot have them is an AudioError."""
    samples, rate = audio.load(path, pipeline.sample_rate)
    try:
        features = pipeline.extract(samples)
    except (RuntimeError, ValueError) as err:
        if "padding" in str(err).lower():  # the STFT pads by half a window, which needs that many samples
            raise AudioError(path, f"too short for the features ({len(samples)} samples at {rate} Hz)") from None
        raise AudioError(path, f"feature extraction failed ({str(err).splitlines()[0]})") from None
    bad = int(features.size - np.isfinite(features).sum())
    if bad:
        raise AudioError(path, f"non-finite features ({bad} values NaN or infinite; is the audio level sane?)")
    return features


# ---- extraction: chunks of files, in worker processes or in this one ----------------------------

CHUNK = 32  # files a task at most: IPC is paid once a chunk, and a resumed build redoes at most one
CHUNK_BYTES = 16 << 20  # and at most this much audio (on disk), so long recordings do not fill memory
PR_SET_PDEATHSIG = 1  # from linux/prctl.h
_worker_pipeline = None  # a worker process's pipeline, set once by _start_worker


def _extract_chunk(pipeline, paths: list[Path], stop_at_error: bool) -> list:
    """Each file's features (float32, as stored), or (path, reason) for a file that cannot have
    them; with `stop_at_error` the chunk ends at its first such file."""
    results = []
    for path in paths:
        try:
            results.append(np.ascontiguousarray(clip_features(path, pipeline), dtype=np.float32))
        except AudioError as exc:
            results.append((exc.path, exc.reason))
            if stop_at_error:
                break
    return results


def _start_worker(pipeline, parent: int) -> None:
    """One torch thread a worker (the workers are the parallelism); Ctrl-C is the parent's to
    handle; a worker dies with its parent, so a killed build leaves no process behind."""
    global _worker_pipeline
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before that took effect
        os._exit(1)
    torch.set_num_threads(1)
    _worker_pipeline = pipeline


def _worker_chunk(paths: list[Path], stop_at_error: bool) -> list:
    return _extract_chunk(_worker_pipeline, paths, stop_at_error)


@contextmanager
def _extractor(pipeline, workers: int):
    """`run(chunks, stop_at_error)` gives each chunk's results in order, from `workers` forked
    processes (the pipeline is inherited, not pickled) with two chunks a worker in flight, or
    from this process for one. Either way one torch thread extracts a clip, which gives the
    same bits as any other thread count (tests/test_preprocess_parallel.py checks it)."""
    if workers <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield lambda chunks, stop: (_extract_chunk(pipeline, paths, stop) for paths in chunks)
        finally:
            torch.set_num_threads(threads)
        return
    fork = "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if fork else None)
    pool = ProcessPoolExecutor(workers, context, initializer=_start_worker, initargs=(pipeline, os.getpid()))
    try:
        yield lambda chunks, stop: _in_order(pool, chunks, stop, ahead=2 * workers)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _in_order(pool: ProcessPoolExecutor, chunks: list, stop_at_error: bool, ahead: int):
    pending: deque = deque()
    for paths in chunks:
        pending.append(pool.submit(_worker_chunk, paths, stop_at_error))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _chunks(paths: list[Path]) -> list[list[Path]]:
    """Consecutive runs of at most CHUNK files and (unless one file is bigger) CHUNK_BYTES."""
    chunks, size = [[]], 0
    for path in paths:
        try:
            nbytes = path.stat().st_size
        except OSError:  # missing: extraction says so, naming it
            nbytes = 0
        if chunks[-1] and (len(chunks[-1]) == CHUNK or size + nbytes > CHUNK_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(path)
        size += nbytes
    return chunks if chunks[0] else []


def _extract_split(staging: Staging, split: str, index: Index, run, stop_at_error: bool, progress: bool) -> None:
    """Extract the split's files that are not staged yet, committing after each chunk."""
    rows = index.split(split)
    done = staging.progress["splits"].get(split)
    if done is not None and done["files"] == len(rows):
        return  # staged by the build this one resumes
    if done is None:
        done = staging.progress["splits"][split] = {"files": 0, "clips": 0, "rows": 0, "skipped": 0}
    paths = [index.path_of(row) for row in rows]
    chunks = _chunks(paths[done["files"] :])
    shown = progress_bar(
        None, progress and bool(rows), total=len(rows), initial=done["files"], desc=f"features {split}", unit="clip"
    )
    with shown, staging.arrays(split, done) as (features, offsets, skipped):
        for results in run(chunks, stop_at_error):
            for result in results:
                if isinstance(result, tuple):
                    if stop_at_error:
                        raise AudioError(*result)
                    skipped.append({"at": done["files"], "path": rows[done["files"]]["path"], "reason": result[1]})
                    done["skipped"] += 1
                else:
                    clip = staging.as_rows(result, paths[done["files"]])
                    features.append(clip)
                    done["rows"] += len(clip)
                    offsets.append(np.array([done["rows"]]))
                    done["clips"] += 1
                done["files"] += 1
            staging.commit(features, offsets, skipped)
            shown.update(len(results))
        staging.commit(features, offsets, skipped)  # an empty split is done too


@contextmanager
def _locked(directory: Path):
    """One build at a time in a folder of stores: a second one waits, then finds the store done
    (or resumes what the first left staged)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another tympan preprocess writing below %s", directory)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # a file system without locks: builds there are not guarded
            log.warning("cannot lock %s (%s); run one tympan preprocess at a time there", directory, exc.strerror)
        yield
    finally:
        os.close(fd)
