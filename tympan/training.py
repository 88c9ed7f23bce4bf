"""The training loop: seeded, device-agnostic, evaluating on dev every epoch and keeping the
best state by the task's tracking metric."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.contrib.logging import logging_redirect_tqdm

from tympan import augmentations, bundle, checkpoint, cpu, flow, optim, plots, progress, runlock, tracking
from tympan import config as configuration
from tympan.config import Config, resolve_target
from tympan.config.load import unknown_metric
from tympan.data import BucketBatchSampler, ClipDataset, eval_batches, loader, sample_seed
from tympan.errors import ConfigError, DataError, TrainingError, TympanError
from tympan.fileio import disk_space, write_csv, write_json, write_text
from tympan.models.base import sizes as input_sizes
from tympan.results import parse_tracking, worst_name
from tympan.store.reader import SPLITS, open_split, read_meta, stored_spec
from tympan.tasks.groups import group_metrics, worst_values

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
    """`training.device` as a torch device; one that this machine lacks is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"training.device: {name!r} is not a device (use auto, cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"training.device: {name}, but no CUDA device is available; set training.device: auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ConfigError(
            f"training.device: {name}, but this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})"
        )
    return device


def _disk_space(run_dir: Path):
    """A full disk, whichever file of the run was being written (safetensors' too), as one StorageError."""
    advice = "free some space (or use another --run-dir) and train again: the run resumes from its last complete state"
    return disk_space(run_dir, advice)


