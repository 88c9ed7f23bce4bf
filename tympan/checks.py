"""Value checks that a constructor's annotations cannot say (tympan.components checks those): a
bound that depends on another argument (`at_most`, from a `check_together`), or a value read from
elsewhere, such as a saved extractor's settings. Each fails naming the argument, in one line.
Booleans are refused where numbers are expected (YAML's `true` is not 1)."""

from __future__ import annotations

from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> None:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def at_most(name: str, value: Any, limit: float, why: str) -> None:
    """An upper bound (after the value's type is checked): past it a transform or layer would
    allocate without bound, or compute nothing useful; `why` says which."""
    if value > limit:
        raise ValueError(f"{name}={value!r} is more than {limit:g}: {why}")
