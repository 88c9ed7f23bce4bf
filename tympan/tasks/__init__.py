"""Tasks: what a target is, its loss, metrics, decoding and outputs (see tasks/base.py)."""

from tympan.tasks._old_classification import Classification

__all__ = ["Classification"]