class Trainer:
    """Trains one config on one feature store into one run directory."""

    def __init__(self, config: Config, features_dir: Path, run_dir: Path):
        self.config, self.run_dir = config, Path(run_dir)
        cfg = config.training
        self.device = pick_device(cfg.device)
        self.meta = meta = read_meta(features_dir, config)  # this config's store, or a DataError naming both
        self.pipeline = config.features.pipeline()
        if self.pipeline.stored != stored_spec(meta):
            raise DataError(
                f"{features_dir} holds {stored_spec(meta).describe()}, but features.offline gives "
                f"{self.pipeline.stored.describe()}; run `tympan preprocess` for this config"
            )
        self.splits = {s: open_split(features_dir, s) for s in SPLITS}
        if not len(self.splits["train"]) or not len(self.splits["dev"]):
            raise DataError(f"{features_dir}: the train and dev splits must not be empty")
        self.task = config.task.build_checked("task", targets=meta["targets"])
        self.task.fit(self.splits["train"].rows)
        # every split's targets now: a value that cannot be encoded stops the run before it starts
        self.targets = {s: self.task.encode(data.rows, where=f"{s} split") for s, data in self.splits.items()}
        self._check_stratify()
        self.worst = self._choose_tracking()  # (metric, column) where the worst group's metric is tracked
        if self.pipeline.fits:  # e.g. normalisation with train statistics
            self.pipeline.fit(lambda: self._stored_clips("train"))

        sizes = input_sizes(self.pipeline.output, self.task.n_outputs, resolve_target(config.model.target))
        # seeded here, after building transforms (whose layers draw initial weights too), so the
        # model's initial weights are a function of the seed alone
        seed_everything(config.seed, cfg.deterministic)
        self.model = config.model.build_checked("model", **sizes)
        # the bundle rebuilds the model from these; pretrained weights are already in its weights. A model
        # whose architecture its source decides (a transformers network's config) records it with rebuild_args
        recorded = self.model.rebuild_args() if hasattr(self.model, "rebuild_args") else config.model.args
        self.model_args = {**{k: v for k, v in recorded.items() if k != "pretrained"}, **sizes}
        self.model.to(self.device)
        if cfg.channels_last:  # 4-D weights, and with them every conv output, in NHWC
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = optim.build_optimizer(config.optimizer, self.model)
        self.freezing = optim.freezing(config.optimizer, self.model)
        self.augmentations = self._augmentations()
        self.train_data = self._dataset("train", train=True)
        lengths = self.splits["train"].lengths()
        self.sampler = BucketBatchSampler(
            lengths if self.max_frames is None else np.minimum(lengths, self.max_frames),
            cfg.batch_size,
            seed=config.seed,
            bucketing=cfg.bucketing,
        )
        self.schedule = optim.build_schedule(
            config.scheduler, self.optimizer, self.total_steps, self.steps_per_epoch, self.task.direction
        )
        self.scheduler = self.schedule.inner if self.schedule is not None else None  # the torch scheduler, if any
        self.tracker = tracking.tracker(config)
        self.amp_dtype = optim.amp_dtype(cfg.amp, self.device)  # None: float32
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.checkpoints = checkpoint.Checkpoints(self.run_dir, self.model, self.optimizer, self.schedule, self.scaler)
        self._row_time = time.perf_counter()

    def _check_stratify(self) -> None:
        """Every `task.stratify` column is in the index, so no run trains to fail at its summary."""
        for split, data in self.splits.items():
            columns = list(data.rows[0]) if len(data) else []
            missing = [c for c in self.config.task.stratify if columns and c not in columns]
            if missing:
                raise ConfigError(
                    f"task.stratify: the {split} split's index has no column {missing[0]!r} "
                    f"(its columns: {', '.join(columns)})"
                )

    def _choose_tracking(self) -> tuple[str, str] | None:
        """Apply `task.tracking`: a metric the fitted task gives (or its worst group's); returns
        (metric, column) for a worst group's metric, else None."""
        choice = self.config.task.tracking
        if choice is None:
            return None
        metric, column = parse_tracking(choice)
        known = self.task.known_metrics()
        choices = [m for m in known if column is None or m != "loss"]  # groups get the task's metrics, not the loss
        if metric not in choices:
            raise ConfigError(
                f"task.tracking: {choice!r}: the {self.task.name} task {unknown_metric(metric, column, choices)}"
            )
        self.task.track(metric if column is None else worst_name(metric, column))
        return None if column is None else (metric, column)

    @property
    def max_frames(self) -> int | None:
        seconds = self.config.training.max_duration
        return None if seconds is None else max(1, int(seconds * self.pipeline.stored.frame_rate))

    def _stored_clips(self, split: str):
        data = self.splits[split]
        return (torch.from_numpy(np.array(data.clip(i))) for i in range(len(data)))

    def _augmentations(self) -> dict[str, list]:
        """The configured augmentations by where they act: waveform, features or batch."""
        shared = self.config.features.shared_args(self.pipeline)
        by_place: dict[str, list] = {"waveform": [], "features": [], "batch": []}
        for component in self.config.augmentation:
            augmentation = augmentations.build(component, shared)
            augmentation.prepare()
            by_place[getattr(augmentation, "place", "features")].append(augmentation)
        return by_place

    def _dataset(self, split: str, train: bool) -> ClipDataset:
        data = self.splits[split]
        return ClipDataset(
            data,
            self.targets[split],
            self.pipeline,
            augmentations=self.augmentations if train else None,
            max_frames=self.max_frames if train else None,
            seed=self.config.seed,
            train=train,
        )

    @property
    def by_step(self) -> bool:
        return self.config.training.steps is not None

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps an epoch: a step per `training.accumulate` batches, the last maybe on fewer."""
        return -(-len(self.sampler) // self.config.training.accumulate)

    @property
    def total_steps(self) -> int:
        cfg = self.config.training
        return cfg.steps if self.by_step else cfg.epochs * self.steps_per_epoch

    def fit(self) -> dict:
        with logging_redirect_tqdm(), _disk_space(self.run_dir):
            self._same_config()  # first, as it only reads: a directory of another run is refused untouched
            with runlock.hold(self.run_dir):  # one training at a time in a run directory, pid file removed at the end
                return self._fit()

    def _fit(self) -> dict:
        summary = self.run_dir / "summary.json"
        same = self._same_config()
        if summary.is_file() and same:
            log.info("%s has finished already; nothing to train", self.run_dir)
            return json.loads(summary.read_text())
        self.run_dir.mkdir(parents=True, exist_ok=True)
        step, history, loss = self.checkpoints.resume() if same else (0, [], [0.0, 0])
        write_text(self.run_dir / "config.yaml", self.config.to_yaml())
        record = flow.resolve(self.config, self.pipeline)
        write_text(self.run_dir / "pipeline.yaml", yaml.safe_dump(record, sort_keys=False))
        unit = "step" if self.by_step else "epoch"
        self.tracker.start(self.config, self.run_dir, (history[-1][unit] if history else 0) if step else None)
        bar = progress.bar(
            None, self.config.training.progress, desc="training", unit="step", initial=step, total=self.total_steps
        )
        while step < self.total_steps:
            epoch, offset = divmod(step, self.steps_per_epoch)
            step, stop = self._train_epoch(epoch + 1, offset, history, loss, bar)
            if stop:
                break
        bar.close()
        plots.training_curves(history, self.run_dir / "plots" / "training_curves.png", self.task.tracking_metric,
                              x="step" if self.by_step else "epoch")  # fmt: skip
        summary = self._finish(history)
        self.tracker.finish(summary, self.run_dir)
        return summary

    def _train_epoch(self, epoch: int, offset: int, history: list[dict], loss: list[float], bar) -> tuple[int, bool]:
        """Train epoch `epoch` from its step `offset` on; log, evaluate and save where due.

        `offset` counts optimizer steps, each on `training.accumulate` batches. `loss` holds
        [sum, count] of the training loss since the last logged row. Returns the global step
        reached and whether early stopping ended training.
        """
        cfg = self.config.training
        self.model.train()
        self.train_data.epoch = self.sampler.epoch = epoch
        order = list(self.sampler)[offset * cfg.accumulate :]
        batches = loader(self.train_data, order, self.model.min_frames, cfg.num_workers)
        step = (epoch - 1) * self.steps_per_epoch + offset
        group = []
        for batch, (x, lengths, targets) in enumerate(batches, start=offset * cfg.accumulate):
            if self.augmentations["batch"]:
                x, lengths, targets = self._mix(x, lengths, targets, epoch, batch)
            group.append((x, lengths, targets))
            if len(group) < cfg.accumulate and batch + 1 < len(self.sampler):
                continue
            if self.freezing is not None:
                self.freezing.apply(step + 1 if self.by_step else epoch)
            values = self._train_group(group)
            step += 1
            for value in values:
                if not math.isfinite(value):
                    raise TrainingError(
                        f"{self.run_dir}: the training loss became {value} at step {step} (epoch {epoch}); stopped "
                        "without saving it (last/ keeps the last finite state). Lower optimizer.args.lr, set "
                        "training.grad_clip, or check the features"
                    )
            loss[0] += sum(value * len(t) for value, (_, _, t) in zip(values, group, strict=True))
            loss[1] += sum(len(t) for _, _, t in group)
            group = []
            bar.update(1)
            epoch_end = step % self.steps_per_epoch == 0
            if epoch_end and self.schedule is not None and self.config.scheduler.interval == "epoch":
                self.schedule.step()
            last = step == self.total_steps
            unit = step if self.by_step else epoch
            due_row = last or (step % cfg.eval_every == 0 if self.by_step else epoch_end)
            stop = False
            if due_row:
                stop = self._log_row(epoch, step, history, loss, evaluate=last or unit % cfg.eval_every == 0, bar=bar)
                self.model.train()  # evaluation switched to eval mode, maybe mid-epoch
            if last or stop or ((self.by_step or epoch_end) and unit % cfg.save_every == 0):
                self.checkpoints.save("last", epoch, step, loss)
            if last or stop:
                return step, stop
        return step, False

    def _mix(self, x, lengths, targets, epoch: int, batch: int):
        """Batch augmentations (MixUp, CutMix) on soft targets, seeded by the batch's place in the run."""
        generator = torch.Generator().manual_seed(sample_seed(self.config.seed, epoch, len(self.train_data) + batch))
        targets = self.task.soft(targets)
        for augmentation in self.augmentations["batch"]:
            x, lengths, targets = augmentation(x, lengths, targets, generator)
        return x, lengths, targets

    def _train_step(self, x: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor) -> float:
        """One optimizer step on one batch (bench/train_speed.py times it); its loss."""
        return self._train_group([(x, lengths, targets)])[0]

    def _train_group(self, group: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[float]:
        """One optimizer step on the summed gradients of a group of batches, each loss scaled by
        1/len(group); SAM takes its second gradients through `again`. Returns each batch's loss."""
        group = [(x.to(self.device), lengths.to(self.device), targets.to(self.device)) for x, lengths, targets in group]
        self.optimizer.zero_grad(set_to_none=True)
        values = self._backward(group)
        if isinstance(self.optimizer, optim.SAM):

            def again() -> None:
                self.optimizer.zero_grad(set_to_none=True)
                with optim.running_stats_kept(self.model):
                    self._backward(group)
                self._clip()

            self.optimizer.step(again)
        else:
            self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if self.schedule is not None and self.config.scheduler.interval == "step":
            self.schedule.step()
        return values

    def _backward(self, group: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[float]:
        """Add the group's gradients (under `training.amp`'s autocast) to the parameters' grads."""
        values = []
        for x, lengths, targets in group:
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float16, enabled=bool(self.amp_dtype)):
                loss = self.task.loss(self.model(x, lengths), targets)
            self.scaler.scale(loss if len(group) == 1 else loss / len(group)).backward()
            values.append(loss.item())
        return values

    def _clip(self) -> None:
        if self.config.training.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.training.grad_clip)

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
            if self.worst is not None:  # the tracked worst group's metric, and only it: metrics.csv stays narrow
                metric, column = self.worst
                found = self._groups("dev", dev, [column])[column]
                row[f"dev_{worst_name(metric, column)}"] = found["metrics"][found["worst"][metric]][metric]
            if self.schedule is not None and self.schedule.on_metric:  # ReduceLROnPlateau: the lr from here on
                self.schedule.evaluated(row[tracked])
                row["lr"] = self.optimizer.param_groups[0]["lr"]
        best = self._best(history, tracked)
        history.append(row)
        write_csv(self.run_dir / "metrics.csv", history, list(dict.fromkeys(k for r in history for k in r)))
        self.tracker.log_row(step if self.by_step else epoch, row)
        if tracked in row and self.task.is_better(row[tracked], best):
            self.checkpoints.save("best", epoch, step, [0.0, 0])
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

    def _groups(self, split: str, result: dict, columns: list[str] | None = None) -> dict[str, dict]:
        """`tasks.groups.group_metrics` of each `task.stratify` column (or of `columns`) on an
        evaluation's results, each clip's group read from its own index row."""
        rows = [self.splits[split].rows[i] for i in result["index"]]
        return {
            column: group_metrics(self.task, result["scores"], result["targets"], [row[column] for row in rows])
            for column in (self.config.task.stratify if columns is None else columns)
        }

    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """Loss, metrics and predictions of the current model on a split (full clips, no augmentation).
        Clips are evaluated by length: scores[k] and targets[k] are those of the split's row index[k]."""
        self.model.eval()
        data = self._dataset(split, train=False)
        order = eval_batches(data.split.lengths(), self.config.training.eval_batch_size)
        batches = loader(data, order, self.model.min_frames)
        outputs, targets = [], []
        for x, lengths, target in batches:
            outputs.append(self.model(x.to(self.device), lengths.to(self.device)).float().cpu())
            targets.append(target)
        outputs, targets = torch.cat(outputs), torch.cat(targets)
        scores = self.task.scores(outputs).numpy()
        return {
            "loss": float(self.task.loss(outputs, targets, train=False)),
            "metrics": self.task.metrics(scores, targets.numpy()),
            "scores": scores,
            "targets": targets.numpy(),
            "index": np.array([i for batch in order for i in batch], dtype=np.int64),
        }

    def _same_config(self) -> bool:
        """Whether the run dir holds this config's run (False: it holds no config.yaml). A config.yaml
        of another run, or one that is no tympan config, is refused and left untouched."""
        saved = self.run_dir / "config.yaml"
        if not saved.is_file():
            return False
        try:
            raw = yaml.safe_load(saved.read_text(encoding="utf-8"))
            other = configuration.parse(raw, str(saved)) if isinstance(raw, dict) else None
        except (TympanError, yaml.YAMLError, UnicodeDecodeError):
            other = None
        if other is None:
            raise DataError(
                f"{saved} is not the config of a tympan run; choose another run directory (it was left as is)"
            )
        if other.run_id() != self.config.run_id():
            raise DataError(f"{self.run_dir} holds a run of another config; choose another run directory")
        return True

    def _finish(self, history: list[dict]) -> dict:
        best = self.checkpoints.load_best()
        summary: dict = {
            "task": self.task.summary(),
            "run": {
                "id": self.config.run_id(),
                "best_epoch": int(best["epoch"]),
                "best_step": int(best["step"]),
                "epochs": history[-1]["epoch"],
                "steps": history[-1]["step"],
                # float kernels and thread counts move the last digits: say which case a rerun is in
                "machine": {**cpu.machine(), "device": str(self.device)},
            },
        }
        groups: dict[str, dict] = {}  # per split, per stratify column
        for split in ("dev", "test"):
            if not len(self.splits[split]):
                log.warning("the %s split is empty: no %s results", split, split)
                summary[split] = {}
                continue
            result = self.evaluate(split)
            if split == "dev":  # e.g. multi-label thresholds, fitted on dev before test is seen
                self.task.tune(result["scores"], result["targets"])
                result["metrics"] = self.task.metrics(result["scores"], result["targets"])
            summary[split] = result["metrics"]
            if self.task.tracking_metric == "loss":  # what the best state was picked on, where rankings read it
                summary[split]["loss"] = result["loss"]
            if self.config.task.stratify:
                groups[split] = self._groups(split, result)
                for column, found in groups[split].items():
                    summary[split].update(worst_values(found, column))
            self.task.plots(result["scores"], result["targets"], self.run_dir / "plots", split)
        if groups:
            summary["groups"] = groups
        metrics = {k: v for k, v in summary.items() if k in ("dev", "test")}
        bundle.save(
            self.run_dir / "bundle",
            self.model,
            self.config,
            self.pipeline,
            self.task,
            self.model_args,
            self.meta,
            metrics,
        )
        write_json(self.run_dir / "summary.json", summary)
        return summary


def train(config: Config, features_dir: Path, run_dir: Path) -> dict:
    return Trainer(config, features_dir, run_dir).fit()
