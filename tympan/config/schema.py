"""The config's blocks as pydantic models, and the digest that gives a resolved config its run id.

Every block forbids unknown keys and is strict: `epochs: true` is an error, not one epoch (floats
still take integers). A `Component` is a class chosen by `target:` plus its keyword `args:`,
checked by `tympan.components` against the constructor's annotated signature and its
`check_together` (the checks the constructor also runs), so a bad value fails at load.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tympan import components
from tympan.errors import ConfigError
from tympan.grid import combinations
from tympan.results import parse_tracking
from tympan.targets import first_line, resolve_target

STORE_FORMAT = 4  # bump when the feature store layout or a transform's numbers change, so old stores are rebuilt


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

    def check_args(self, *fixed: str, values: bool = True) -> None:
        """Fail early on an argument the class does not take (`fixed` are filled in later), or, with
        `values`, on a value its annotations or `check_together` refuse, so a bad value fails at load."""
        cls = resolve_target(self.target)
        bound = components.check(cls, self.args, fixed, values=values)
        if values and hasattr(cls, "validate_args"):  # a user's class written against the older contract
            cls.validate_args(**bound)

    def build(self, **fixed: Any) -> Any:
        return resolve_target(self.target)(**self.args, **fixed)

    def build_checked(self, where: str, **fixed: Any) -> Any:
        """Build; a constructor that refuses its arguments is a ConfigError naming `where`.args."""
        try:
            return self.build(**fixed)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}.args: {self.target} refused them: {first_line(exc)}") from None

    def all_args(self) -> dict[str, Any]:
        """The arguments the class is built with, its defaults included."""
        return components.all_args(resolve_target(self.target), self.args)


class DatasetConfig(Component):
    root: str = "data/raw"
    on_unreadable: Literal["raise", "skip"] = Field(
        "raise", description="an unreadable audio file stops preprocessing, or is skipped and reported"
    )


class FeaturesConfig(Block):
    """The feature pipeline (tympan.transforms.pipeline): clips decoded to `sample_rate`, then the
    `offline` transforms (run by preprocess, stored under `root`, versioned by DVC), then the
    `online` ones (per clip in training and in the bundle)."""

    root: str = "data/features"
    store: str | None = Field(
        None,
        min_length=1,
        description="where this config's feature store is (a stable path for DVC to track); "
        "default: <root>/<dataset>-<config digest>",
    )
    sample_rate: int = Field(16000, gt=0, le=768000, description="every clip is decoded and resampled to this rate")
    offline: list[Component] = Field(default_factory=list)
    online: list[Component] = Field(default_factory=list)

    def pipeline(self):
        """The pipeline these transforms make (checked: a mismatched chain is a ValueError)."""
        from tympan.transforms.pipeline import Pipeline

        # the values as loaded: JSON mode would give NaN as None, and a transform would be told of that, not of NaN
        items = [c.model_dump() for c in self.offline], [c.model_dump() for c in self.online]
        return Pipeline(self.sample_rate, *items, resolve=resolve_target)

    def shared_args(self, pipeline=None) -> dict[str, Any]:
        """The transforms' arguments (defaults included) and the stored clips' sample rate (a
        Resample may have changed it): an augmentation takes what it shares by name from here
        (e.g. the Mel scale) unless it sets it. `pipeline`: these features' pipeline, if built
        (building one draws initial weights from torch's generator, which a run has seeded)."""
        shared: dict[str, Any] = {}
        for component in [*self.offline, *self.online]:
            shared.update(component.all_args())
        if pipeline is None:
            import torch

            with torch.random.fork_rng():
                pipeline = self.pipeline()
        return {**shared, "sample_rate": pipeline.stored.sample_rate}

    def stored_part(self) -> dict:
        """What decides the stored features: the rate and the offline transforms (not online, not
        root or store), with what they read from local files in place of its path (`Transform.content_args`)."""
        part = self.model_dump(mode="json", include={"sample_rate", "offline"})
        for component in part["offline"]:
            content_args = getattr(resolve_target(component["target"]), "content_args", None)
            if content_args is not None:
                component["args"] = content_args(component["args"])
        return part


class TaskConfig(Component):
    """The task (tympan.tasks): its target columns come from the dataset. `stratify` and
    `tracking` are read by training, not by the task's class."""

    stratify: list[str] = Field(
        default_factory=list,
        description="index columns (speaker, device, ...) whose groups each get the task's metrics, on dev and test",
    )
    tracking: str | None = Field(
        None,
        description="the metric that picks the best state: dev.<metric> (dev.uar, dev.loss) or "
        "dev.<metric>.worst_<stratify column>; default: the task's own (accuracy, mAP, mae or ccc)",
    )

    @field_validator("stratify")
    @classmethod
    def _distinct_columns(cls, columns: list[str]) -> list[str]:
        if any(not c for c in columns) or len(set(columns)) != len(columns):
            raise ValueError(f"must be distinct, non-empty index column names, got {columns!r}")
        return columns

    @field_validator("tracking")
    @classmethod
    def _tracking_form(cls, tracking: str | None, info: ValidationInfo) -> str | None:
        """Its form, and a worst group's column stratified (the metric is checked against the task's class)."""
        if tracking is not None:
            _, column = parse_tracking(tracking)
            stratify = info.data.get("stratify") or []
            if column is not None and column not in stratify:
                raise ValueError(
                    f"{tracking!r} needs {column!r} under task.stratify (stratified: {', '.join(stratify) or 'none'})"
                )
        return tracking


class ModelConfig(Component):
    pass


class PartConfig(Block):
    """How the optimizer treats one part of the model (`AudioModel.parts()`: backbone, head)."""

    lr: float | None = Field(None, gt=0, description="this part's learning rate (default: optimizer.args.lr)")
    weight_decay: float | None = Field(None, ge=0, description="this part's weight decay (default: the optimizer's)")
    freeze: bool | int = Field(
        False,
        description="true: never trained; N: frozen for the first N epochs (optimizer steps when training.steps "
        "is set), trained from then on. Only parameters are frozen: batch-norm statistics still follow the data",
    )

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze(cls, value: Any) -> Any:
        if not isinstance(value, bool) and not (isinstance(value, int) and value >= 1):
            raise ValueError(f"must be true, false or a number of epochs (or steps) >= 1, got {value!r}")
        return value


class OptimizerConfig(Component):
    """A `torch.optim` optimizer (or `tympan.optim:SAM` around one) and its keyword `args:`.
    Without `parts` and `no_decay` every parameter is in one group with `args`."""

    parts: dict[str, PartConfig] = Field(
        default_factory=dict,
        description="settings per model part (backbone, head): lr, weight_decay, freeze; a part not named keeps `args`",
    )
    no_decay: bool = Field(False, description="no weight decay on biases and normalisation weights (1-D parameters)")


class SchedulerConfig(Component):
    """A `torch.optim.lr_scheduler` class and its `args:`, stepped every `interval`, or
    (ReduceLROnPlateau) after every dev evaluation with the task's tracking metric, its mode
    the metric's direction; `warmup` ramps the learning rate up linearly in front of it."""

    target: str | None = Field(None, description="the scheduler class; leave it out for a warm-up alone")
    interval: Literal["step", "epoch"] = Field("epoch", description="step the scheduler every optimizer step or epoch")
    warmup: int = Field(
        0,
        ge=0,
        description="linear warm-up over the first N intervals: the k-th trains at k/N of the lr, then the "
        "scheduler starts from its beginning (without a target: the lr stays)",
    )

    @field_validator("target")
    @classmethod
    def _importable(cls, target: str | None) -> str | None:
        if target is not None:
            resolve_target(target)
        return target

    @model_validator(mode="after")
    def _something_to_schedule(self) -> SchedulerConfig:
        if self.target is None and (self.args or not self.warmup):
            raise ValueError("give a target (a torch.optim.lr_scheduler class) with its args, or warmup: N alone")
        return self

    def build_for(self, optimizer: Any, total_steps: int, steps_per_epoch: int, **fixed: Any) -> Any:
        """Build for a run of `total_steps` optimizer steps, filling in the run-length arguments
        the class takes and the config leaves out (one-cycle peaks at the optimizer's lr, each
        parameter group's own; cosine annealing lasts the run). `fixed`: more arguments (a mode)."""
        params = inspect.signature(resolve_target(self.target)).parameters
        lrs = [group["lr"] for group in optimizer.param_groups]
        epochs = -(-total_steps // steps_per_epoch)
        known = {
            "total_steps": total_steps,
            "epochs": epochs,
            "steps_per_epoch": steps_per_epoch,
            "max_lr": lrs[0] if len(lrs) == 1 else lrs,
            "T_max": total_steps if self.interval == "step" else epochs,
        }
        filled = {k: v for k, v in known.items() if k in params and k not in self.args}
        if "total_steps" in filled:  # OneCycle-like: total_steps alone defines the schedule
            filled.pop("epochs", None)
            filled.pop("steps_per_epoch", None)
        return self.build(optimizer=optimizer, **filled, **fixed)


class TrainingConfig(Block):
    """How long and how to train. Training counts in epochs, or in optimizer steps when `steps`
    is set; `eval_every` and `save_every` count in that same unit."""

    epochs: int = Field(10, ge=1)
    steps: int | None = Field(None, ge=1, description="train this many optimizer steps (epochs is then ignored)")
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    max_duration: float | None = Field(None, gt=0, description="crop training clips to at most this many seconds")
    bucketing: bool = Field(True, description="batch clips of similar length together")
    eval_every: int = Field(1, ge=1, description="evaluate on dev every N epochs or steps (and at the end)")
    save_every: int = Field(1, ge=1, description="save the resumable last/ state every N epochs or steps")
    patience: int | None = Field(None, ge=1, description="stop after N evaluations without improvement")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")
    accumulate: int = Field(
        1,
        ge=1,
        description="sum the gradients of N batches (each loss scaled by 1/N) into one optimizer step; `steps`, "
        "the scheduler and `freeze` count optimizer steps. An epoch's last group may have fewer batches: it "
        "steps too, its losses scaled by 1/its size",
    )
    amp: bool | Literal["fp16", "bf16"] = Field(
        False,
        description="mixed precision: true or fp16 = float16 autocast with a GradScaler, on CUDA (ignored on "
        "CPU); bf16 = bfloat16 autocast on CPU and CUDA, no GradScaler",
    )
    channels_last: bool = Field(
        False,
        description="keep conv weights and activations channels-last (NHWC), the layout oneDNN's CPU "
        "convolutions prefer: a few percent faster on CPU (bench/cpu_options.py); the last digits differ from NCHW",
    )
    device: str = "auto"
    num_workers: int = Field(0, ge=0)
    threads: int | None = Field(None, ge=1, description="torch threads; default $OMP_NUM_THREADS, else the CPUs given")
    deterministic: bool = True
    progress: bool = True

    @field_validator("amp", mode="before")
    @classmethod
    def _amp(cls, value: Any) -> Any:
        if not isinstance(value, bool) and value not in ("fp16", "bf16"):
            raise ValueError(f"must be false, true (fp16), fp16 or bf16, got {value!r}")
        return value


class TrackingConfig(Block):
    """Where runs are tracked besides their run directory (which is always written)."""

    mlflow: bool = False
    mlflow_uri: str | None = Field(None, description="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    mlflow_experiment: str | None = Field(None, description="default: the config's experiment name")
    system_metrics: bool = False
    tensorboard: bool = Field(False, description="TensorBoard event files in <run dir>/tensorboard")


class DataConfig(Block):
    """What fetch and preprocess read, and all of it: a pipeline passes just this to those steps,
    so their cache keys are exactly the data's (`features` is left out for fetch)."""

    dataset: DatasetConfig
    features: FeaturesConfig | None = None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


class Config(Block):
    experiment: str = "default"
    seed: int = 1
    dataset: DatasetConfig
    features: FeaturesConfig
    task: TaskConfig
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
        if grid:
            try:
                combinations(grid)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return grid

    def data(self, features: bool = True) -> DataConfig:
        """The dataset (and features) blocks, as fetch (and preprocess) read them."""
        return DataConfig(dataset=self.dataset, features=self.features if features else None)

    def run_id(self) -> str:
        """Runs with the same resolved config share an id; names and progress bars don't count."""
        return run_id_of(self.model_dump(mode="json"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def run_id_of(resolved: dict) -> str:
    """The run id of a resolved config as data (`Config.model_dump(mode="json")`, which is what a
    run's config.yaml holds), so that reading a run's id needs no parsing and imports nothing."""
    data = {k: v for k, v in resolved.items() if k not in ("experiment", "grid", "tracking")}
    training = data.get("training") or {}
    data["training"] = {k: v for k, v in training.items() if k not in ("progress", "num_workers", "threads")}
    if isinstance(data.get("features"), dict):  # where the store lies, not what it holds
        data["features"] = {k: v for k, v in data["features"].items() if k != "store"}
    for block, defaults in LATER_KEYS.items():  # keys added later count only when set, so old runs keep their ids
        if isinstance(data.get(block), dict):
            data[block] = {k: v for k, v in data[block].items() if k not in defaults or v != defaults[k]}
    return digest(data)[:12]


# keys added to a block after runs existed, with their defaults (which behave as before they existed)
LATER_KEYS = {
    "optimizer": {"parts": {}, "no_decay": False},
    "scheduler": {"warmup": 0},
    "training": {"accumulate": 1, "channels_last": False},
    "task": {"stratify": [], "tracking": None},
}


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"optimizer.args.lr": "0.003", ...}: MLflow params and postprocess's columns."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return out
