"""Optimisation beyond one `torch.optim` class over all weights: parameter groups by model part
(their own lr and weight decay, frozen parts, no decay on biases and norms), SAM around any torch
optimiser, a linear warm-up in front of any scheduler, ReduceLROnPlateau on the task's tracking
metric, and the autocast precision. Training calls these; config load calls `check`.

Whatever changes during a run is a function of how far it has come (freezing) or lives in the
optimizer's or the schedule's state dict (SAM's base state, the warm-up's count), so a resumed
run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from tympan.components import Checked, PositiveFloat
from tympan.errors import ConfigError
from tympan.targets import resolve_target

log = logging.getLogger("tympan")

# torch optimisers that tympan's training step cannot drive, and why
NOT_STEPPED = {
    "LBFGS": "its step re-evaluates the loss of the whole data set through a closure",
    "SparseAdam": "it takes sparse gradients, and tympan's models have dense ones",
    "Muon": "it takes only 2-D weights, and every model has biases or norms",
}
# torch schedulers whose arguments are Python objects, which a YAML config cannot give
NOT_FROM_YAML = {
    "LambdaLR": "its lr_lambda is a function",
    "MultiplicativeLR": "its lr_lambda is a function",
    "SequentialLR": "it takes scheduler objects (for a warm-up, set scheduler.warmup)",
    "ChainedScheduler": "it takes scheduler objects (for a warm-up, set scheduler.warmup)",
}


def _refused(cls: Any, table: dict[str, str], module: Any) -> str | None:
    for name, why in table.items():
        refused = getattr(module, name, None)
        if isinstance(cls, type) and refused is not None and issubclass(cls, refused):
            return why
    return None


class SAM(Checked, torch.optim.Optimizer):
    """Sharpness-aware minimisation (Foret et al., 2021) around any torch optimiser `base`.

    A step takes the gradient g at the weights w (computed before `step`), moves to
    w + rho * g / ||g|| (adaptive SAM, Kwon et al. 2021: each weight's move scaled by w^2, the
    norm taken of |w| g), lets `closure` compute the gradient there, returns to w exactly, and
    lets the base optimiser step with that second gradient. The base optimiser shares this one's
    parameter groups and state, so the state dict holds its momentum and the scheduler sets its lr.
    """

    def __init__(
        self,
        params: Any,
        base: str = "torch.optim:SGD",
        rho: PositiveFloat = 0.05,
        adaptive: bool = False,
        **base_args: Any,
    ):
        base_class = resolve_target(base) if isinstance(base, str) else base
        if not (isinstance(base_class, type) and issubclass(base_class, torch.optim.Optimizer)):
            raise ValueError(f"base must name a torch.optim optimizer class, got {base!r}")
        if issubclass(base_class, SAM):
            raise ValueError("base: SAM around SAM is not supported")
        why = _refused(base_class, NOT_STEPPED, torch.optim)
        if why:
            raise ValueError(f"base: {base} is not supported: {why}")
        super().__init__(params, {"rho": rho, "adaptive": adaptive})
        self.base = base_class(self.param_groups, **base_args)
        self.param_groups, self.state = self.base.param_groups, self.base.state
        self.defaults.update(self.base.defaults)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)  # replaces this optimizer's groups and state: share them again
        self.base.param_groups, self.base.state = self.param_groups, self.state

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if closure is None:
            raise ValueError("SAM.step needs a closure that recomputes the gradients at the moved weights")
        self._ascend()
        with torch.enable_grad():
            closure()
        for group in self.param_groups:  # back to w exactly (w + e - e would be off by rounding)
            for p in group["params"]:
                if "sam_w" in self.state.get(p, {}):
                    p.copy_(self.state[p].pop("sam_w"))
        return self.base.step()

    def _ascend(self) -> None:
        moved = [(group, p) for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not moved:
            return
        scaled = [(p.abs() * p.grad if group["adaptive"] else p.grad) for group, p in moved]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in scaled]))
        for group, p in moved:
            move = p.grad * (group["rho"] / (norm + 1e-12))
            if group["adaptive"]:
                move = move * p * p
            self.state[p]["sam_w"] = p.detach().clone()
            p.add_(move)


@contextlib.contextmanager
def running_stats_kept(model: nn.Module) -> Iterator[None]:
    """Batch norm normalises by the batch as in training but leaves its running statistics alone:
    SAM's second pass sees the same batches again, which must not count twice."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


