"""How long does a training step of each image backbone take on this machine's CPUs?

Prints, per model preset (default: the image ones) and image shape, the median time of a
forward + backward pass (cross-entropy on 10 classes, train mode) on a batch of random images,
after warm-up steps, with the torch threads tympan would use. FSDD clips (about 0.5 s) give
log-Mel images of about 64 bins x 50 frames, hence the default 64 x 64.

    python bench/image_model_speed.py [--presets TimmMobileNetV3Small ...] [--shapes 1x64x64 3x64x64]
        [--batch 32] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from tympan import cpu
from tympan.config import Component, load_preset

PRESETS = ["TimmMobileNetV3Small", "TorchvisionMobileNetV3Small"]


def step_seconds(model: torch.nn.Module, images: torch.Tensor, repeats: int) -> float:
    """The median seconds of one forward + backward pass over `images`."""
    targets = torch.arange(len(images)) % 10
    times = []
    for i in range(repeats + 2):  # two warm-up passes
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), targets).backward()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument("--shapes", nargs="+", default=["1x64x64", "3x64x64"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    cpu.configure()
    print(f"torch threads: {torch.get_num_threads()}, batch {args.batch}")
    for preset in args.presets:
        component = Component.model_validate(load_preset("models", preset))
        for shape in args.shapes:
            channels, height, width = (int(v) for v in shape.split("x"))
            torch.manual_seed(0)
            model = component.build(n_outputs=10, in_channels=channels).train()
            parameters = sum(p.numel() for p in model.parameters()) / 1e6
            seconds = step_seconds(model, torch.randn(args.batch, channels, height, width), args.repeats)
            print(f"{preset:30s} {shape:>9s}  {parameters:5.2f} M parameters  {1000 * seconds:7.1f} ms/step")


if __name__ == "__main__":
    main()
