"""tympan: low-code deep learning for computer audition."""

__version__ = "0.1.0"