def _parts(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    if not hasattr(model, "parts"):
        raise ConfigError(f"optimizer.parts: {type(model).__name__} has no parts() (subclass tympan.models.AudioModel)")
    return model.parts()


def _unknown_part(name: str, model_name: str, known: list[str]) -> str:
    if name == "head" and "head" not in known:
        return f"optimizer.parts.head: model {model_name} declares no head part (its head_modules are empty)"
    return f"optimizer.parts: model {model_name} has no part {name!r}; its parts: {', '.join(known)}"


def build_optimizer(config: Any, model: nn.Module) -> torch.optim.Optimizer:
    """`config` (an OptimizerConfig) over the model's parameters: one group as `args` say, or,
    with `parts` or `no_decay`, a group per part, and per part one without weight decay."""
    if not config.parts and not config.no_decay:
        return config.build(params=model.parameters())
    parts = _parts(model)
    known = [name for name, named in parts.items() if named]
    for name in config.parts:
        if name not in known:
            raise ConfigError(_unknown_part(name, type(model).__name__, known))
    groups = []
    for part, named in parts.items():
        settings = config.parts.get(part)
        for decays in (True, False):
            params = [p for _, p in named if decays == (not config.no_decay or p.ndim > 1)]
            if not params:
                continue
            group: dict[str, Any] = {"params": params, "part": part if decays else f"{part}, no decay"}
            if settings is not None and settings.lr is not None:
                group["lr"] = settings.lr
            if not decays:
                group["weight_decay"] = 0.0
            elif settings is not None and settings.weight_decay is not None:
                group["weight_decay"] = settings.weight_decay
            groups.append(group)
    return config.build(params=groups)


class Freezing:
    """The parts frozen by `optimizer.parts.<part>.freeze`: `apply(unit)` before each optimizer
    step, `unit` being the epoch, or the step about to run when training counts steps. Only
    parameters that trained when the model was built are touched (a model may freeze some itself)."""

    def __init__(self, config: Any, model: nn.Module):
        parts = _parts(model)
        self.rules = [
            ([p for _, p in parts[name] if p.requires_grad], part.freeze)
            for name, part in config.parts.items()
            if part.freeze is not False
        ]

    def apply(self, unit: int) -> None:
        for params, until in self.rules:
            trains = until is not True and unit > until
            for p in params:
                p.requires_grad_(trains)


def freezing(config: Any, model: nn.Module) -> Freezing | None:
    """The run's Freezing, or None when no part is frozen."""
    return Freezing(config, model) if any(p.freeze is not False for p in config.parts.values()) else None


def on_metric(scheduler_class: Any) -> bool:
    """Whether a scheduler steps on a metric (ReduceLROnPlateau): its `step` takes `metrics`."""
    step = getattr(scheduler_class, "step", None)
    return step is not None and "metrics" in inspect.signature(step).parameters


class Schedule:
    """A run's learning-rate schedule: an optional linear warm-up (the k-th of `warmup` intervals
    trains at k/warmup of each group's lr), then `inner`, the configured scheduler from its
    beginning. `step()` after every interval; `evaluated(value)` after every dev evaluation, which
    steps a scheduler on a metric (ReduceLROnPlateau) once the warm-up is over."""

    def __init__(self, optimizer: torch.optim.Optimizer, inner: Any, warmup: int):
        self.optimizer, self.inner, self.warmup = optimizer, inner, warmup
        self.on_metric = inner is not None and on_metric(type(inner))
        self.done = 0
        self.peak = [group["lr"] for group in optimizer.param_groups]  # the inner scheduler's first lr
        if warmup:
            self._ramp(1)

    def _ramp(self, k: int) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.peak, strict=True):
            group["lr"] = lr * (k / self.warmup)  # k / warmup is exactly 1 at the top: the peak exactly

    def step(self) -> None:
        if self.done < self.warmup:
            self.done += 1
            self._ramp(min(self.done + 1, self.warmup))
        elif self.inner is not None and not self.on_metric:
            self.inner.step()

    def evaluated(self, value: float) -> None:
        if self.on_metric and self.done >= self.warmup:
            self.inner.step(value)

    def state_dict(self) -> dict:
        inner = self.inner.state_dict() if self.inner is not None else None
        return {"warmup_done": self.done, "peak": self.peak, "inner": inner}

    def load_state_dict(self, state: dict) -> None:
        if "warmup_done" not in state:  # saved before warm-ups existed: the scheduler's own state
            self.inner.load_state_dict(state)
            return
        self.done, self.peak = state["warmup_done"], list(state["peak"])
        if self.inner is not None:
            self.inner.load_state_dict(state["inner"])


