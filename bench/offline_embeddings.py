"""Do stored embeddings pay? The same frozen backbone (resemblyzer's speaker encoder) and the same
FFNN head on FSDD speaker identification, two ways:

- speaker-resemblyzer-fsdd: the encoder runs inside the model, on every clip of every epoch;
- speaker-resemblyzer-stored-fsdd: `tympan preprocess` runs it once (an offline
  `tympan.transforms.embedding:Embedding`), and the head trains on the stored vectors.

Prints the one-off preprocessing time, then per seed the training wall time per epoch (dev
evaluation included) and the best dev accuracy, and the per-epoch speed-up (the target is >= 10x
with the same accuracy).

    python bench/offline_embeddings.py [--seeds 1 2 3] [--epochs 30]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

from tympan import config as configuration
from tympan import stages

ONLINE, STORED = "speaker-resemblyzer-fsdd", "speaker-resemblyzer-stored-fsdd"


def run(preset: str, seed: int, epochs: int) -> tuple[float, float]:
    """Seconds per epoch (training and dev evaluation) and the best dev accuracy."""
    config = configuration.load(preset, {"seed": seed, "training.epochs": epochs, "training.progress": False})
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        _, summary = stages.train(config, run_dir)
        return (time.perf_counter() - started) / epochs, summary["dev"]["accuracy"]


def spread(values: list[float], digits: int = 3) -> str:
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} +- {deviation:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    for preset in (ONLINE, STORED):
        config = configuration.load(preset, {"training.progress": False})
        stages.fetch(config)
        started = time.perf_counter()
        stages.preprocess(config)
        print(f"{preset}: preprocess {time.perf_counter() - started:.1f} s", flush=True)

    results: dict[str, list[tuple[float, float]]] = {ONLINE: [], STORED: []}
    print(f"\n{'experiment':34}{'seed':>5}{'s/epoch':>10}{'dev acc':>10}", flush=True)
    for seed in args.seeds:
        for preset in (ONLINE, STORED):
            seconds, accuracy = run(preset, seed, args.epochs)
            results[preset].append((seconds, accuracy))
            print(f"{preset:34}{seed:5d}{seconds:10.2f}{accuracy:10.3f}", flush=True)
    print(f"\n{'experiment':34}{'s/epoch':>20}{'dev accuracy':>22}")
    for preset, rows in results.items():
        times, accuracies = zip(*rows, strict=True)
        print(f"{preset:34}{spread(list(times), 2):>20}{spread(list(accuracies)):>22}")
    online = statistics.mean(t for t, _ in results[ONLINE])
    stored = statistics.mean(t for t, _ in results[STORED])
    print(f"per-epoch speed-up of stored embeddings: {online / stored:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
