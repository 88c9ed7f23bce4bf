"""Where a config's feature store is, decided by the config alone.

A store is named by the digest of the part of the config that decides what is stored (the
extractor, the dataset block, the store format), so whoever holds the config finds the store
without the raw audio or its index: a clone that pulled only the features trains. The index the
store was built from is recorded in its meta.json instead, and preprocess rebuilds the store
when the fetched index no longer matches it.
"""

from __future__ import annotations

from pathlib import Path

from tympan.config import STORE_FORMAT, Config, DataConfig, digest
from tympan.datasets.base import Index


def config_digest(config: Config | DataConfig) -> str:
    """What the config decides about the store: extractor and dataset block (not roots, not paths)."""
    return digest(
        {
            "features": config.features.stored_part(),
            "dataset": config.dataset.model_dump(mode="json", include={"target", "args", "on_unreadable"}),
            "store_format": STORE_FORMAT,
        }
    )


def index_digest(index: Index) -> str:
    """The content of the index: a file moved to another split makes the store out of date."""
    return digest(index.rows)


def content_key(config: Config | DataConfig, index: Index) -> str:
    """Both digests in one: what a store holds (meta.json's `key`, a bundle's `features_key`) and
    what a staged build was started for (a build of other content never resumes it)."""
    return digest([config_digest(config), index_digest(index)])


def store_name(config: Config | DataConfig, dataset_name: str) -> str:
    return f"{dataset_name}-{config_digest(config)[:10]}"


def store_dir(config: Config | DataConfig, dataset_name: str) -> Path:
    """The config's store: the path `features.store` names, else `<features.root>/<dataset>-<digest>`."""
    if config.features.store is not None:
        return Path(config.features.store)
    return Path(config.features.root) / store_name(config, dataset_name)


def store_in(folder: str | Path, config: Config | DataConfig, dataset_name: str) -> Path:
    """The config's store in a folder of stores named by digest (a pipeline's features artifact)."""
    return Path(folder) / store_name(config, dataset_name)
