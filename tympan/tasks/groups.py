"""Per-group metrics (`task.stratify`): the task's metrics over the clips of each value of an index
column (each speaker, device or site), and each metric's worst group in that metric's direction.

Any task's metrics work per group, since they are computed from the task's own scores and targets
of the group's clips; nothing here knows what a label is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tympan.results import best, worst_name

OPPOSITE = {"max": "min", "min": "max"}


def group_metrics(task, scores: np.ndarray, targets: np.ndarray, values: Sequence[str]) -> dict:
    """One column's groups: {"clips": {group: n}, "metrics": {group: {metric: value}}, "worst":
    {metric: group}}. `values[i]` is clip i's value in that column, in the order of `scores` and
    `targets`. Groups sort as strings; of groups tied for worst, the first is named."""
    values = np.asarray(values, dtype=str)
    if len(values) != len(scores):
        raise ValueError(f"{len(values)} group values for {len(scores)} clips")
    groups = sorted(set(values.tolist()))
    scores, targets = np.asarray(scores), np.asarray(targets)
    clips, metrics = {}, {}
    for group in groups:
        chosen = values == group
        clips[group] = int(chosen.sum())
        metrics[group] = task.metrics(scores[chosen], targets[chosen])
    names = [name for name in metrics[groups[0]] if all(name in m for m in metrics.values())] if groups else []
    worst = {}
    for name in names:
        scored = ((group, metrics[group][name]) for group in groups)
        worst[name] = best(scored, OPPOSITE[task.metric_direction(name)])[0]
    return {"clips": clips, "metrics": metrics, "worst": worst}


def worst_values(found: dict, column: str) -> dict[str, float]:
    """{"accuracy.worst_speaker": 0.82, ...}: each metric of its worst group, as a split's metrics."""
    return {worst_name(name, column): found["metrics"][group][name] for name, group in found["worst"].items()}
