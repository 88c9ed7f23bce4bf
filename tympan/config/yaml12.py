"""YAML read as data only, with YAML 1.2 floats: `lr: 1e-3` is a number, not the text "1e-3"
(YAML 1.1, which PyYAML follows, wants a dot in the mantissa). Presets, config files and
overrides all read YAML this way."""

from __future__ import annotations

import re
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML as data only (no Python tags), with YAML 1.2 floats."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: builds plain data only
