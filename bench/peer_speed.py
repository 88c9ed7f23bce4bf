"""tympan against autrainer 0.10.0 itself on the same FSDD configuration, seed for seed.

Both train Cnn10 from scratch for 5 epochs on PANN 16 kHz log-Mels of the same files in the same
splits (the preset `autrainer-cnn10-fsdd`), standardised with the train split's mean and standard
deviation, clips cut to at most 1 s, Adam 1e-3, batch 32, on the CPU. autrainer runs in its own
venv (bench/autrainer_peer.py; installed on first use) with its own `autrainer preprocess` and
`autrainer train`; its project does in its own transforms what the preset does (Standardizer, then
RandomCrop to 101 frames, which zero-pads shorter clips to 1 s). Features are extracted once by
each tool beforehand and not timed.

For each seed the two trainings run one after the other (autrainer, then tympan) so that other
load on the machine hits both alike; the load average before each is printed. The table gives
each run's wall time (the whole command for autrainer, start-up included; `stages.train` for
tympan), the ratio, and the best dev accuracy; then both tools' mean +- standard deviation.

    python bench/peer_speed.py [--seeds 1 2 3] [--epochs 5] [--unbucketed]
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import autrainer_peer
import yaml
from autrainer_peer import AUTRAINER

from tympan import config as configuration
from tympan import stages

PRESET = "autrainer-cnn10-fsdd"
TARGET = 0.3  # tympan's wall time at most this fraction of autrainer's


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def tympan_run(seed: int, epochs: int, bucketing: bool = True) -> tuple[float, float]:
    """Wall seconds of tympan's training and evaluation, and the best dev accuracy."""
    overrides = {"seed": seed, "training.epochs": epochs, "training.bucketing": bucketing, "training.progress": False}
    config = configuration.load(PRESET, overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        _, summary = stages.train(config, run_dir)
        return time.perf_counter() - started, summary["dev"]["accuracy"]


def autrainer_run(command: Path, project: Path, seed: int, epochs: int) -> tuple[float, float]:
    """Wall seconds of `autrainer train` (one run), and its best dev accuracy."""
    config = copy.deepcopy(autrainer_peer.CONFIG)
    config["iterations"] = epochs
    config["hydra"]["sweeper"]["params"]["+seed"] = seed
    (project / "conf/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.perf_counter()
    result = subprocess.run([str(command), "train"], cwd=project, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"autrainer train failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    # <run>/_best/best_results.yaml: each dev metric's best over the epochs; the run's name ends in its seed
    runs = (project / "results").glob(f"*/training/*_{epochs}_*_{seed}/_best/best_results.yaml")
    [best] = [p for p in runs if p.parents[1].name.endswith(f"_{seed}")]
    return seconds, float(yaml.safe_load(best.read_text())["accuracy"])


def spread(values: list[float]) -> str:
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} +- {deviation:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--unbucketed", action="store_true", help="also time tympan without length bucketing")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/tympan-bench", help="autrainer's venv")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    config = configuration.load(PRESET, {"training.progress": False})
    stages.fetch(config)
    stages.preprocess(config)
    command = autrainer_peer.venv(args.cache)
    with tempfile.TemporaryDirectory(prefix="peer-speed-") as tmp:
        dataset = {**autrainer_peer.DATASET, "transform": autrainer_peer.TRAINING_TRANSFORM}
        project = autrainer_peer.project(Path(tmp), stages.index_of(config), dataset=dataset)
        print(f"autrainer {AUTRAINER}: preprocessing FSDD (not timed)", flush=True)
        subprocess.run([str(command), "preprocess", "-u", "0"], cwd=project, capture_output=True, check=True)

        print(f"\n{'seed':>4}{'autrainer s':>13}{'tympan s':>10}{'ratio':>8}{'autrainer acc':>15}{'tympan acc':>12}"
              "   load before each")  # fmt: skip
        runs = {"autrainer": [], "tympan": []}
        for seed in args.seeds:
            loads = [load()]
            runs["autrainer"].append(autrainer_run(command, project, seed, args.epochs))
            loads.append(load())
            runs["tympan"].append(tympan_run(seed, args.epochs))
            (a_s, a_acc), (t_s, t_acc) = runs["autrainer"][-1], runs["tympan"][-1]
            print(f"{seed:4}{a_s:13.1f}{t_s:10.1f}{t_s / a_s:7.2f}x{a_acc:15.3f}{t_acc:12.3f}   {' | '.join(loads)}",
                  flush=True)  # fmt: skip

    a_time = statistics.mean(s for s, _ in runs["autrainer"])
    t_time = statistics.mean(s for s, _ in runs["tympan"])
    print(
        f"{'mean':>4}{a_time:13.1f}{t_time:10.1f}{t_time / a_time:7.2f}x"
        f"   autrainer {spread([a for _, a in runs['autrainer']])}, tympan {spread([a for _, a in runs['tympan']])}"
    )
    print(f"(target: tympan <= {TARGET}x autrainer's wall time; {args.epochs} epochs, seeds {args.seeds})")  # fmt: skip
    if args.unbucketed:
        seconds, accuracy = tympan_run(args.seeds[0], args.epochs, bucketing=False)
        print(f"tympan seed {args.seeds[0]} without length bucketing: {seconds:.1f} s, dev accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
