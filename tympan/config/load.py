"""Loading a config: YAML text or file in, overrides applied, a validated `Config` out; a grid
expands into one validated config per combination.

A bad config is one ConfigError naming the source, the key path and what was wrong (for an
unknown key, the keys that are allowed).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tympan.config.presets import PRESETS, available_presets, expand, expand_presets
from tympan.config.schema import Config
from tympan.config.yaml12 import load_yaml
from tympan.errors import ConfigError
from tympan.grid import combinations
from tympan.results import parse_tracking
from tympan.targets import first_line, resolve_target


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


def parse(raw: dict, source: str = "config", *, training: bool = True) -> Config:
    """Validate a raw mapping (presets already named or inline) into a Config.

    `training=False` is for the stages before training (fetch, preprocess): the optimizer and
    scheduler constructors are not run (their argument names are still checked). Running one
    imports torch._dynamo, a second and a half that `tympan preprocess` would otherwise wait for."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level, got {type(raw).__name__}")
    try:
        config = Config.model_validate(_with_default_task(expand_presets({**DEFAULTS, **raw})))
    except ValidationError as exc:
        lines = [_describe(e, Config) for e in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None
    checks = [
        ("dataset", config.dataset, ()),
        *[(f"features.{p}.{i}", c, ("sample_rate", "frame_rate")) for p in ("offline", "online")
          for i, c in enumerate(getattr(config.features, p))],
        ("task", config.task, ("targets",)),
        ("model", config.model, SIZES),
        ("optimizer", config.optimizer, ("params",)),
        *[(f"augmentation.{i}", a, ()) for i, a in enumerate(config.augmentation)],
    ]  # fmt: skip
    if config.scheduler and config.scheduler.target:  # none: a warm-up alone
        checks.append(("scheduler", config.scheduler, ("optimizer",)))
    for where, component, fixed in checks:
        try:
            # a transform's values are checked when _check_chain builds the pipeline, with the rates of its
            # real input: here its sample_rate would be the constructor's default, a guess (32 kHz PANN fails)
            component.check_args(*fixed, values=not where.startswith("features."))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: {where}.args: {exc}") from None
    _check_chain(config, source)
    _check_tracking(config, source)
    if training:
        _check_optimizer(config, source)
    return config


# what training fills into a model's constructor (models.base.sizes), never the config
SIZES = ("n_outputs", "n_mels", "n_bins", "input_dim", "sample_rate", "in_channels")
# what a config that leaves them out trains with (the default experiment's features: 16 kHz PANN
# log-Mels normalised per clip; a small CNN; AdamW), so that a dataset block alone is a config
DEFAULTS = {
    "features": {
        "preset": "PannLogMel16k",
        "online": [{"target": "tympan.transforms.normalize:Normalize", "args": {"mode": "instance"}}],
    },
    "model": "SmallCNN",
    "optimizer": "AdamW",
}


def _with_default_task(raw: dict) -> dict:
    """A config without a `task:` block gets its dataset's default task (a task preset name)."""
    if "task" in raw or not isinstance(raw.get("dataset"), dict):
        return raw
    try:
        dataset = resolve_target(str(raw["dataset"].get("target")))
    except ValueError:
        return raw  # validation names the bad target
    args = raw["dataset"].get("args") if isinstance(raw["dataset"].get("args"), dict) else {}
    default = args.get("default_task", getattr(dataset, "default_task", "classification"))
    if not isinstance(default, str):
        return raw  # the dataset's own argument check names it
    return {**raw, "task": expand("tasks", default)}


def _check_chain(config: Config, source: str) -> None:
    """The feature chain fits together, the model takes what it gives, and each augmentation
    has its kind of data where it acts."""
    from tympan.models.base import check_accepts

    try:
        pipeline = config.features.pipeline()
    except ValueError as exc:  # ShapeError included: it names the transform and both sides
        raise ConfigError(f"{source}: {first_line(exc).partition(': ')[2]}") from None
    try:
        check_accepts(resolve_target(config.model.target), pipeline.output, config.model.args)
    except ValueError as exc:
        raise ConfigError(f"{source}: model: {first_line(exc).partition(': ')[2]}") from None
    from tympan.augmentations import build

    for i, component in enumerate(config.augmentation):
        where = f"{source}: augmentation.{i} ({component.target})"
        try:
            augmentation = build(component, config.features.shared_args(pipeline))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {first_line(exc).partition(': ')[2]}") from None
        place = getattr(augmentation, "place", "features")
        problem = _misplaced(place, pipeline)
        if problem:
            raise ConfigError(f"{where} acts on the {place}, but {problem}")
        if hasattr(augmentation, "check"):
            try:
                augmentation.check(pipeline.spec_for(place))
            except ValueError as exc:
                raise ConfigError(f"{where}: {first_line(exc).partition(': ')[2]}") from None
    if config.training.max_duration is not None and not pipeline.stored.variable_length:
        raise ConfigError(
            f"{source}: training.max_duration crops stored clips, but the stored features are a "
            f"{pipeline.stored.describe()} (no time axis); remove it or crop in features.online"
        )


def _check_tracking(config: Config, source: str) -> None:
    """`task.tracking` names a metric the task's class gives (its form and stratify column the
    schema checked). A per-item one (f1_<label>) is checked by name once the task is fitted."""
    if config.task.tracking is None:
        return
    metric, column = parse_tracking(config.task.tracking)
    cls = resolve_target(config.task.target)
    forms = cls.metric_forms() if hasattr(cls, "metric_forms") else None
    if forms is None:  # a class that lists no metrics: training checks what it gives
        return
    forms = [f for f in forms if column is None or f != "loss"]  # groups get the task's metrics, not the loss
    per_item = [f.removesuffix("<item>") for f in forms if f.endswith("_<item>")]
    if metric in forms or any(metric.startswith(p) and metric != p for p in per_item):
        return
    raise ConfigError(
        f"{source}: task.tracking: {config.task.tracking!r}: {cls.__name__} {unknown_metric(metric, column, forms)}"
    )


def unknown_metric(metric: str, column: str | None, choices: list[str]) -> str:
    """The end of the error for a tracking metric the task does not give: what it does give."""
    pattern = "dev.<metric>" if column is None else f"dev.<metric>.worst_{column}"
    kind = "metric" if column is None else "per-group metric"
    return f"gives no {kind} {metric!r}; choose {pattern} with <metric> one of: {', '.join(choices)}"


def _misplaced(place: str, pipeline) -> str | None:
    """Why an augmentation acting on `place` has nothing to act on in `pipeline`, or None."""
    online_kinds = [spec.kind for spec in pipeline.specs]
    if place == "waveform" and pipeline.stored.kind != "waveform":
        return (
            f"features.offline stores {pipeline.stored.describe()}; store the waveform (move the "
            "extractor to features.online) to augment it"
        )
    if place == "features" and all(kind == "waveform" for kind in online_kinds):
        return "the features pipeline gives a waveform; use a waveform augmentation"
    return None


def _check_optimizer(config: Config, source: str) -> None:
    """Build the optimizer and scheduler for one dummy parameter: cheap, and their constructors
    are what knows that `lr: -1` is wrong. The run-length numbers are placeholders. First what
    tympan.optim knows: parts the model lacks, SAM's base, a warm-up as long as the run."""
    import torch

    from tympan import optim

    try:
        optim.check(config)
    except ValueError as exc:
        raise ConfigError(f"{source}: {first_line(exc).removeprefix('ValueError: ')}") from None
    where, component = "optimizer", config.optimizer
    try:
        optimizer = component.build(params=[torch.nn.Parameter(torch.zeros(1))])
        if config.scheduler is not None and config.scheduler.target is not None:
            where, component = "scheduler", config.scheduler
            component.build_for(
                optimizer, total_steps=config.training.steps or config.training.epochs, steps_per_epoch=1
            )
    except Exception as exc:  # whatever the constructor raises, it refused these arguments
        raise ConfigError(f"{source}: {where}.args: {component.target} refused them: {first_line(exc)}") from None


def load(path: str | Path, overrides: dict | None = None, *, training: bool = True) -> Config:
    """Load a YAML config file, or a named experiment preset (`autrainer-cnn10-fsdd`);
    `overrides` maps dotted keys to values (`training.epochs: 3`). `training`: as for `parse`."""
    raw, source = load_raw(path, overrides)
    return parse(raw, source, training=training)


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


def expand_grid(raw: dict, source: str = "config", *, training: bool = True) -> list[Config]:
    """The validated configs of every grid combination (the config itself when it has no grid);
    `training`: as for `parse`."""
    base = {k: v for k, v in raw.items() if k != "grid"}
    grid = raw.get("grid")
    if not grid:
        return [parse(base, source, training=training)]
    try:
        assignments = combinations(grid)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    configs = []
    for assignment in assignments:
        variant = base
        for key, value in assignment.items():
            variant = set_dotted(variant, key, value)
        label = ", ".join(f"{k}={v}" for k, v in assignment.items())
        configs.append(parse(variant, f"{source} [{label}]", training=training))
    return configs
