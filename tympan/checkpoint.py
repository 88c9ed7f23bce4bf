"""Resumable training states on disk: a run's `best/` and `last/`, each the weights as safetensors
with `training_state.pt` (optimizer, scheduler, scaler, RNG) beside them, swapped in whole."""

from __future__ import annotations

import csv
import io
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from tympan.errors import TrainingError
from tympan.fileio import atomic_dir, clear_leftovers

log = logging.getLogger("tympan")

WEIGHTS, STATE = "model.safetensors", "training_state.pt"


def state_dir(run_dir: Path, name: str) -> Path | None:
    """The newest complete saved state: `name/`, else `.name.old`, which is the complete
    previous one when a kill hit the swap in `Checkpoints.save` between its two renames."""
    for directory in (run_dir / name, run_dir / f".{name}.old"):
        if (directory / STATE).is_file() and (directory / WEIGHTS).is_file():
            return directory
    return None


def recover(run_dir: Path, name: str) -> None:
    """Put the newest complete state back at `name/` and drop what a killed save left behind,
    so later saves start clean and the finished run has its `best/` and `last/`."""
    directory, old = run_dir / name, run_dir / f".{name}.old"
    if state_dir(run_dir, name) == old:
        shutil.rmtree(directory, ignore_errors=True)
        old.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(run_dir / f".{name}.tmp", ignore_errors=True)


def read(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A saved state and its weights (tensors only: `weights_only` loads no pickled code)."""
    state = torch.load(directory / STATE, weights_only=True)
    return state, load_file(directory / WEIGHTS)


def read_history(run_dir: Path) -> list[dict]:
    """The rows of metrics.csv; none yet (a state saved before the first row) is a valid history."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: int(v) if k in ("epoch", "step") else float(v) for k, v in r.items() if v != ""} for r in rows]


class Checkpoints:
    """Saves and restores the states of one run's model, optimizer, scheduler and scaler."""

    def __init__(self, run_dir: Path, model: torch.nn.Module, optimizer, scheduler, scaler: torch.amp.GradScaler):
        self.run_dir, self.model, self.optimizer = Path(run_dir), model, optimizer
        self.scheduler, self.scaler = scheduler, scaler

    def save(self, name: str, epoch: int, step: int, loss: list[float]) -> None:
        """Weights as safetensors; optimizer, scheduler and RNG state beside them (tensors only).

        Swapped in by `fileio.atomic_dir`: a kill at any point leaves a complete `name/` or
        `.name.old`, which `state_dir` finds. Non-finite weights are refused."""
        weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        if not all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()):
            raise TrainingError(
                f"{self.run_dir}: the model's weights became NaN or infinite by step {step} (epoch {epoch}); "
                f"stopped without saving them as {name}/. Lower optimizer.args.lr or set training.grad_clip"
            )
        with atomic_dir(self.run_dir / name) as tmp:
            (tmp / WEIGHTS).write_bytes(safetensors_bytes(weights))
            # through memory, so that a full disk is an OSError and never a half-written file
            (tmp / STATE).write_bytes(self._training_state(epoch, step, loss))

    def _training_state(self, epoch: int, step: int, loss: list[float]) -> bytes:
        buffer = io.BytesIO()
        torch.save(
            {
                "epoch": epoch,
                "step": step,
                "loss_sum": loss[0],
                "loss_count": loss[1],
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "scaler": self.scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            buffer,
        )
        return buffer.getvalue()

    def resume(self) -> tuple[int, list[dict], list[float]]:
        """Continue an interrupted run from its last saved state: (steps done, history, loss since
        the last row).

        Data order and augmentation depend only on (seed, epoch, clip), the loader draws nothing
        from the global RNG, and the RNG, optimizer, scheduler and scaler states are restored, so
        the resumed run computes exactly what the uninterrupted one would have, even mid-epoch.
        """
        for name in ("last", "best"):
            recover(self.run_dir, name)
        clear_leftovers(self.run_dir)  # a metrics.csv or plot being replaced when the run was killed
        last = state_dir(self.run_dir, "last")
        if last is None:
            return 0, [], [0.0, 0]
        state, weights = read(last)
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        step = int(state["step"])
        history = [row for row in read_history(self.run_dir) if row["step"] <= step]
        log.info("resuming %s after step %d (epoch %d)", self.run_dir, step, state["epoch"])
        return step, history, [float(state["loss_sum"]), int(state["loss_count"])]

    def load_best(self) -> dict:
        """Put the `best/` weights into the model; return that state (its epoch and step)."""
        state, weights = read(self.run_dir / "best")
        self.model.load_state_dict(weights)
        return state
