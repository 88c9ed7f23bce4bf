"""What training reads: a finished store's meta.json and its splits, memory-mapped.

Nothing here opens the raw audio or its index, so a store alone (pulled by DVC, handed over as a
pipeline artifact) is enough to train on.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tympan.config import Config
from tympan.datasets.base import SPLITS
from tympan.errors import DataError
from tympan.store.key import config_digest
from tympan.transforms.spec import Spec

__all__ = ["SPLITS", "Split", "open_split", "read_meta", "stored_spec"]


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


def read_meta(directory: Path, config: Config | None = None) -> dict:
    """A complete store's meta.json; with `config`, only if that config built it (training on a
    store of other features or another dataset block would be wrong without a word)."""
    path = Path(directory) / "meta.json"
    if not Path(directory).exists():
        raise DataError(f"{directory}: no feature store; run `tympan fetch` and `tympan preprocess` with this config")
    if not path.is_file():
        raise DataError(f"{directory}: not a complete feature store (no meta.json); run `tympan preprocess`")
    meta = json.loads(path.read_text())
    if config is not None and meta.get("config_digest") != (ours := config_digest(config)):
        theirs = meta["config_digest"][:10] if meta.get("config_digest") else "none recorded"
        raise DataError(
            f"{directory}: a feature store of another config (config digest {theirs}), not of this one "
            f"(config digest {ours[:10]}); run `tympan preprocess` with this config"
        )
    return meta
