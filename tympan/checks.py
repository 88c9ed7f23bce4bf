"""Argument checks shared by constructors and their `validate_args`, which config load calls:
a bad value fails when the config is read, naming the argument, not when a layer first runs.
Booleans are refused where numbers are expected (YAML's `true` is not 1)."""

from __future__ import annotations

from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> None:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def at_most(name: str, value: Any, limit: float, why: str) -> None:
    """An upper bound (after the value's type is checked): past it a transform or layer would
    allocate without bound, or compute nothing useful; `why` says which."""
    if value > limit:
        raise ValueError(f"{name}={value!r} is more than {limit:g}: {why}")


def positive_ints(name: str, value: Any) -> None:
    if not isinstance(value, list | tuple) or not value or not all(_is_int(v) and v > 0 for v in value):
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {value!r}")


def probability(name: str, value: Any) -> None:
    """A dropout rate: 0 keeps everything, 1 would drop everything."""
    if not _is_number(value) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def frequency_range(fmin: Any, fmax: Any, sample_rate: int) -> None:
    """0 <= fmin < fmax <= Nyquist (`sample_rate` already checked)."""
    if not _is_number(fmin) or not _is_number(fmax) or not 0 <= fmin < fmax:
        raise ValueError(f"fmin and fmax must be numbers with 0 <= fmin < fmax, got fmin={fmin!r}, fmax={fmax!r}")
    if fmax > sample_rate / 2:
        raise ValueError(f"fmax={fmax} is above the Nyquist frequency of {sample_rate} Hz")
