"""How close does training through the real data path come to the model's compute limit, and
how fast do trainings run side by side?

Prints, for one config (default: params.yaml), in one run on one machine:
  - training samples/s through the real path: memory-mapped features, cropping,
    augmentation, normalisation, length-bucketed batching, padding, optimiser step;
  - training samples/s of the same model on random tensors already in memory, in batches of
    exactly the same shapes (the compute limit);
  - their ratio (target: at least 0.9).

With --concurrent N it measures instead each training's steps/s alone (one process, the whole
machine), then N trainings started together in separate processes, each given 1/N of the CPUs
the way Kubernetes pods would be: pinned to its own CPUs (a cpuset), or under a CFS quota of
its own (a CPU limit; needs root and a writable cgroup cpu controller), and with no limits
at all for reference. tympan sizes each process's threads from what it is given; one line per
process ends in `<ratio> of solo` (target: at least 0.4 with two processes).

    python bench/train_speed.py [--config params.yaml] [--epochs 1] [key.path=value ...]
    python bench/train_speed.py --concurrent 2 [--seconds 20] [key.path=value ...]

Needs the features of that config (`tympan fetch` and `tympan preprocess`, or `make run`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from tympan import config as configuration
from tympan import cpu, stages
from tympan.data import loader
from tympan.store import store_dir
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


def epoch_batches(trainer: Trainer, epoch: int):
    """The training batches of one epoch, as Trainer._train_epoch draws them (without its evaluation
    and saving)."""
    trainer.model.train()
    trainer.train_data.epoch = trainer.sampler.epoch = epoch
    cfg = trainer.config.training
    return loader(trainer.train_data, list(trainer.sampler), trainer.model.min_frames, cfg.num_workers)


def real_path(trainer: Trainer, epochs: range) -> tuple[float, list[tuple[int, int, int]]]:
    """Samples/s of training epochs as `tympan train` runs them; also the batch shapes."""
    shapes = []
    hook = trainer.model.register_forward_pre_hook(lambda _, inputs: shapes.append(tuple(inputs[0].shape)))
    started = time.perf_counter()
    for epoch in epochs:
        for x, lengths, targets in epoch_batches(trainer, epoch):
            trainer._train_step(x, lengths, targets)
    elapsed = time.perf_counter() - started
    hook.remove()
    return sum(s[0] for s in shapes) / elapsed, shapes


def train_steps(trainer: Trainer, seconds: float | None = None, steps: int | None = None) -> int:
    """Training steps as `tympan train` runs them, epoch after epoch, until `seconds` have passed
    or `steps` are done; returns the steps done."""
    done, epoch, deadline = 0, 1, time.perf_counter() + (seconds or float("inf"))
    while True:
        for x, lengths, targets in epoch_batches(trainer, epoch):
            trainer._train_step(x, lengths, targets)
            done += 1
            if done == steps or time.perf_counter() >= deadline:
                return done
        epoch += 1


def worker(config, seconds: float) -> None:
    """One training process of --concurrent: sizes its threads as `tympan train` does, warms up
    for an epoch, says "ready", waits for "go" on stdin, then trains for `seconds`."""
    threads = cpu.configure(config.training.threads)
    features = store_dir(config, stages.dataset_of(config).name)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, features, run_dir)
        train_steps(trainer, steps=len(trainer.sampler))  # every batch shape once (oneDNN kernels)
        print("ready", flush=True)
        sys.stdin.readline()
        started = time.perf_counter()
        steps = train_steps(trainer, seconds=seconds)
        elapsed = time.perf_counter() - started
    print(json.dumps({"steps_per_s": steps / elapsed, "threads": threads}), flush=True)


@contextlib.contextmanager
def quota_cgroups(count: int, cpus: float):
    """`count` cgroups with a CFS quota of `cpus` CPUs each (v2, else v1); yields their
    `cgroup.procs` files, or raises OSError where cgroups cannot be made here."""
    made = []
    try:
        v2 = Path("/sys/fs/cgroup")
        for n in range(count):
            if (v2 / "cgroup.controllers").is_file():
                directory = v2 / f"tympan-bench-{os.getpid()}-{n}"
                directory.mkdir()
                made.append(directory)
                (directory / "cpu.max").write_text(f"{int(cpus * 100000)} 100000")
            else:
                directory = Path("/sys/fs/cgroup/cpu") / f"tympan-bench-{os.getpid()}-{n}"
                directory.mkdir()
                made.append(directory)
                (directory / "cpu.cfs_period_us").write_text("100000")
                (directory / "cpu.cfs_quota_us").write_text(str(int(cpus * 100000)))
        yield [d / "cgroup.procs" for d in made]
    finally:
        for directory in reversed(made):
            with contextlib.suppress(OSError):
                directory.rmdir()


def run_together(args, placements: list, threads: int | None = None) -> list[dict]:
    """Start one worker per placement (a function run in the child before exec, or None), let
    them all warm up, then start their timed trainings at once; returns their results."""
    command = [sys.executable, __file__, "--worker", "--config", args.config, "--seconds", str(args.seconds)]
    overrides = [*args.overrides, "training.progress=false", "training.device=cpu"]
    if threads:
        overrides.append(f"training.threads={threads}")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    procs = [
        subprocess.Popen(
            [*command, *overrides], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=place
        )
        for place in placements
    ]
    for proc in procs:
        if proc.stdout.readline().strip() != "ready":
            for other in procs:
                other.kill()
            raise SystemExit(f"a worker failed to start (exit {proc.wait()})")
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [json.loads(proc.stdout.readline()) for proc in procs]
    for proc in procs:
        proc.wait()
    return results


def concurrent(args) -> None:
    """Each training's steps/s alone, then `args.concurrent` of them side by side."""
    cpus = sorted(os.sched_getaffinity(0))
    n = args.concurrent
    [solo] = run_together(args, [None])
    print(f"config: {args.config} {' '.join(args.overrides)}  CPUs: {len(cpus)}  timed: {args.seconds:g} s")
    print(f"solo: {solo['steps_per_s']:6.2f} steps/s, threads {solo['threads']}")

    def report(name: str, results: list[dict]) -> None:
        for number, result in enumerate(results, 1):
            ratio = result["steps_per_s"] / solo["steps_per_s"]
            print(
                f"{name}, process {number}: {result['steps_per_s']:6.2f} steps/s, threads {result['threads']}, "
                f"{ratio:.2f} of solo"
            )

    # n disjoint sets of CPUs (one each, round-robin, when there are fewer CPUs than processes)
    share = [cpus[i * len(cpus) // n : (i + 1) * len(cpus) // n] or [cpus[i % len(cpus)]] for i in range(n)]
    report("pinned (own CPUs)", run_together(args, [lambda s=s: os.sched_setaffinity(0, s) for s in share]))
    try:
        with quota_cgroups(n, len(cpus) / n) as procs:
            join = [lambda p=p: p.write_text(str(os.getpid())) for p in procs]
            report(f"quota ({len(cpus) / n:g} CPU each)", run_together(args, join))
            report("quota, host threads (before)", run_together(args, join, threads=len(cpus)))
    except OSError as exc:
        print(f"quota: not measured here ({exc.strerror or exc}: needs root and a writable cgroup cpu controller)")
    report("shared (no limits)", run_together(args, [None] * n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="params.yaml")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--concurrent", type=int, default=0, help="trainings side by side, each against its solo speed")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed window of each --concurrent training")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides, key.path=value")
    args = parser.parse_args()

    overrides = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in args.overrides)}
    if args.concurrent:
        return concurrent(args)
    config = configuration.load(args.config, {**overrides, "training.progress": False})
    if args.worker:
        return worker(config, args.seconds)
    cpu.configure(config.training.threads)
    features = store_dir(config, stages.dataset_of(config).name)
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
