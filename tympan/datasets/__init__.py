"""Datasets: each corpus in its own module, fetched into `<root>/<name>/` with one index per dataset block.

Configs name a dataset class by import path (`tympan.datasets.fsdd:FSDD`), so
there is no registry here; this package only re-exports the public names.
A config's index is `dataset.index(root)` (see `base.AudioDataset.index`).
"""

from tympan.datasets.base import AudioDataset, download_file, link_or_copy
from tympan.datasets.fsdd import FSDD, FSDDSpeakers
from tympan.datasets.index import SPLITS, Index, read_index, write_index

__all__ = [
    "FSDD",
    "FSDDSpeakers",
    "SPLITS",
    "AudioDataset",
    "Index",
    "download_file",
    "link_or_copy",
    "read_index",
    "write_index",
]
