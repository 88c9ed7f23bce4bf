"""The pipeline stages. The CLI, dvc.yaml and the Kubeflow components all call these and
nothing else: fetch -> preprocess -> train."""

from __future__ import annotations

import logging
from pathlib import Path

from tympan import feature_store, training
from tympan.config import Config
from tympan.datasets.base import AudioDataset, read_index

log = logging.getLogger("tympan")


def dataset_of(config: Config) -> AudioDataset:
    return config.dataset.build()


def fetch(config: Config) -> Path:
    """Download (or copy from the offline mirror) the dataset and write its index."""
    return dataset_of(config).fetch(config.dataset.root)


def preprocess(config: Config) -> Path:
    """Extract offline features for every split into the packed feature store."""
    dataset = dataset_of(config)
    index = read_index(Path(config.dataset.root) / dataset.name)
    return feature_store.build(config, dataset, index, progress=config.training.progress)


def default_run_dir(config: Config) -> Path:
    return Path("runs") / config.experiment / config.run_id()


def train(config: Config, run_dir: str | Path | None = None) -> tuple[Path, dict]:
    """Train on the preprocessed features; returns the run directory and its summary."""
    run_dir = Path(run_dir) if run_dir else default_run_dir(config)
    features = feature_store.store_dir(config, dataset_of(config).name)
    summary = training.train(config, features, run_dir)
    return run_dir, summary
