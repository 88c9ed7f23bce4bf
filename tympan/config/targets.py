"""Classes named by import path: `package.module:Class` or `path/to/file.py:Class`.

A user brings a dataset, model or transform of their own this way, without forking tympan.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any


def resolve_target(target: str) -> Any:
    """Import `package.module:Name` or `path/to/file.py:Name`."""
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"target {target!r} must look like 'package.module:Class' or 'file.py:Class'")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ValueError(f"target {target!r}: no file {path}")
        spec = importlib.util.spec_from_file_location(f"tympan_user.{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's file: any error while running it is theirs to fix
            raise ValueError(f"target {target!r}: importing {path} failed ({first_line(exc)})") from None
    else:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ValueError(f"target {target!r}: cannot import {module_name} ({first_line(exc)})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"target {target!r}: {module_name} has no {attr!r}") from None


# *args and **kwargs: not arguments by name (a Transform without __init__ has nn.Module's)
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def bound_args(cls: Any, args: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments `cls` is built with from `args`, its defaults included (no *args or **kwargs)."""
    signature = inspect.signature(cls)
    bound = signature.bind_partial(**args)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if signature.parameters[k].kind not in VARIADIC}


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message`, for an error that must fit on one line."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
