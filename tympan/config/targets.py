"""Classes named by import path: see `tympan.targets`, where they are resolved."""

from tympan.targets import bound_args, first_line, resolve_target

__all__ = ["bound_args", "first_line", "resolve_target"]
