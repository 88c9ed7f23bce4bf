"""Small helpers the three tasks share: naming a row in an error, checking a loaded state."""

from __future__ import annotations

import math
from typing import Any


def row_name(row: dict[str, str], number: int) -> str:
    """How an error names a row: its audio path where the index has one, else its position."""
    path = row.get("path")
    return f"row {number + 1} ({path})" if path else f"row {number + 1}"


def is_number(value: Any) -> bool:
    """A finite int or float (YAML's `true` is not a number)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def state_value(state: Any, key: str) -> Any:
    """`state[key]`, a ValueError naming the key when the state is no mapping or lacks it."""
    if not isinstance(state, dict):
        raise ValueError(f"task state must be a mapping, got {type(state).__name__}")
    if key not in state:
        raise ValueError(f"task state has no {key!r} (has: {', '.join(map(str, state)) or 'nothing'})")
    return state[key]


def state_strings(state: Any, key: str) -> list[str]:
    """A non-empty list of distinct non-empty strings under `key`."""
    value = state_value(state, key)
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v for v in value)
        or len(set(value)) != len(value)
    ):
        raise ValueError(f"task state {key!r} must be a non-empty list of distinct names, got {value!r}")
    return value


def state_numbers(state: Any, key: str, length: int, low: float = -math.inf, high: float = math.inf) -> list[float]:
    """A list of `length` finite numbers under `key`, each strictly between `low` and `high`."""
    value = state_value(state, key)
    if not isinstance(value, list) or len(value) != length or not all(is_number(v) and low < v < high for v in value):
        bounds = "" if (low, high) == (-math.inf, math.inf) else f" in ({low}, {high})"
        raise ValueError(f"task state {key!r} must be a list of {length} finite numbers{bounds}, got {value!r}")
    return [float(v) for v in value]
