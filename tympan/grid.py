"""Grid search: the `grid:` block of a config expands into one config per combination.

    grid:
      optimizer.args.lr: [0.001, 0.0003]
      seed: [1, 2, 3]
      exclude:                       # partial assignments to leave out
        - {optimizer.args.lr: 0.0003, seed: 3}

Keys are dotted config paths (preset names along the way are expanded first), or nested
mappings with lists at the leaves, which is the form DVC's `matrix` can interpolate:

    grid:
      optimizer: {args: {lr: [0.001, 0.0003]}}     # same as optimizer.args.lr
      seed: [1, 2, 3]

This module only enumerates the assignments and knows nothing of configs (the config schema
imports it to check a `grid:` block); `tympan.config.expand_grid` turns them into validated
configs. That expansion drives `tympan train --grid`, and is importable for other front-ends
(dvc.yaml `matrix` stages, the Kubeflow ParallelFor).
"""

from __future__ import annotations

import itertools
from typing import Any

from tympan.errors import ConfigError


def flatten(grid: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings down to their lists: {"optimizer": {"args": {"lr": [..]}}} -> {"optimizer.args.lr": [..]}."""
    out: dict[str, Any] = {}
    for key, value in grid.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def combinations(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """Every assignment {dotted key: value} of the grid, in order, minus the excluded ones."""
    grid = dict(grid)
    exclude = grid.pop("exclude", []) or []
    grid = flatten(grid)
    if not isinstance(exclude, list):
        raise ConfigError(f"grid.exclude: expected a list of partial assignments, got {exclude!r}")
    exclude = [flatten(rule) if isinstance(rule, dict) else rule for rule in exclude]
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}: expected a non-empty list of values, got {values!r}")
    for i, rule in enumerate(exclude):
        unknown = set(rule) - set(grid) if isinstance(rule, dict) else None
        if unknown is None or unknown:
            raise ConfigError(f"grid.exclude.{i}: expected a mapping of grid keys to values, got {rule!r}")
    keys = list(grid)
    assignments = [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]
    kept = [a for a in assignments if not any(all(a[k] == v for k, v in rule.items()) for rule in exclude)]
    if not kept:
        raise ConfigError(f"grid.exclude removes all {len(assignments)} combinations; nothing would run")
    return kept
