"""Tasks: what a target is, its loss, metrics, decoding and outputs (see tasks/base.py).

A `task:` block names one by import path (presets in tympan/presets/tasks/)."""

from tympan.tasks.base import Output, Task
from tympan.tasks.classification import Classification
from tympan.tasks.multilabel import MultiLabel
from tympan.tasks.regression import Regression

__all__ = ["Classification", "MultiLabel", "Output", "Regression", "Task"]
