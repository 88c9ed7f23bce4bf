"""Named presets: a block given as a string names `tympan/presets/<kind>/<name>.yaml`; a mapping
with `preset:` loads that preset and overrides it key by key."""

from __future__ import annotations

import copy
from pathlib import Path

from tympan.config.yaml12 import load_yaml
from tympan.errors import ConfigError

PRESETS = Path(__file__).parent.parent / "presets"

# Which preset folder a top-level block's string names come from.
PRESET_KINDS = {
    "dataset": "datasets",
    "features": "features",
    "model": "models",
    "optimizer": "optimizers",
    "scheduler": "schedulers",
}


def available_presets(kind: str) -> list[str]:
    return sorted(p.stem for p in (PRESETS / kind).glob("*.yaml"))


def load_preset(kind: str, name: str) -> dict:
    path = PRESETS / kind / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(available_presets(kind)) or "none"
        raise ConfigError(f"unknown {kind[:-1]} preset {name!r}; known: {known}")
    return load_yaml(path.read_text()) or {}


def merge(base: dict, override: dict) -> dict:
    """Deep-merge `override` into a copy of `base` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def expand_presets(raw: dict) -> dict:
    """Replace preset names by the preset's content, applying inline overrides."""
    out = dict(raw)
    for block, kind in PRESET_KINDS.items():
        value = out.get(block)
        if isinstance(value, str):
            out[block] = load_preset(kind, value)
        elif isinstance(value, dict) and "preset" in value:
            override = {k: v for k, v in value.items() if k != "preset"}
            out[block] = merge(load_preset(kind, value["preset"]), override)
    return out
