"""How close does training through the real data path come to the model's compute limit?

Prints, for one config (default: params.yaml), in one run on one machine:
  - training samples/s through the real path: memory-mapped features, cropping,
    augmentation, normalisation, length-bucketed batching, padding, optimiser step;
  - training samples/s of the same model on random tensors already in memory, in batches of
    exactly the same shapes (the compute limit);
  - their ratio (target: at least 0.9).

    python bench/train_speed.py [--config params.yaml] [--epochs 1] [key.path=value ...]

Needs the features of that config (`tympan fetch` and `tympan preprocess`, or `make run`).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch
import yaml

from tympan import config as configuration
from tympan import feature_store, stages
from tympan.data import loader
from tympan.training import Trainer


def compute_limit(trainer: Trainer, shapes: list[tuple[int, int, int]]) -> float:
    """Samples/s of forward, backward and step on random in-memory batches of `shapes`."""
    batches = [(torch.randn(shape), torch.randint(0, trainer.task.n_outputs, (shape[0],))) for shape in shapes]
    model, optimizer = trainer.model, trainer.optimizer
    model.train()
    started = time.perf_counter()
    for features, targets in batches:
        optimizer.zero_grad(set_to_none=True)
        trainer.task.loss(model(features.to(trainer.device)), targets.to(trainer.device)).backward()
        optimizer.step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return sum(s[0] for s in shapes) / (time.perf_counter() - started)


def real_path(trainer: Trainer, epochs: range) -> tuple[float, list[tuple[int, int, int]]]:
    """Samples/s of training epochs as `tympan train` runs them; also the batch shapes."""
    shapes = []
    hook = trainer.model.register_forward_pre_hook(lambda _, inputs: shapes.append(tuple(inputs[0].shape)))
    started = time.perf_counter()
    for epoch in epochs:  # what Trainer._train_epoch does, without its evaluation and saving
        trainer.model.train()
        trainer.train_data.epoch = trainer.sampler.epoch = epoch
        order = list(trainer.sampler)
        for features, targets in loader(
            trainer.train_data, order, trainer.model.min_frames, trainer.config.training.num_workers
        ):
            trainer._train_step(features, targets)
    elapsed = time.perf_counter() - started
    hook.remove()
    return sum(s[0] for s in shapes) / elapsed, shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="params.yaml")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="config overrides, key.path=value")
    args = parser.parse_args()

    overrides = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in args.overrides)}
    config = configuration.load(args.config, {**overrides, "training.progress": False})
    features = feature_store.store_dir(config, stages.dataset_of(config).name)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, features, run_dir)
        # warm-up: one untimed epoch, so that every batch shape has been seen once (oneDNN
        # builds kernels per shape) before either measurement
        real_path(trainer, range(1, 2))
        state = copy.deepcopy((trainer.model.state_dict(), trainer.optimizer.state_dict()))
        real, shapes = real_path(trainer, range(2, 2 + args.epochs))
        trainer.model.load_state_dict(state[0])
        trainer.optimizer.load_state_dict(state[1])
        limit = compute_limit(trainer, shapes)

    frames = sum(s[0] * s[1] for s in shapes) / sum(s[0] for s in shapes)
    print(
        f"config: {args.config} {' '.join(args.overrides)}  model: {config.model.target}  device: {trainer.device}  "
        f"threads: {torch.get_num_threads()}"
    )
    print(f"batches: {len(shapes)}  mean padded frames per clip: {frames:.1f}")
    print(f"real data path : {real:8.1f} training samples/s")
    print(f"compute limit  : {limit:8.1f} training samples/s (random tensors in memory, same shapes)")
    print(f"ratio          : {real / limit:8.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
