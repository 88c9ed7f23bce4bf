"""tympan against autrainer 0.10.0 on autrainer's own FSDD configuration.

The configuration is the experiment preset `autrainer-cnn10-fsdd`: Cnn10 from scratch on
PANN 16 kHz log-Mels, clips cropped to at most 1 s, Adam 1e-3, batch 32, seed 1, 5 epochs,
CPU. This script trains it twice in one run, with length bucketing (tympan's default) and
without it (every batch padded to its longest clip, as a fixed-length pipeline does), and
prints wall time and best dev accuracy of each beside autrainer's figures on this machine
class: 834 s and 0.53 at its best epoch (from the project's issue tracker; autrainer pads every
clip to 1 s).

    python bench/peer_speed.py [--skip-unbucketed]

Fetches and preprocesses FSDD first if needed (set TYMPAN_DATA_MIRROR without internet).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

from tympan import config as configuration
from tympan import stages

AUTRAINER_SECONDS = 834.0
AUTRAINER_BEST_DEV_ACCURACY = 0.53


def timed_run(bucketing: bool) -> tuple[float, dict]:
    config = configuration.load("autrainer-cnn10-fsdd", {"training.bucketing": bucketing, "training.progress": False})
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        _, summary = stages.train(config, run_dir)
        return time.perf_counter() - started, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-unbucketed", action="store_true", help="only time tympan's default path")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    config = configuration.load("autrainer-cnn10-fsdd", {"training.progress": False})
    stages.fetch(config)
    stages.preprocess(config)

    rows = [("autrainer 0.10.0 (reference)", AUTRAINER_SECONDS, AUTRAINER_BEST_DEV_ACCURACY)]
    for bucketing in (True, False)[: 1 if args.skip_unbucketed else 2]:
        seconds, summary = timed_run(bucketing)
        label = "tympan, bucketed batches" if bucketing else "tympan, unbucketed batches"
        rows.append((label, seconds, summary["dev"]["accuracy"]))

    print(f"\n{'':32}{'wall s':>9}{'vs autrainer':>14}{'best dev acc':>14}")
    for label, seconds, accuracy in rows:
        print(f"{label:32}{seconds:9.1f}{seconds / AUTRAINER_SECONDS:13.2f}x{accuracy:14.3f}")
    print("(wall time of training and evaluation; features extracted once beforehand; target <= 0.50x)")


if __name__ == "__main__":
    main()
