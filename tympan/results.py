"""What a run's summary.json holds, read the one way every consumer needs it (tracking,
postprocess, the registry's tags, the pipeline's champion gate), and the one comparison of
scores that all of them rank runs with.

A run is ranked on its task's tracking metric in its direction (summary.json's `task` block):
`("dev.mae", "min")` for a regression run, `("dev.accuracy", "max")` for a classification one
and for every run from before tasks, which has no `task` block.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from tympan.errors import ConfigError, DataError

DIRECTIONS = ("max", "min")
BEFORE_TASKS = ("dev.accuracy", "max")  # what runs without a task block were ranked on
SPLITS = ("dev", "test")  # the blocks of a summary that hold metrics
WORST = ".worst_"  # accuracy.worst_speaker: the accuracy of the worst speaker
Item = TypeVar("Item")


def read_summary(path: str | Path) -> dict:
    """A run's summary.json, checked to be one (a JSON object whose dev and test blocks map metric
    names to numbers): a file cut short or edited by hand is a DataError naming it, so that a
    command over many runs can skip that run and go on."""
    path = Path(path)
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError(f"{path}: not a readable summary ({first_line(exc)})") from None
    if not isinstance(summary, dict):
        raise DataError(f"{path}: not a summary: expected a JSON object, got {type(summary).__name__}")
    for name in ("task", "run"):
        if not isinstance(summary.get(name) or {}, dict):
            raise DataError(f"{path}: not a summary: its {name!r} block must be a JSON object")
    for split in SPLITS:
        block = summary.get(split) or {}
        if not _numbers(block):
            raise DataError(f"{path}: not a summary: its {split!r} block must map metric names to numbers")
    if not _groups_readable(summary.get("groups") or {}):
        raise DataError(
            f"{path}: not a summary: its 'groups' block must map dev/test -> column -> metrics -> group -> "
            "metric names to numbers"
        )
    return summary


def _groups_readable(groups) -> bool:
    """The shape `metric_values` reads: {split: {column: {"metrics": {group: {metric: number}}}}}."""
    return isinstance(groups, dict) and all(
        split in SPLITS
        and isinstance(columns, dict)
        and all(
            isinstance(found, dict)
            and isinstance(found.get("metrics"), dict)
            and all(_numbers(metrics) for metrics in found["metrics"].values())
            for found in columns.values()
        )
        for split, columns in groups.items()
    )


def _numbers(block) -> bool:
    """A mapping of metric names to numbers (a bool is not one)."""
    return isinstance(block, dict) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in block.values()
    )


def first_line(exc: BaseException) -> str:
    """An error's first line, or its type where it has no message."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def metric_values(summary: dict) -> dict[str, float]:
    """{"dev": {"accuracy": 0.9}} -> {"dev.accuracy": 0.9}; the names `promote --metric` takes.
    Only the evaluation splits: the `run` and `task` blocks are not metrics. Per-group metrics
    (`task.stratify`) follow as `dev.speaker.jackson.accuracy` (see `group_metric_name`)."""
    values = {f"{split}.{name}": float(value) for split in SPLITS for name, value in (summary.get(split) or {}).items()}
    for split, columns in (summary.get("groups") or {}).items():
        for column, found in columns.items():
            for group, metrics in found["metrics"].items():
                values.update({group_metric_name(split, column, group, m): float(v) for m, v in metrics.items()})
    return values


def group_metric_name(split: str, column: str, group: str, metric: str) -> str:
    """`dev.speaker.jackson.accuracy`: a group's metric as one flat name. A group value is data
    (any text), so what MLflow refuses in a metric name (outside letters, digits, `_-. `) becomes
    `_`, and an empty value is `_`: such a name is for looking up, the summary keeps the value."""
    return f"{split}.{column}.{_name_safe(group)}.{metric}"


def _name_safe(text: str) -> str:
    return re.sub(r"[^\w\-. ]", "_", text) if text.strip(". ") else "_"


def worst_name(metric: str, column: str) -> str:
    """`accuracy.worst_speaker`: the metric of the worst group of `column`, a split's metric."""
    return f"{metric}{WORST}{column}"


def parse_tracking(text: str) -> tuple[str, str | None]:
    """`task.tracking` as (metric, stratify column or None): `dev.uar` -> ("uar", None),
    `dev.accuracy.worst_speaker` -> ("accuracy", "speaker"). Only dev metrics choose the best state
    (test is for the end); another form is a ValueError saying what the key takes."""
    form = "dev.<metric> (e.g. dev.uar) or dev.<metric>.worst_<stratify column> (e.g. dev.accuracy.worst_speaker)"
    split, _, name = text.partition(".")
    if split != "dev" or not name:
        raise ValueError(f"must be {form}, got {text!r}")
    metric, worst, column = name.rpartition(WORST)
    if not worst:
        return name, None
    if not metric or not column:
        raise ValueError(f"must be {form}, got {text!r}")
    return metric, column


def tracking(summary: dict, where: str = "summary.json") -> tuple[str, str]:
    """(metric, direction) a run is ranked on, e.g. ("dev.mae", "min"), from its task block."""
    task = summary.get("task")
    if task is None:
        return BEFORE_TASKS
    metric = task.get("tracking_metric") if isinstance(task, dict) else None
    direction = task.get("direction") if isinstance(task, dict) else None
    if not isinstance(metric, str) or not metric or direction not in DIRECTIONS:
        raise DataError(f"{where}: the task block needs a tracking_metric and a direction (max or min), got {task!r}")
    return f"dev.{metric}", direction


def better(value: float, than: float | None, direction: str) -> bool:
    """Whether `value` is strictly better than `than` in `direction`; anything beats None."""
    return than is None or (value > than if direction == "max" else value < than)


def best(scored: Iterable[tuple[Item, float]], direction: str) -> tuple[Item, float] | None:
    """The best (item, value) pair; on ties the first one, so callers order by preference."""
    chosen = None
    for item, value in scored:
        if chosen is None or better(value, chosen[1], direction):
            chosen = (item, value)
    return chosen


def ranking(trackings: Iterable[tuple[str, str]], metric: str | None = None, direction: str | None = None):
    """(metric, direction) to compare runs of these trackings on.

    Without `metric`, the runs' own tracking metric: runs that track different ones do not
    compare and are a ConfigError naming them. A `metric` the runs track keeps its task's
    direction; any other is higher-is-better unless `direction` says "min". A `direction` that
    contradicts the task's own for its tracking metric is an error.
    """
    if direction not in (None, *DIRECTIONS):
        raise ConfigError(f"direction must be max or min, got {direction!r}")
    tracked = dict.fromkeys(trackings)
    if metric is None:
        if len({m for m, _ in tracked}) > 1:
            names = "; ".join(describe(*t) for t in sorted(tracked))
            raise ConfigError(f"these runs track different metrics ({names}): name the one to compare with --metric")
        metric = next(iter(tracked), BEFORE_TASKS)[0]
    own = {d for m, d in tracked if m == metric}
    if not own:
        return metric, direction or "max"
    if len(own) > 1:
        raise ConfigError(f"{metric}: the runs' tasks rank it both ways (max and min); they do not compare")
    [task_direction] = own
    if direction and direction != task_direction:
        raise ConfigError(
            f"{metric} is ranked {task_direction} by the runs' task; direction {direction} contradicts it"
        )
    return metric, task_direction


def describe(metric: str, direction: str) -> str:
    """ "dev.mae (lower is better)": how reports and messages name a ranking."""
    return f"{metric} ({'higher' if direction == 'max' else 'lower'} is better)"
