"""The training loop: seeded, device-agnostic, evaluating on dev every epoch and keeping the
best state by the task's tracking metric."""

from __future__ import annotations

import csv
import inspect
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from tqdm.contrib.logging import logging_redirect_tqdm

from tympan import bundle, feature_store, plots, progress, tracking
from tympan import config as configuration
from tympan.config import Config, resolve_target
from tympan.data import BucketBatchSampler, ClipDataset, eval_batches, loader
from tympan.errors import DataError
from tympan.fileio import write_csv, write_json, write_text
from tympan.tasks import Classification

log = logging.getLogger("tympan")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Trains one config on one feature store into one run directory."""

    def __init__(self, config: Config, features_dir: Path, run_dir: Path):
        self.config, self.run_dir = config, Path(run_dir)
        cfg = config.training
        seed_everything(config.seed, cfg.deterministic)
        self.device = pick_device(cfg.device)
        self.meta = meta = feature_store.read_meta(features_dir)
        self.task = Classification(meta["labels"], label_smoothing=cfg.label_smoothing)
        self.splits = {s: feature_store.open_split(features_dir, s) for s in feature_store.SPLITS}
        if not len(self.splits["train"]) or not len(self.splits["dev"]):
            raise DataError(f"{features_dir}: the train and dev splits must not be empty")

        self.model = config.model.build(n_mels=meta["n_bins"], n_outputs=self.task.n_outputs).to(self.device)
        self.optimizer = config.optimizer.build(params=self.model.parameters())
        self.train_data = self._dataset("train", train=True)
        lengths = self.splits["train"].lengths()
        self.sampler = BucketBatchSampler(
            lengths if self.max_frames is None else np.minimum(lengths, self.max_frames),
            cfg.batch_size,
            seed=config.seed,
            bucketing=cfg.bucketing,
        )
        self.scheduler = self._scheduler()
        self.tracker = tracking.tracker(config)
        self.amp = cfg.amp and self.device.type == "cuda"
        if cfg.amp and not self.amp:
            log.warning("training.amp is for CUDA; training in float32 on %s", self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self._row_time = time.perf_counter()

    @property
    def max_frames(self) -> int | None:
        seconds = self.config.training.max_duration
        return None if seconds is None else max(1, int(seconds * self.meta["frame_rate"]))

    def _dataset(self, split: str, train: bool) -> ClipDataset:
        data = self.splits[split]
        feature_args = self.config.features.all_args()
        augmentations = [a.build_sharing(feature_args) for a in self.config.augmentation] if train else []
        return ClipDataset(
            data,
            self.task.encode([row[self.meta["target"]] for row in data.rows]),
            normalization=self.config.features.normalize,
            augmentations=augmentations,
            max_frames=self.max_frames if train else None,
            seed=self.config.seed,
        )

    @property
    def by_step(self) -> bool:
        return self.config.training.steps is not None

    @property
    def total_steps(self) -> int:
        cfg = self.config.training
        return cfg.steps if self.by_step else cfg.epochs * len(self.sampler)

    def _scheduler(self):
        if self.config.scheduler is None:
            return None
        params = inspect.signature(resolve_target(self.config.scheduler.target)).parameters
        steps_per_epoch = len(self.sampler)
        epochs = -(-self.total_steps // steps_per_epoch)
        known = {"total_steps": self.total_steps, "epochs": epochs, "steps_per_epoch": steps_per_epoch}
        known["max_lr"] = self.optimizer.param_groups[0]["lr"]  # one-cycle peaks at the optimizer's lr
        filled = {k: v for k, v in known.items() if k in params and k not in self.config.scheduler.args}
        if "total_steps" in filled:  # OneCycle-like: total_steps alone defines the schedule
            filled.pop("epochs", None)
            filled.pop("steps_per_epoch", None)
        return self.config.scheduler.build(optimizer=self.optimizer, **filled)

    def fit(self) -> dict:
        with logging_redirect_tqdm():
            return self._fit()

    def _fit(self) -> dict:
        summary = self.run_dir / "summary.json"
        if summary.is_file() and self._same_config():
            log.info("%s has finished already; nothing to train", self.run_dir)
            return json.loads(summary.read_text())
        self.run_dir.mkdir(parents=True, exist_ok=True)
        step, history, loss = self._resume()
        write_text(self.run_dir / "config.yaml", self.config.to_yaml())
        unit = "step" if self.by_step else "epoch"
        self.tracker.start(self.config, self.run_dir, (history[-1][unit] if history else 0) if step else None)
        write_text(self.run_dir / "running.pid", str(os.getpid()))
        bar = progress.bar(
            None, self.config.training.progress, desc="training", unit="step", initial=step, total=self.total_steps
        )
        while step < self.total_steps:
            epoch, offset = divmod(step, len(self.sampler))
            step, stop = self._train_epoch(epoch + 1, offset, history, loss, bar)
            if stop:
                break
        bar.close()
        plots.training_curves(history, self.run_dir / "plots" / "training_curves.png", self.task.tracking_metric,
                              x="step" if self.by_step else "epoch")  # fmt: skip
        summary = self._finish(history)
        (self.run_dir / "running.pid").unlink(missing_ok=True)
        self.tracker.finish(summary, self.run_dir)
        return summary

    def _train_epoch(self, epoch: int, offset: int, history: list[dict], loss: list[float], bar) -> tuple[int, bool]:
        """Train epoch `epoch` from its batch `offset` on; log, evaluate and save where due.

        `loss` holds [sum, count] of the training loss since the last logged row. Returns the
        global step reached and whether early stopping ended training.
        """
        cfg = self.config.training
        self.model.train()
        self.train_data.epoch = self.sampler.epoch = epoch
        order = list(self.sampler)[offset:]
        batches = loader(self.train_data, order, self.model.min_frames, cfg.num_workers)
        step = (epoch - 1) * len(self.sampler) + offset
        for features, targets in batches:
            value = self._train_step(features, targets)
            step += 1
            loss[0] += value * len(targets)
            loss[1] += len(targets)
            bar.update(1)
            epoch_end = step % len(self.sampler) == 0
            if epoch_end and self.scheduler is not None and self.config.scheduler.interval == "epoch":
                self.scheduler.step()
            last = step == self.total_steps
            unit = step if self.by_step else epoch
            due_row = last or (step % cfg.eval_every == 0 if self.by_step else epoch_end)
            stop = False
            if due_row:
                stop = self._log_row(epoch, step, history, loss, evaluate=last or unit % cfg.eval_every == 0, bar=bar)
                self.model.train()  # evaluation switched to eval mode, maybe mid-epoch
            if last or stop or ((self.by_step or epoch_end) and unit % cfg.save_every == 0):
                self._save_state("last", epoch, step, loss)
            if last or stop:
                return step, stop
        return step, False

    def _train_step(self, features: torch.Tensor, targets: torch.Tensor) -> float:
        features, targets = features.to(self.device), targets.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            loss = self.task.loss(self.model(features), targets)
        self.scaler.scale(loss).backward()
        if self.config.training.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.training.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None and self.config.scheduler.interval == "step":
            self.scheduler.step()
        return loss.item()

    def _log_row(self, epoch: int, step: int, history: list[dict], loss: list[float], evaluate: bool, bar) -> bool:
        """Append a metrics.csv row (training loss since the last row, dev results when due),
        keep the best state, and say whether early stopping is due."""
        cfg = self.config.training
        lr = self.optimizer.param_groups[0]["lr"]
        row = {"epoch": epoch, "step": step, "train_loss": loss[0] / loss[1], "lr": lr}
        loss[0] = loss[1] = 0
        tracked = f"dev_{self.task.tracking_metric}"
        if evaluate:
            dev = self.evaluate("dev")
            row.update({f"dev_{k}": v for k, v in dev["metrics"].items()})
            row["dev_loss"] = dev["loss"]
        best = self._best(history, tracked)
        history.append(row)
        write_csv(self.run_dir / "metrics.csv", history, list(dict.fromkeys(k for r in history for k in r)))
        self.tracker.log_row(step if self.by_step else epoch, row)
        if tracked in row and self.task.is_better(row[tracked], best):
            self._save_state("best", epoch, step, [0.0, 0])
        dev_text = f"dev {self.task.tracking_metric} {row[tracked]:.4f}" if tracked in row else "no dev evaluation"
        bar.set_postfix_str(f"epoch {epoch}, loss {row['train_loss']:.3f}, {dev_text}", refresh=False)
        where = f"step {step}/{self.total_steps}" if self.by_step else f"epoch {epoch}/{cfg.epochs}"
        elapsed, self._row_time = time.perf_counter() - self._row_time, time.perf_counter()
        log.info("%s  train loss %.4f  %s  (%.1fs)", where, row["train_loss"], dev_text, elapsed)
        if cfg.patience is not None and self._stale(history, tracked) >= cfg.patience:
            log.info("early stop: no better dev %s in %d evaluations", self.task.tracking_metric, cfg.patience)
            return True
        return False

    def _best(self, history: list[dict], tracked: str) -> float | None:
        best = None
        for row in history:
            if tracked in row and self.task.is_better(row[tracked], best):
                best = row[tracked]
        return best

    def _stale(self, history: list[dict], tracked: str) -> int:
        """Evaluations since the best one (derived from the history, so resuming needs no counter)."""
        values = [row[tracked] for row in history if tracked in row]
        best = 0
        for i, value in enumerate(values):
            if self.task.is_better(value, values[best]):
                best = i
        return len(values) - 1 - best

    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """Loss, metrics and predictions of the current model on a split (full clips, no augmentation)."""
        self.model.eval()
        data = self._dataset(split, train=False)
        order = eval_batches(data.split.lengths(), self.config.training.eval_batch_size)
        batches = loader(data, order, self.model.min_frames)
        outputs, targets = [], []
        for features, target in batches:
            outputs.append(self.model(features.to(self.device)).float().cpu())
            targets.append(target)
        outputs, targets = torch.cat(outputs), torch.cat(targets)
        predictions = self.task.predict(outputs).numpy()
        return {
            "loss": float(self.task.loss(outputs, targets, train=False)),
            "metrics": self.task.metrics(predictions, targets.numpy()),
            "predictions": predictions,
            "targets": targets.numpy(),
        }

    def _same_config(self) -> bool:
        saved = self.run_dir / "config.yaml"
        if not saved.is_file():
            return False
        other = configuration.parse(yaml.safe_load(saved.read_text()), str(saved))
        if other.run_id() != self.config.run_id():
            raise DataError(f"{self.run_dir} holds a run of another config; choose another run directory")
        return True

    def _state_dir(self, name: str) -> Path | None:
        """A saved state; `.name.old` is the complete previous one if a kill hit the swap in `_save_state`."""
        for directory in (self.run_dir / name, self.run_dir / f".{name}.old"):
            if (directory / "training_state.pt").is_file() and (directory / "model.safetensors").is_file():
                return directory
        return None

    def _resume(self) -> tuple[int, list[dict], list[float]]:
        """Continue an interrupted run from its last saved state: (steps done, history, loss since
        the last row).

        Data order and augmentation depend only on (seed, epoch, clip), the loader draws nothing
        from the global RNG, and the RNG, optimizer, scheduler and scaler states are restored, so
        the resumed run computes exactly what the uninterrupted one would have, even mid-epoch.
        """
        last = self._state_dir("last")
        if last is None or not self._same_config():
            return 0, [], [0.0, 0]
        state = torch.load(last / "training_state.pt", weights_only=True)
        self.model.load_state_dict(load_file(last / "model.safetensors"))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        step = int(state["step"])
        with open(self.run_dir / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        history = [{k: int(v) if k in ("epoch", "step") else float(v) for k, v in r.items() if v != ""} for r in rows]
        history = [row for row in history if row["step"] <= step]
        log.info("resuming %s after step %d (epoch %d)", self.run_dir, step, state["epoch"])
        return step, history, [float(state["loss_sum"]), int(state["loss_count"])]

    def _save_state(self, name: str, epoch: int, step: int, loss: list[float]) -> None:
        """Weights as safetensors; optimizer, scheduler and RNG state beside them (tensors only)."""
        directory = self.run_dir / name
        tmp = self.run_dir / f".{name}.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(weights, tmp / "model.safetensors")
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
            tmp / "training_state.pt",
        )
        if directory.exists():
            old = self.run_dir / f".{name}.old"
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old)
        else:
            tmp.rename(directory)

    def _finish(self, history: list[dict]) -> dict:
        state = load_file(self.run_dir / "best" / "model.safetensors")
        self.model.load_state_dict(state)
        best = torch.load(self.run_dir / "best" / "training_state.pt", weights_only=True)
        summary: dict = {
            "run": {
                "id": self.config.run_id(),
                "best_epoch": int(best["epoch"]),
                "best_step": int(best["step"]),
                "epochs": history[-1]["epoch"],
                "steps": history[-1]["step"],
            }
        }
        for split in ("dev", "test"):
            if not len(self.splits[split]):
                log.warning("the %s split is empty: no %s results", split, split)
                summary[split] = {}
                continue
            result = self.evaluate(split)
            summary[split] = result["metrics"]
            confusion = self.task.confusion(result["predictions"], result["targets"])
            plots.confusion_matrix(confusion, self.task.labels, self.run_dir / "plots" / f"confusion_{split}.png")
            write_csv(  # the counts, for reports that sum confusion matrices over seeds
                self.run_dir / "plots" / f"confusion_{split}.csv",
                [{"true": label, **dict(zip(self.task.labels, map(int, counts), strict=True))}
                 for label, counts in zip(self.task.labels, confusion, strict=True)],
                ["true", *self.task.labels],
            )  # fmt: skip
        bundle.save(
            self.run_dir / "bundle",
            self.model,
            self.config,
            self.meta,
            self.task.name,
            self.task.labels,
            {k: v for k, v in summary.items() if k != "run"},
        )
        write_json(self.run_dir / "summary.json", summary)
        return summary


def train(config: Config, features_dir: Path, run_dir: Path) -> dict:
    return Trainer(config, features_dir, run_dir).fit()