def build_schedule(config: Any, optimizer, total_steps: int, steps_per_epoch: int, direction: str) -> Schedule | None:
    """The Schedule of `config` (a SchedulerConfig, or None: no schedule) for a run of
    `total_steps` optimizer steps; the scheduler after a warm-up gets the run's rest, and one
    on a metric gets its mode from the task's `direction` ("max" or "min")."""
    if config is None:
        return None
    per_interval = 1 if config.interval == "step" else steps_per_epoch
    rest = total_steps - config.warmup * per_interval
    if rest < 1:
        raise ConfigError(
            f"scheduler.warmup: {config.warmup} {config.interval}s are the whole run ({total_steps} optimizer "
            f"steps, {steps_per_epoch} an epoch); make the warm-up shorter"
        )
    inner = None
    if config.target is not None:
        cls = resolve_target(config.target)
        takes_mode = "mode" in inspect.signature(cls).parameters
        inner = config.build_for(
            optimizer, rest, steps_per_epoch, **({"mode": direction} if on_metric(cls) and takes_mode else {})
        )
    return Schedule(optimizer, inner, config.warmup)


def amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `training.amp` on `device`: None (float32), float16 (true or fp16,
    CUDA only: elsewhere a warning and float32) or bfloat16 (bf16, on the CPU or CUDA)."""
    if amp is False:
        return None
    if amp == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"training.amp: bf16, but {device} does not support bfloat16; use fp16 or false")
        return torch.bfloat16
    if device.type != "cuda":
        log.warning("training.amp is for CUDA; training in float32 on %s (bf16 autocasts on the CPU too)", device)
        return None
    return torch.float16


def check(config: Any) -> None:
    """What config load can tell about the optimizer, its parts and the schedule without the data:
    a ValueError in one line naming the key. (The constructors' own checks run after this.)"""
    optimizer = config.optimizer
    cls = resolve_target(optimizer.target)
    sam = isinstance(cls, type) and issubclass(cls, SAM)
    base = cls
    if sam:
        base_name = optimizer.args.get("base", "torch.optim:SGD")
        try:
            base = resolve_target(base_name) if isinstance(base_name, str) else None
        except ValueError as exc:
            raise ValueError(f"optimizer.args.base: {exc}") from None
    why = _refused(base, NOT_STEPPED, torch.optim)
    if why:
        raise ValueError(f"optimizer: {optimizer.args['base'] if sam else optimizer.target} is not supported: {why}")
    if sam and config.training.amp in (True, "fp16"):
        raise ValueError(
            "optimizer: SAM with training.amp: fp16 is not supported (its GradScaler unscales once a step, SAM "
            "takes two gradients); use amp: bf16 or false"
        )
    decay_set = [f"parts.{n}.weight_decay" for n, p in optimizer.parts.items() if p.weight_decay is not None]
    if (optimizer.no_decay or decay_set) and isinstance(base, type):
        if "weight_decay" not in inspect.signature(base).parameters:
            key = "no_decay" if optimizer.no_decay else decay_set[0]
            raise ValueError(f"optimizer.{key}: {base.__name__} has no weight decay")
    if optimizer.parts:
        _check_parts(optimizer.parts, config.model.target)
    if config.scheduler is not None:
        _check_schedule(config.scheduler, config.training)


def _check_parts(parts: dict, target: str) -> None:
    """The parts named are the model's (from its head_modules; a model with its own `parts()` is
    checked when built), and not all of them start frozen."""
    from tympan.models.base import AudioModel

    model = resolve_target(target)
    name = getattr(model, "__name__", target)
    if not (isinstance(model, type) and issubclass(model, AudioModel)):
        raise ValueError(f"optimizer.parts: model {name} has no parts (subclass tympan.models.AudioModel)")
    if model.parts is not AudioModel.parts:
        return
    known = ["backbone", "head"] if model.head_modules else ["backbone"]
    for part in parts:
        if part not in known:
            raise ValueError(_unknown_part(part, name, known))
    if all(part in parts and parts[part].freeze is not False for part in known):
        raise ValueError(f"optimizer.parts: every part of {name} is frozen at the start; nothing would train")


def _check_schedule(scheduler: Any, training: Any) -> None:
    if scheduler.target is not None:
        cls = resolve_target(scheduler.target)
        why = _refused(cls, NOT_FROM_YAML, torch.optim.lr_scheduler)
        if why:
            raise ValueError(f"scheduler: {scheduler.target} is not supported: {why}")
        if on_metric(cls) and "mode" in scheduler.args:
            raise ValueError("scheduler.args.mode is filled in from the task's tracking metric (max or min); remove it")
    # the run's length in the warm-up's unit, where it does not depend on the data
    run = {"step": training.steps, "epoch": training.epochs if training.steps is None else None}[scheduler.interval]
    if scheduler.warmup and run is not None and scheduler.warmup >= run:
        raise ValueError(
            f"scheduler.warmup: {scheduler.warmup} {scheduler.interval}s are the whole run ({run}); make it shorter"
        )
