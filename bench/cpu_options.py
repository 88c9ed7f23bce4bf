"""What each CPU speed option pays for one config's training step, measured side by side.

For the config (default: the autrainer peer preset, Cnn10 on 16 kHz PANN log-Mels, batch 32), it
takes the first batches of an epoch as training draws them and times the same optimizer steps on
them under each option, from the same initial weights, in interleaved rounds so that other load
hits every option alike:

  fp32            the default
  channels-last   conv weights and activations in NHWC (oneDNN's preferred layout on CPU)
  bf16            bf16 autocast (fast only where the CPU has AVX512-BF16 or AMX)
  1 thread        torch.set_num_threads(1) instead of every CPU given
  compile         torch.compile of the model (--compile; batches of other lengths recompile)

It prints each option's median step time and its speed against fp32, the floating-point work of
one fp32 step (torch's FLOP counter) and the rate reached, and one dev evaluation's time against an
epoch's steps (evaluation's share of a run).

    python bench/cpu_options.py [--config autrainer-cnn10-fsdd] [--batches 6] [--rounds 3] [--compile]

Needs the features of that config (`tympan fetch` and `tympan preprocess` with it).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from tympan import config as configuration
from tympan import cpu, stages
from tympan.data import loader
from tympan.store import store_dir
from tympan.training import Trainer


def options(trainer: Trainer, compiled: bool) -> dict:
    """Each option: a context that sets it up on the trainer and undoes it."""
    model = trainer.model

    def fp32():
        return None

    def channels_last():
        trainer.model = model.to(memory_format=torch.channels_last)
        return lambda: setattr(trainer, "model", model.to(memory_format=torch.contiguous_format))

    def bf16():
        trainer.amp_dtype = torch.bfloat16
        return lambda: setattr(trainer, "amp_dtype", None)

    def one_thread():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        return lambda: torch.set_num_threads(threads)

    def compile_():
        trainer.model = torch.compile(model)
        return lambda: setattr(trainer, "model", model)

    found = {"fp32": fp32, "channels-last": channels_last, "bf16": bf16, "1 thread": one_thread}
    return {**found, "compile": compile_} if compiled else found


def timed_steps(trainer: Trainer, batches: list, state) -> list[float]:
    """Seconds of each optimizer step on `batches`, from the weights and optimizer `state`."""
    trainer.model.load_state_dict(state[0])
    trainer.optimizer.load_state_dict(state[1])
    trainer.model.train()
    seconds = []
    for x, lengths, targets in batches:
        started = time.perf_counter()
        trainer._train_step(x, lengths, targets)
        seconds.append(time.perf_counter() - started)
    return seconds


def step_flops(trainer: Trainer, batch) -> int:
    """Floating-point operations of one fp32 forward and backward (torch's count: 2 per multiply-add)."""
    x, lengths, targets = batch
    with FlopCounterMode(display=False) as counter:
        trainer.task.loss(trainer.model(x, lengths), targets).backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="autrainer-cnn10-fsdd")
    parser.add_argument("--batches", type=int, default=6, help="steps timed per option and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also torch.compile (minutes of compiling)")
    args = parser.parse_args()

    config = configuration.load(args.config, {"training.progress": False})
    cpu.configure(config.training.threads)
    features = store_dir(config, stages.dataset_of(config).name)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, features, run_dir)
        trainer.train_data.epoch = trainer.sampler.epoch = 1
        order = list(trainer.sampler)
        batches = list(loader(trainer.train_data, order[: args.batches], trainer.model.min_frames))
        state = copy.deepcopy((trainer.model.state_dict(), trainer.optimizer.state_dict()))
        found = options(trainer, args.compile)
        times: dict[str, list[float]] = {name: [] for name in found}
        for option in found.values():  # warm-up: oneDNN builds its kernels per shape and layout
            undo = option()
            timed_steps(trainer, batches[:2], state)
            undo and undo()
        for _ in range(args.rounds):
            for name, option in found.items():
                undo = option()
                times[name] += timed_steps(trainer, batches, state)
                undo and undo()
        flops = step_flops(trainer, batches[0])
        started = time.perf_counter()
        trainer.evaluate("dev")
        evaluation = time.perf_counter() - started

    base = statistics.median(times["fp32"])
    frames = sum(x.shape[0] * x.shape[1] for x, _, _ in batches) / sum(x.shape[0] for x, _, _ in batches)
    print(f"config: {args.config}  model: {config.model.target}  threads: {torch.get_num_threads()}  "
          f"batch {config.training.batch_size}, {frames:.0f} frames a clip on average")  # fmt: skip
    print(f"{'option':<15}{'median step s':>14}{'speed vs fp32':>15}")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{name:<15}{median:14.3f}{base / median:14.2f}x")
    first = statistics.median(times["fp32"][:: len(batches)])  # the first batch of each round
    print(f"fp32 work: {flops / 1e9:.1f} GFLOP for the first batch, {flops / 1e9 / first:.0f} GFLOP/s reached")
    print(f"one dev evaluation: {evaluation:.1f} s, against {base * len(trainer.sampler):.0f} s of an epoch's "
          f"{len(trainer.sampler)} steps at the median step")  # fmt: skip


if __name__ == "__main__":
    main()
