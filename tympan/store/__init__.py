"""Offline features: one store per config, found by the config's digest alone.

`key` says where a config's store is, `extract` builds it (worker processes, resumable, skipped
files listed), `staging` holds a build in progress, `reader` is all that training reads. Training
needs the store only, never the raw audio or its index.
"""

from tympan.store.extract import build, clip_features
from tympan.store.key import config_digest, content_key, index_digest, store_dir, store_in, store_name
from tympan.store.reader import SPLITS, Split, open_split, read_meta, stored_spec

__all__ = [
    "SPLITS",
    "Split",
    "build",
    "clip_features",
    "config_digest",
    "content_key",
    "index_digest",
    "open_split",
    "read_meta",
    "store_dir",
    "store_in",
    "store_name",
    "stored_spec",
]
