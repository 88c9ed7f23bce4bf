"""Does transfer beat training from scratch? FSDD speaker identification (5 speakers, split by take
number: FSDDSpeakers), three ways, seeds 1-3 each:

- speaker-resemblyzer-stored-fsdd: resemblyzer's pretrained LSTM speaker encoder, frozen (its embeddings
  stored by preprocess), + an FFNN;
- speaker-logmel-ffnn-fsdd: the same kind of FFNN on log-Mel statistics (mean and std per bin);
- speaker-smallcnn-fsdd: the small CNN on log-Mels, from scratch.

Prints each run's dev accuracy and training wall time, then mean +- std per experiment. With
`--train-takes 10 12` only those takes train (100 clips, 20 per speaker): the low-data case
where a pretrained encoder should matter most.

    python bench/speaker_transfer.py [--seeds 1 2 3] [--experiments NAME ...] [--train-takes 10 12]

Fetches and preprocesses first if needed (set TYMPAN_DATA_MIRROR without internet).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

from tympan import config as configuration
from tympan import stages
from tympan.config.presets import available_presets

EXPERIMENTS = ("speaker-resemblyzer-stored-fsdd", "speaker-logmel-ffnn-fsdd", "speaker-smallcnn-fsdd")


def overrides(train_takes: list[int] | None) -> dict:
    return {"training.progress": False, **({"dataset.args.train_takes": train_takes} if train_takes else {})}


def run(preset: str, seed: int, train_takes: list[int] | None) -> tuple[float, float]:
    """Training wall seconds (evaluation included) and the best dev accuracy of one seed."""
    config = configuration.load(preset, {"seed": seed, **overrides(train_takes)})
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        _, summary = stages.train(config, run_dir)
        return time.perf_counter() - started, summary["dev"]["accuracy"]


def spread(values: list[float], digits: int = 3) -> str:
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} +- {deviation:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS))
    parser.add_argument("--train-takes", type=int, nargs=2, help="train on takes [start, stop) only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    missing = [e for e in args.experiments if e not in available_presets("experiments")]
    if missing:
        raise SystemExit(f"no experiment preset {', '.join(missing)}")

    results = {}
    print(f"{'experiment':28}{'seed':>5}{'train s':>10}{'dev acc':>10}", flush=True)
    for preset in args.experiments:
        config = configuration.load(preset, overrides(args.train_takes))
        stages.fetch(config)
        started = time.perf_counter()
        stages.preprocess(config)
        print(f"{preset:28}{'prep':>5}{time.perf_counter() - started:10.1f}", flush=True)
        for seed in args.seeds:
            seconds, accuracy = run(preset, seed, args.train_takes)
            results.setdefault(preset, []).append((seconds, accuracy))
            print(f"{preset:28}{seed:5d}{seconds:10.1f}{accuracy:10.3f}", flush=True)
    print(f"\n{'experiment':28}{'train s (mean +- std)':>24}{'dev accuracy (mean +- std)':>30}")
    for preset, rows in results.items():
        times, accuracies = zip(*rows, strict=True)
        print(f"{preset:28}{spread(list(times), 1):>24}{spread(list(accuracies)):>30}")


if __name__ == "__main__":
    main()
