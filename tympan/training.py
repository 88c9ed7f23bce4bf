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
        self.scheduler = self._scheduler(steps_per_epoch=len(self.sampler))
        self.tracker = tracking.tracker(config)
        self.amp = cfg.amp and self.device.type == "cuda"
        if cfg.amp and not self.amp:
            log.warning("training.amp is for CUDA; training in float32 on %s", self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

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

    def _scheduler(self, steps_per_epoch: int):
        if self.config.scheduler is None:
            return None
        params = inspect.signature(resolve_target(self.config.scheduler.target)).parameters
        epochs = self.config.training.epochs
        known = {"total_steps": epochs * steps_per_epoch, "epochs": epochs, "steps_per_epoch": steps_per_epoch}
        filled = {k: v for k, v in known.items() if k in params and k not in self.config.scheduler.args}
        if "total_steps" in filled:  # OneCycle-like: total_steps alone defines the schedule
            filled.pop("epochs", None)
            filled.pop("steps_per_epoch", None)
        return self.config.scheduler.build(optimizer=self.optimizer, **filled)

    def fit(self) -> dict:
        with logging_redirect_tqdm():
            return self._fit()

    def _fit(self) -> dict:
        cfg = self.config.training
        summary = self.run_dir / "summary.json"
        if summary.is_file() and self._same_config():
            log.info("%s has finished already; nothing to train", self.run_dir)
            return json.loads(summary.read_text())
        self.run_dir.mkdir(parents=True, exist_ok=True)
        first, history, best = self._resume()
        write_text(self.run_dir / "config.yaml", self.config.to_yaml())
        self.tracker.start(self.config, self.run_dir, resuming=first > 1)
        write_text(self.run_dir / "running.pid", str(os.getpid()))
        epochs = progress.bar(
            range(first, cfg.epochs + 1),
            cfg.progress,
            desc="training",
            unit="epoch",
            initial=first - 1,
            total=cfg.epochs,
        )
        tracked = f"dev_{self.task.tracking_metric}"
        for epoch in epochs:
            started = time.perf_counter()
            train_loss = self._train_epoch(epoch)
            row = {"epoch": epoch, "train_loss": train_loss, "lr": self.optimizer.param_groups[0]["lr"]}
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                dev = self.evaluate("dev")
                row.update({f"dev_{k}": v for k, v in dev["metrics"].items()})
                row["dev_loss"] = dev["loss"]
            history.append(row)
            write_csv(self.run_dir / "metrics.csv", history, list(dict.fromkeys(k for r in history for k in r)))
            self.tracker.log_epoch(epoch, row)
            if tracked in row and self.task.is_better(row[tracked], best):
                best = row[tracked]
                self._save_state("best", epoch)
            self._save_state("last", epoch)
            dev_text = f"dev {self.task.tracking_metric} {row[tracked]:.4f}" if tracked in row else "no dev evaluation"
            epochs.set_postfix_str(f"loss {train_loss:.3f}, {dev_text}")
            log.info("epoch %d/%d  train loss %.4f  %s  (%.1fs)", epoch, cfg.epochs, train_loss, dev_text,
                     time.perf_counter() - started)  # fmt: skip
            if cfg.patience is not None and self._stale(history, tracked) >= cfg.patience:
                log.info("early stop: no better dev %s in %d evaluations", self.task.tracking_metric, cfg.patience)
                break
        plots.training_curves(history, self.run_dir / "plots" / "training_curves.png", self.task.tracking_metric)
        summary = self._finish(history)
        (self.run_dir / "running.pid").unlink(missing_ok=True)
        self.tracker.finish(summary, self.run_dir)
        return summary

    def _stale(self, history: list[dict], tracked: str) -> int:
        """Evaluations since the best one (derived from the history, so resuming needs no counter)."""
        values = [row[tracked] for row in history if tracked in row]
        best = 0
        for i, value in enumerate(values):
            if self.task.is_better(value, values[best]):
                best = i
        return len(values) - 1 - best

    def _train_epoch(self, epoch: int) -> float:
        self.model.train()
        self.train_data.epoch = self.sampler.epoch = epoch
        batches = loader(self.train_data, self.sampler, self.model.min_frames, self.config.training.num_workers)
        total, count = 0.0, 0
        bar = progress.bar(batches, self.config.training.progress, desc=f"epoch {epoch}", unit="batch", leave=False)
        for features, targets in bar:
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
            total += loss.item() * len(targets)
            count += len(targets)
            bar.set_postfix(loss=f"{total / count:.3f}", refresh=False)
        if self.scheduler is not None and self.config.scheduler.interval == "epoch":
            self.scheduler.step()
        return total / count

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

    def _resume(self) -> tuple[int, list[dict], float | None]:
        """Continue an interrupted run from its last saved state: (first epoch, history, best value).

        Data order and augmentation depend only on (seed, epoch, clip), and the torch RNG state is
        restored, so the resumed run computes exactly what the uninterrupted one would have.
        """
        last = self._state_dir("last")
        if last is None or not self._same_config():
            return 1, [], None
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
        epoch = int(state["epoch"])
        with open(self.run_dir / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        history = [{k: int(v) if k == "epoch" else float(v) for k, v in row.items() if v != ""} for row in rows]
        history = history[:epoch]
        tracked = f"dev_{self.task.tracking_metric}"
        values = [row[tracked] for row in history if tracked in row]
        best = None
        for value in values:
            best = value if self.task.is_better(value, best) else best
        log.info("resuming %s after epoch %d", self.run_dir, epoch)
        return epoch + 1, history, best

    def _save_state(self, name: str, epoch: int) -> None:
        """Weights as safetensors; optimizer, scheduler and RNG state beside them (tensors only)."""
        directory = self.run_dir / name
        tmp = self.run_dir / f".{name}.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(weights, tmp / "model.safetensors")
        torch.save(
            {
                "epoch": epoch,
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
        best_epoch = int(torch.load(self.run_dir / "best" / "training_state.pt", weights_only=True)["epoch"])
        summary: dict = {"run": {"id": self.config.run_id(), "best_epoch": best_epoch, "epochs": len(history)}}
        for split in ("dev", "test"):
            if not len(self.splits[split]):
                log.warning("the %s split is empty: no %s results", split, split)
                summary[split] = {}
                continue
            result = self.evaluate(split)
            summary[split] = result["metrics"]
            plots.confusion_matrix(
                self.task.confusion(result["predictions"], result["targets"]),
                self.task.labels,
                self.run_dir / "plots" / f"confusion_{split}.png",
            )
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
