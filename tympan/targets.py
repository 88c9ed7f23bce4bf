"""Classes named by `target:`, resolved two ways.

- A user's own config names any class: an import path `package.module:Class`, or a file
  `path/to/file.py:Class`. A file target is recognised by a path separator in it, never by its
  `.py` ending alone (`./mine.py:Net` for a file in the working directory), so a dotted name can
  never be mistaken for a file.
- Data (a bundle, a registered model, anything from `s3://` or `models:/`) names only tympan's
  own classes (`resolve_own`): an import path inside one of tympan's packages, checked on the
  module's spec before it is imported and on the module and class after, so no file outside the
  installed tympan package is ever imported on data's word.

This module imports nothing of tympan's: config, models, transforms, augmentations and
datasets all build on it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["RefusedTarget", "first_line", "is_file_target", "resolve_own", "resolve_target"]

DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", re.ASCII)
SEPARATORS = tuple({"/", os.sep, os.altsep or "/"})
SHAPE = "'package.module:Class' or a file 'path/to/file.py:Class' ('./file.py:Class' for one in this folder)"


class RefusedTarget(ValueError):
    """Data named a target that is not one of tympan's own classes of the kind asked for."""


def is_file_target(module: str) -> bool:
    """Whether a target's module part names a file: it holds a path separator."""
    return any(sep in module for sep in SEPARATORS)


def _split(target: str) -> tuple[str, str]:
    module, sep, name = target.rpartition(":") if isinstance(target, str) else ("", "", "")
    if not sep or not module or not name.isidentifier():
        raise ValueError(f"target {target!r} must look like {SHAPE}")
    return module, name


def resolve_target(target: str) -> Any:
    """The object a user's config names: `package.module:Name` or `path/to/file.py:Name`."""
    module_name, attr = _split(target)
    if is_file_target(module_name):
        module = _import_file(target, Path(module_name))
    elif DOTTED.fullmatch(module_name):
        if module_name.endswith(".py"):
            raise ValueError(f"target {target!r}: a file target needs a path separator, e.g. './{module_name}:{attr}'")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ValueError(f"target {target!r}: cannot import {module_name} ({first_line(exc)})") from None
    else:
        raise ValueError(f"target {target!r} must look like {SHAPE}")
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"target {target!r}: {module_name} has no {attr!r}") from None


def _import_file(target: str, path: Path):
    if path.suffix != ".py":
        raise ValueError(f"target {target!r}: a file target names a .py file")
    if not path.is_file():
        raise ValueError(f"target {target!r}: no file {path}")
    spec = importlib.util.spec_from_file_location(f"tympan_user.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: any error while running it is theirs to fix
        raise ValueError(f"target {target!r}: importing {path} failed ({first_line(exc)})") from None
    return module


def resolve_own(target: str, package: str, kind: type) -> type:
    """The `kind` subclass that data names in tympan's `package` (e.g. "tympan.models"), or a
    RefusedTarget. Each level of the module path is looked up first and must lie inside the
    installed tympan package before it is imported; the module and the class are checked again
    once imported, so neither a file in the working directory nor one on sys.path ever runs."""
    try:
        module_name, attr = _split(target)
    except ValueError as exc:
        raise RefusedTarget(str(exc)) from None
    own = f"{kind.__name__} class of {package}"
    if not DOTTED.fullmatch(module_name) or not _within(module_name, package):
        raise RefusedTarget(f"target {target!r} is not an import path in {package}; data may name only a {own}")
    root = _tympan_root()
    parts = module_name.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        try:
            spec = importlib.util.find_spec(name)  # imports the parents (checked already), not `name`
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise RefusedTarget(f"target {target!r}: no module {name} in the installed tympan")
        if not all(_inside(place, root) for place in _places(spec)):
            raise RefusedTarget(f"target {target!r}: {name} is not a module of the installed tympan ({root})")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # one of tympan's own modules failed to import
        raise RefusedTarget(f"target {target!r}: cannot import {module_name} ({first_line(exc)})") from None
    if module.__name__ != module_name or not all(_inside(p, root) for p in _places(module.__spec__)):
        raise RefusedTarget(f"target {target!r}: {module_name} is not a module of the installed tympan")
    found = getattr(module, attr, None)
    if not (isinstance(found, type) and issubclass(found, kind) and _within(found.__module__, package)):
        raise RefusedTarget(f"target {target!r} is not a {own}")
    home = sys.modules.get(found.__module__)
    if home is None or not all(_inside(p, root) for p in _places(home.__spec__)):
        raise RefusedTarget(f"target {target!r}: {found.__module__} is not a module of the installed tympan")
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def _tympan_root() -> Path:
    import tympan

    return Path(tympan.__file__).resolve().parent


def _places(spec) -> list[str]:
    """The files or folders a module spec loads from (a namespace package has no origin)."""
    if spec is None:
        return ["<no spec>"]
    places = list(spec.submodule_search_locations or [])
    if spec.origin and spec.has_location:
        places.append(spec.origin)
    return places or ["<no location>"]


def _inside(place: str, root: Path) -> bool:
    try:
        return Path(place).resolve().is_relative_to(root)
    except (OSError, ValueError):
        return False


# *args and **kwargs: not arguments by name (a Transform without __init__ has nn.Module's)
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message`, for an error that must fit on one line."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
