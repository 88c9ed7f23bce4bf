"""Experiment configuration: YAML in, validated pydantic models out.

Every block forbids unknown keys, so a typo fails with its key path and the keys that are
allowed. A block given as a string names a preset in `tympan/presets/<kind>/<name>.yaml`;
a mapping with `preset:` loads that preset and overrides it key by key. Wherever a class is
chosen, `target:` is `package.module:Class` or a file `path/to/file.py:Class` (a path separator
marks a file: `./mine.py:Class`), and `args:` its keyword arguments, checked by
`tympan.components` against the constructor's annotated signature and the class's
`check_together` (the checks the constructor also runs).
Types are strict: `epochs: true` is an error, not one epoch (floats still take integers).

The parts: `schema` (the blocks), `presets`, `load` (YAML
files, overrides, grids); everything is importable from here.
"""

from tympan.config.load import expand_grid, from_yaml, load, load_raw, parse, set_dotted
from tympan.config.presets import PRESET_KINDS, PRESETS, available_presets, expand_presets, load_preset, merge
from tympan.config.schema import (
    STORE_FORMAT,
    Block,
    Component,
    Config,
    DataConfig,
    DatasetConfig,
    FeaturesConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    TaskConfig,
    TrackingConfig,
    TrainingConfig,
    digest,
    flatten,
    run_id_of,
)
from tympan.config.yaml12 import load_yaml
from tympan.errors import ConfigError
from tympan.targets import resolve_target

__all__ = [
    "PRESETS",
    "PRESET_KINDS",
    "STORE_FORMAT",
    "Block",
    "Component",
    "Config",
    "ConfigError",
    "DataConfig",
    "DatasetConfig",
    "FeaturesConfig",
    "ModelConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "TaskConfig",
    "TrackingConfig",
    "TrainingConfig",
    "available_presets",
    "digest",
    "expand_grid",
    "expand_presets",
    "flatten",
    "from_yaml",
    "load",
    "load_preset",
    "load_raw",
    "load_yaml",
    "merge",
    "parse",
    "resolve_target",
    "run_id_of",
    "set_dotted",
]
