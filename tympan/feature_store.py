"""Offline features packed per split into a few large files, memory-mapped at training time.

Layout of `<root>/<dataset>-<key>/`, where key hashes everything that changes what is stored:
the feature extractor and its args, the dataset block (which clips, how unreadable ones are
treated) and the content of the dataset's index (which file is in which split):
  meta.json                      the offline pipeline, the stored kind (its Spec), target columns, skipped files
  <split>/features.npy           float32, every clip of the split end to end along the first axis
                                 (waveforms and frames); fixed-size kinds (vectors, images) one row a clip
  <split>/offsets.npy            (clips + 1,) int64: clip i is rows offsets[i]:offsets[i + 1]
  <split>/index.csv              the dataset index rows of the split, in the same order
Thousands of tiny files are slow to read and slow for DVC to hash; three per split are not.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tympan import audio
from tympan.config import STORE_FORMAT, Config, digest
from tympan.datasets.base import AudioDataset, Index, read_index
from tympan.errors import AudioError, ConfigError, DataError
from tympan.fileio import write_csv, write_json
from tympan.progress import bar as progress_bar
from tympan.transforms.spec import Spec

log = logging.getLogger("tympan")
SPLITS = ("train", "dev", "test")


def config_digest(config: Config) -> str:
    """The part of the store key that the config decides: extractor and dataset block (not roots)."""
    return digest(
        {
            "features": config.features.stored_part(),
            "dataset": config.dataset.model_dump(mode="json", include={"target", "args", "on_unreadable"}),
            "store_format": STORE_FORMAT,
        }
    )


def index_digest(index: Index) -> str:
    """The content of the index: a file moved to another split makes another store."""
    return digest(index.rows)


def store_key(config: Config, index: Index) -> str:
    return digest([config_digest(config), index_digest(index)])[:10]


def store_dir(config: Config, dataset_name: str, index: Index | None = None) -> Path:
    """The store of this config and index (read from `<dataset.root>/<name>/` unless given)."""
    if index is None:
        index = read_index(Path(config.dataset.root) / dataset_name)
    return Path(config.features.root) / f"{dataset_name}-{store_key(config, index)}"


def find(root: str | Path, config: Config, dataset_name: str) -> Path:
    """The one store below `root` built for this config, for where the index is not at hand
    (a pipeline's training step gets the features only)."""
    stores = [d for d in sorted(Path(root).glob(f"{dataset_name}-*")) if (d / "meta.json").is_file()]
    found = [d for d in stores if read_meta(d).get("config_digest") == config_digest(config)]
    if len(found) != 1:
        what = "no feature store" if not found else f"{len(found)} feature stores"
        raise DataError(f"{root}: {what} of this dataset and features config; run `tympan preprocess`")
    return found[0]


def build(config: Config, dataset: AudioDataset, index: Index, progress: bool = True) -> Path:
    """Extract features for every clip of the index into the store; returns its directory.

    A store that is already complete is reused. A clip that cannot be used (undecodable,
    unsupported rate, too short for the features, non-finite features) stops the build, naming
    the file, unless `dataset.on_unreadable: skip`, which leaves it out and lists it with its
    reason in meta.json and `skipped.csv`.
    """
    out = store_dir(config, dataset.name, index)
    if (out / "meta.json").is_file():
        log.info("features already extracted in %s", out)
        return out
    try:
        pipeline = config.features.pipeline()
    except ValueError as exc:
        raise ConfigError(f"features: {exc}") from None
    stored = pipeline.stored
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        skipped = []
        counts = {}
        for split in SPLITS:
            rows = index.split(split)
            kept, features = [], []
            for row in progress_bar(rows, progress and bool(rows), desc=f"features {split}", unit="clip"):
                try:
                    features.append(clip_features(index.path_of(row), pipeline))
                except AudioError as exc:
                    if config.dataset.on_unreadable == "raise":
                        raise
                    skipped.append({"path": row["path"], "split": split, "reason": exc.reason})
                    continue
                kept.append(row)
            _write_split(tmp / split, features, kept, stored)
            counts[split] = len(kept)
        meta = {
            "dataset": dataset.name,
            "targets": list(dataset.targets),
            "features": config.features.stored_part(),
            "key": store_key(config, index),
            "config_digest": config_digest(config),
            "index_digest": index_digest(index),
            "stored": asdict(stored),
            "clips": counts,
            "skipped": skipped,
        }
        if skipped:
            write_csv(tmp / "skipped.csv", skipped)
            log.warning("skipped %d files that could not be used; listed in %s", len(skipped), out / "skipped.csv")
        write_json(tmp / "meta.json", meta)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("features written to %s (%s)", out, ", ".join(f"{k}: {v} clips" for k, v in counts.items()))
    return out


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


def _write_split(directory: Path, features: list[np.ndarray], rows: list[dict], stored: Spec) -> None:
    directory.mkdir(parents=True)
    if not stored.variable_length:
        features = [f[None] for f in features]  # one row a clip
    lengths = [len(f) for f in features]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    packed = np.concatenate(features).astype(np.float32) if features else np.zeros((0, *row_shape(stored)), np.float32)
    np.save(directory / "features.npy", packed)
    np.save(directory / "offsets.npy", offsets)
    write_csv(directory / "index.csv", rows)


def row_shape(stored: Spec) -> tuple[int, ...]:
    """The shape of one row of a split's packed array."""
    return {"waveform": (), "frames": (stored.size or 0,), "vector": (stored.size or 0,)}.get(
        stored.kind, tuple(stored.shape or ())
    )


@dataclass
class Split:
    """One split of a store: clip i's features are `clip(i)`, its index row `rows[i]`."""

    features: np.ndarray
    offsets: np.ndarray
    rows: list[dict]
    fixed: bool = False  # a fixed-size kind: clip i is row i

    def __len__(self) -> int:
        return len(self.rows)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def clip(self, i: int) -> np.ndarray:
        if self.fixed:
            return self.features[self.offsets[i]]
        return self.features[self.offsets[i] : self.offsets[i + 1]]


def open_split(directory: Path, split: str) -> Split:
    path = Path(directory) / split
    if not (path / "features.npy").is_file():
        raise DataError(f"{path}: no features; run `tympan preprocess` first")
    with open(path / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return Split(
        features=np.load(path / "features.npy", mmap_mode="r"),
        offsets=np.load(path / "offsets.npy"),
        rows=rows,
        fixed=not stored_spec(read_meta(directory)).variable_length,
    )


def stored_spec(meta: dict) -> Spec:
    """The declared kind of what a store holds."""
    stored = dict(meta["stored"])
    if stored.get("shape") is not None:
        stored["shape"] = tuple(stored["shape"])
    return Spec(**stored)


def read_meta(directory: Path) -> dict:
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise DataError(f"{directory}: not a complete feature store (no meta.json); run `tympan preprocess`")
    return json.loads(path.read_text())
