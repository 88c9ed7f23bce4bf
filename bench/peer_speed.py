"""tympan against autrainer 0.10.0 on autrainer's own FSDD configuration, like for like.

The configuration is the experiment preset `autrainer-cnn10-fsdd`: Cnn10 from scratch on PANN
16 kHz log-Mels standardised with the train split's mean and standard deviation (autrainer's
Standardizer), clips cropped to at most 1 s, Adam 1e-3, batch 32, 5 epochs, CPU. This script
trains it once per seed (default 1, 2, 3) and prints each run's wall time and best dev accuracy,
then their mean +- standard deviation, beside autrainer's figures on this machine class
(641 s and dev accuracy 0.528, from the project's issue tracker; autrainer pads every clip to
1 s). With --unbucketed it also times seed 1 without length bucketing (every batch padded to its
longest clip, as a fixed-length pipeline does).

    python bench/peer_speed.py [--seeds 1 2 3] [--unbucketed]

Fetches and preprocesses FSDD first if needed (set TYMPAN_DATA_MIRROR without internet).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

from tympan import config as configuration
from tympan import stages

AUTRAINER_SECONDS = 641.0
AUTRAINER_DEV_ACCURACY = 0.528
PRESET = "autrainer-cnn10-fsdd"


def timed_run(seed: int, bucketing: bool = True) -> tuple[float, float]:
    """Wall seconds of training and evaluation, and the best dev accuracy."""
    overrides = {"seed": seed, "training.bucketing": bucketing, "training.progress": False}
    config = configuration.load(PRESET, overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        _, summary = stages.train(config, run_dir)
        return time.perf_counter() - started, summary["dev"]["accuracy"]


def spread(values: list[float]) -> str:
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} +- {deviation:.3f}"


def row(label: str, seconds: float, accuracy: float) -> None:
    print(f"{label:34}{seconds:9.1f}{seconds / AUTRAINER_SECONDS:13.2f}x{accuracy:14.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--unbucketed", action="store_true", help="also time seed 1 without length bucketing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    config = configuration.load(PRESET, {"training.progress": False})
    stages.fetch(config)
    stages.preprocess(config)

    print(f"\n{'':34}{'wall s':>9}{'vs autrainer':>14}{'best dev acc':>14}")
    row("autrainer 0.10.0 (reference)", AUTRAINER_SECONDS, AUTRAINER_DEV_ACCURACY)
    times, accuracies = [], []
    for seed in args.seeds:
        seconds, accuracy = timed_run(seed)
        times.append(seconds)
        accuracies.append(accuracy)
        row(f"tympan, seed {seed}", seconds, accuracy)
    print(f"{f'tympan, seeds {args.seeds}':34}{statistics.mean(times):9.1f}"
          f"{statistics.mean(times) / AUTRAINER_SECONDS:13.2f}x   {spread(accuracies)}")  # fmt: skip
    if args.unbucketed:
        seconds, accuracy = timed_run(args.seeds[0], bucketing=False)
        row(f"tympan, seed {args.seeds[0]}, unbucketed", seconds, accuracy)
    print("(wall time of training and evaluation; features extracted once beforehand; time target <= 0.50x)")


if __name__ == "__main__":
    main()
