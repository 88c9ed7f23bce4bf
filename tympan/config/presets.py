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
    "task": "tasks",
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


def expand(kind: str, value):
    """A block (or list item) given as a preset name, or as a mapping with `preset:` plus
    overrides, as the preset's content; anything else as it is."""
    if isinstance(value, str):
        return load_preset(kind, value)
    if isinstance(value, dict) and "preset" in value:
        override = {k: v for k, v in value.items() if k != "preset"}
        return merge(load_preset(kind, value["preset"]), override)
    return value


def expand_presets(raw: dict) -> dict:
    """Replace preset names by the preset's content, applying inline overrides; the transforms
    of `features.offline` and `features.online` may be preset names too, and so may the dataset
    an augmentation takes its files from (`augmentation[i].args.source`, e.g. ColouredNoise)."""
    out = dict(raw)
    for block, kind in PRESET_KINDS.items():
        if block in out:
            out[block] = expand(kind, out[block])
    features = out.get("features")
    if isinstance(features, dict):
        features = dict(features)
        for place in ("offline", "online"):
            if isinstance(features.get(place), list):
                features[place] = [expand("transforms", item) for item in features[place]]
        out["features"] = features
    if isinstance(out.get("augmentation"), list):
        out["augmentation"] = [_source_expanded(item) for item in out["augmentation"]]
    return out


def _source_expanded(item):
    """An augmentation block with its `source` dataset expanded, in its children too (a Choice's)."""
    if not isinstance(item, dict) or not isinstance(item.get("args"), dict):
        return item
    args = {
        k: [_source_expanded(v) for v in value] if isinstance(value, list) else value
        for k, value in item["args"].items()
    }
    if "source" in args:
        args["source"] = expand("datasets", args["source"])
    return {**item, "args": args}
