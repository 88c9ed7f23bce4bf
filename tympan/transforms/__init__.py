"""Feature extraction (offline, before training) and utility transforms (online)."""

from tympan.transforms.logmel import PannLogMel
from tympan.transforms.normalize import normalize

__all__ = ["PannLogMel", "normalize"]
