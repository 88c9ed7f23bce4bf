"""Experiment configuration: YAML in, validated pydantic models out.

Every block forbids unknown keys, so a typo fails with its key path and the keys that are
allowed. A block given as a string names a preset in `tympan/presets/<kind>/<name>.yaml`;
a mapping with `preset:` loads that preset and overrides it key by key. Wherever a class is
chosen, `target:` is `package.module:Class` or `path/to/file.py:Class`, and `args:` its
keyword arguments, checked against the class's signature and, where the class has one, its
`validate_args(**all arguments)` static method (cheap checks the constructor also runs).
Types are strict: `epochs: true` is an error, not one epoch (floats still take integers).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import inspect
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tympan.errors import ConfigError

PRESETS = Path(__file__).parent / "presets"
STORE_FORMAT = 2  # bump when the feature store layout changes, so old stores are rebuilt

# Which preset folder a top-level block's string names come from.
PRESET_KINDS = {
    "dataset": "datasets",
    "features": "features",
    "model": "models",
    "optimizer": "optimizers",
    "scheduler": "schedulers",
}


class Block(BaseModel):
    # strict: YAML's `true` is not the integer 1, and "3" is not a number
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Component(Block):
    """A class chosen by import path plus its keyword arguments."""

    target: str
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("target")
    @classmethod
    def _importable(cls, target: str) -> str:
        resolve_target(target)
        return target

    def check_args(self, *fixed: str) -> None:
        """Fail early on an argument the class does not take (`fixed` are filled in later), or on a
        value its `validate_args` refuses, so that a bad value fails at load, not mid-run."""
        cls = resolve_target(self.target)
        params = inspect.signature(cls).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            allowed = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            for name in self.args:
                if name in fixed:
                    raise ValueError(f"{name!r} is filled in by tympan (from the data or the run); remove it")
                if name not in allowed:
                    choices = ", ".join(a for a in allowed if a not in fixed)
                    raise ValueError(f"{self.target} takes no argument {name!r}; it takes: {choices}")
        if hasattr(cls, "validate_args"):
            cls.validate_args(**_all_args(cls, self.args))

    def build(self, **fixed: Any) -> Any:
        return resolve_target(self.target)(**self.args, **fixed)

    def build_checked(self, where: str, **fixed: Any) -> Any:
        """Build; a constructor that refuses its arguments is a ConfigError naming `where`.args."""
        try:
            return self.build(**fixed)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}.args: {self.target} refused them: {_first_line(exc)}") from None

    def all_args(self) -> dict[str, Any]:
        """The arguments the class is built with, its defaults included."""
        return _all_args(resolve_target(self.target), self.args)

    def build_sharing(self, shared: dict[str, Any]) -> Any:
        """Build, taking any argument this class shares by name with `shared` from there unless set.

        This keeps e.g. an augmentation's Mel scale equal to the features' without repeating it.
        """
        params = inspect.signature(resolve_target(self.target)).parameters
        return self.build(**{k: v for k, v in shared.items() if k in params and k not in self.args})


class DatasetConfig(Component):
    root: str = "data/raw"
    on_unreadable: Literal["raise", "skip"] = Field(
        "raise", description="an unreadable audio file stops preprocessing, or is skipped and reported"
    )


class FeaturesConfig(Component):
    root: str = "data/features"
    normalize: Literal["none", "utterance"] = "none"


class ModelConfig(Component):
    pass


class OptimizerConfig(Component):
    pass


class SchedulerConfig(Component):
    interval: Literal["step", "epoch"] = "epoch"

    def build_for(self, optimizer: Any, total_steps: int, steps_per_epoch: int) -> Any:
        """Build for a run of `total_steps` optimizer steps, filling in the run-length arguments
        the class takes and the config leaves out (one-cycle peaks at the optimizer's lr)."""
        params = inspect.signature(resolve_target(self.target)).parameters
        known = {
            "total_steps": total_steps,
            "epochs": -(-total_steps // steps_per_epoch),
            "steps_per_epoch": steps_per_epoch,
            "max_lr": optimizer.param_groups[0]["lr"],
        }
        filled = {k: v for k, v in known.items() if k in params and k not in self.args}
        if "total_steps" in filled:  # OneCycle-like: total_steps alone defines the schedule
            filled.pop("epochs", None)
            filled.pop("steps_per_epoch", None)
        return self.build(optimizer=optimizer, **filled)


class TrainingConfig(Block):
    """How long and how to train. Training counts in epochs, or in optimizer steps when `steps`
    is set; `eval_every` and `save_every` count in that same unit."""

    epochs: int = Field(10, ge=1)
    steps: int | None = Field(None, ge=1, description="train this many optimizer steps (epochs is then ignored)")
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    max_duration: float | None = Field(None, gt=0, description="crop training clips to at most this many seconds")
    bucketing: bool = Field(True, description="batch clips of similar length together")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    eval_every: int = Field(1, ge=1, description="evaluate on dev every N epochs or steps (and at the end)")
    save_every: int = Field(1, ge=1, description="save the resumable last/ state every N epochs or steps")
    patience: int | None = Field(None, ge=1, description="stop after N evaluations without improvement")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")
    amp: bool = Field(False, description="mixed precision (float16 autocast) on CUDA; ignored on CPU")
    device: str = "auto"
    num_workers: int = Field(0, ge=0)
    threads: int | None = Field(None, ge=1, description="torch threads; default $OMP_NUM_THREADS, else the CPUs given")
    deterministic: bool = True
    progress: bool = True


class TrackingConfig(Block):
    """Where runs are tracked besides their run directory (which is always written)."""

    mlflow: bool = False
    mlflow_uri: str | None = Field(None, description="default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns.db")
    mlflow_experiment: str | None = Field(None, description="default: the config's experiment name")
    system_metrics: bool = False
    tensorboard: bool = Field(False, description="TensorBoard event files in <run dir>/tensorboard")


class Config(Block):
    experiment: str = "default"
    seed: int = 1
    dataset: DatasetConfig
    features: FeaturesConfig
    model: ModelConfig
    optimizer: OptimizerConfig
    scheduler: SchedulerConfig | None = None
    augmentation: list[Component] = Field(default_factory=list)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    grid: dict[str, Any] | None = Field(None, description="values per key; see tympan.grid")

    @field_validator("grid")
    @classmethod
    def _valid_grid(cls, grid: dict | None) -> dict | None:
        from tympan.grid import combinations

        if grid:
            try:
                combinations(grid)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return grid

    def run_id(self) -> str:
        """Runs with the same resolved config share an id; names and progress bars don't count."""
        data = self.model_dump(mode="json", exclude={"experiment", "grid", "tracking"})
        for key in ("progress", "num_workers", "threads"):
            data["training"].pop(key)
        return digest(data)[:12]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _all_args(cls: Any, args: dict[str, Any]) -> dict[str, Any]:
    signature = inspect.signature(cls)
    bound = signature.bind_partial(**args)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if signature.parameters[k].kind != inspect.Parameter.VAR_KEYWORD}


def _first_line(exc: BaseException) -> str:
    """`Type: first line of the message`, for an error that must fit on one line."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


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
            raise ValueError(f"target {target!r}: importing {path} failed ({_first_line(exc)})") from None
    else:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ValueError(f"target {target!r}: cannot import {module_name} ({_first_line(exc)})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"target {target!r}: {module_name} has no {attr!r}") from None


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


def _describe(error: dict, model: type[BaseModel]) -> str:
    path = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, error["loc"][:-1])
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"{path}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{path}: required key is missing"
    if error["type"] == "value_error":  # raised by a validator of ours, which names the value itself
        return f"{path}: {error['msg'].removeprefix('Value error, ')}"
    hint = ""
    if error["type"] == "float_type" and isinstance(error.get("input"), str):
        hint = "; write numbers unquoted"
    return f"{path}: {error['msg']} (got {error.get('input')!r}){hint}"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def parse(raw: dict, source: str = "config") -> Config:
    """Validate a raw mapping (presets already named or inline) into a Config."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level, got {type(raw).__name__}")
    try:
        config = Config.model_validate(expand_presets(raw))
    except ValidationError as exc:
        lines = [_describe(e, Config) for e in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None
    checks = [
        ("features", config.features, ()),
        ("model", config.model, ("n_mels", "n_outputs")),
        ("optimizer", config.optimizer, ("params",)),
        *[(f"augmentation.{i}", a, ()) for i, a in enumerate(config.augmentation)],
    ]
    if config.scheduler:
        checks.append(("scheduler", config.scheduler, ("optimizer",)))
    for where, component, fixed in checks:
        try:
            component.check_args(*fixed)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: {where}.args: {exc}") from None
    _check_optimizer(config, source)
    return config


def _check_optimizer(config: Config, source: str) -> None:
    """Build the optimizer and scheduler for one dummy parameter: cheap, and their constructors
    are what knows that `lr: -1` is wrong. The run-length numbers are placeholders."""
    import torch

    where, component = "optimizer", config.optimizer
    try:
        optimizer = component.build(params=[torch.nn.Parameter(torch.zeros(1))])
        if config.scheduler is not None:
            where, component = "scheduler", config.scheduler
            component.build_for(
                optimizer, total_steps=config.training.steps or config.training.epochs, steps_per_epoch=1
            )
    except Exception as exc:  # whatever the constructor raises, it refused these arguments
        raise ConfigError(f"{source}: {where}.args: {component.target} refused them: {_first_line(exc)}") from None


def load(path: str | Path, overrides: dict | None = None) -> Config:
    """Load a YAML config file, or a named experiment preset (`autrainer-cnn10-fsdd`);
    `overrides` maps dotted keys to values (`training.epochs: 3`)."""
    raw, source = load_raw(path, overrides)
    return parse(raw, source)


def load_raw(path: str | Path, overrides: dict | None = None) -> tuple[dict, str]:
    """The raw mapping of a config file with overrides applied, and its source name."""
    path = Path(path)
    if not path.is_file() and (PRESETS / "experiments" / f"{path}.yaml").is_file():
        path = PRESETS / "experiments" / f"{path}.yaml"
    if not path.is_file():
        known = ", ".join(available_presets("experiments"))
        raise ConfigError(f"{path}: no such config file (experiment presets: {known})")
    raw = from_yaml(path.read_text(), str(path))
    for dotted, value in (overrides or {}).items():
        raw = set_dotted(raw, dotted, value)
    return raw, str(path)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: `lr: 1e-3` is a number, not the text "1e-3"
    (YAML 1.1, which PyYAML follows, wants a dot in the mantissa)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML as data only (no Python tags), with YAML 1.2 floats."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: builds plain data only


def from_yaml(text: str, source: str) -> dict:
    """The top-level mapping of a YAML config text (empty text is an empty config)."""
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level, got {type(raw).__name__}")
    return raw


def set_dotted(raw: dict, dotted: str, value: Any) -> dict:
    """Return a copy of `raw` with `a.b.c` set to value, expanding a preset name on the way."""
    out = copy.deepcopy(expand_presets(raw) if "." in dotted else raw)
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {} if child is None else child
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set {dotted}: {part} is not a mapping")
            node[part] = child
        node = child
    node[parts[-1]] = value
    return out
