"""Datasets: each corpus in its own module, fetched into `<root>/<name>/` with an `index.csv`.

Configs name a dataset class by import path (`tympan.datasets.fsdd:FSDD`), so
there is no registry here; this package only re-exports the public names.
"""

from tympan.datasets.base import (
    INDEX_FILE,
    SPLITS,
    AudioDataset,
    Index,
    download_file,
    link_or_copy,
    read_index,
    write_index,
)
from tympan.datasets.fsdd import FSDD

__all__ = [
    "FSDD",
    "INDEX_FILE",
    "SPLITS",
    "AudioDataset",
    "Index",
    "download_file",
    "link_or_copy",
    "read_index",
    "write_index",
]
