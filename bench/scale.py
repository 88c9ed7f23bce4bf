"""Whether fetch and preprocess scale: files per second and peak memory at 10,000 and 100,000 clips.

A synthetic corpus in the table dataset layout is generated once (not timed) in `--root`
(default ~/.cache/tympan-bench/scale, about 3.2 GB for 100,000 clips): one-second 16 kHz 16-bit
mono WAVs, a tone of one of five classes' pitches at its own frequency plus a little noise, below
`clips/<thousands>/`, written read-only, so a fetch hard-links them as it does any read-only
source (no copy is timed). Each size asked gets its own CSV of the first N clips (file, split
8:1:1, label). Generation writes a clip at a time, resumes where it stopped and extends a smaller
corpus; `corpus.json`, written last, says how many clips are complete.

For each size, in a fresh work folder, `tympan fetch` (links the files, reads every header into
the index, writes the data report) and then `tympan preprocess` (the features a config gets by
default, as the default experiment's: PannLogMel16k, into one packed store) run for a table
dataset over that CSV, each in a child process of its own, timed by its wall seconds as a user
waits for it, Python's start-up included. A run of START_UP (100) clips first gives each stage's
fixed cost (start-up, imports, config, worker processes), and `net files/s` leaves it out:
(clips - START_UP) / (seconds - its seconds), the rate that each added file costs. Memory, per stage:
  max RSS     the resident set of the largest single process of the stage's process tree (the
              command or one of its worker processes), exact: the kernel's ru_maxrss from wait4
  tree PSS    the sum of the tree's proportional set sizes (forked workers' shared pages split
              among them, not counted once each), sampled every 0.2 s, so a shorter peak is missed
Targets: net files/s at the largest size >= 0.8x those at the smallest, for each stage (stricter
than the wall figures, where start-up weighs more on the smaller size; their ratio is printed too),
and both memory figures under 2 GiB at every size; a miss exits non-zero.

    python bench/scale.py [--sizes 10000 100000] [--root DIR] [--workers N] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from tympan.config.load import DEFAULTS

RATE = 16000
CLASSES = (220.0, 440.0, 880.0, 1760.0, 3520.0)  # Hz: the tone of each class
CORPUS_VERSION = 1  # change it when a clip's content changes: an older corpus is then made again
SPEED_RATIO = 0.8
MAX_MEMORY = 2 << 30
STAGES = ("fetch", "preprocess")
START_UP = 100  # clips of the run that measures each stage's fixed cost (enough for two preprocess workers)


def clip_path(i: int) -> str:
    return f"clips/{i // 1000:03d}/{i:06d}.wav"


def label_of(i: int) -> int:
    return (i // 10) % len(CLASSES)  # independent of the split (i % 10), so every split has every class


def split_of(i: int) -> str:
    return {8: "dev", 9: "test"}.get(i % 10, "train")


def generate(corpus: Path, clips: int) -> None:
    """Make `corpus` hold at least `clips` clips, a clip at a time; `corpus.json` is written last."""
    settings = corpus / "corpus.json"
    found = json.loads(settings.read_text()) if settings.is_file() else {}
    if found and found.get("version") != CORPUS_VERSION:  # clips of other content: start again
        shutil.rmtree(corpus)
        found = {}
    if found.get("clips", 0) >= clips:
        return
    start = found.get("clips", 0)
    print(f"generating {clips - start} clips in {corpus} (not timed)", flush=True)
    t = np.arange(RATE) / RATE
    for i in range(start, clips):
        path = corpus / clip_path(i)
        if path.is_file():  # a generation that was stopped wrote it completely (tmp, then rename)
            continue
        rng = np.random.default_rng(i)
        frequency = CLASSES[label_of(i)] * (1 + rng.uniform(-0.05, 0.05))
        samples = 0.3 * np.sin(2 * np.pi * frequency * t + rng.uniform(0, np.pi)) + 0.01 * rng.standard_normal(RATE)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        sf.write(tmp, samples.astype(np.float32), RATE, subtype="PCM_16", format="WAV")
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
        if (i + 1) % 10000 == 0:
            print(f"  {i + 1} clips", flush=True)
    settings.write_text(json.dumps({"version": CORPUS_VERSION, "clips": clips, "sample_rate": RATE}) + "\n")


def listing(corpus: Path, clips: int) -> Path:
    """The CSV of the first `clips` clips (written once, a row at a time, then renamed into place)."""
    path = corpus / f"index-{clips}.csv"
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            out = csv.writer(f, lineterminator="\n")
            out.writerow(["file", "split", "label"])
            for i in range(clips):
                out.writerow([clip_path(i), split_of(i), f"tone{label_of(i)}"])
        os.replace(tmp, path)
    return path


def config_for(corpus: Path, csv_file: Path, work: Path) -> Path:
    """A config of the table dataset over `csv_file`, with the features a config gets by default."""
    config = {
        "experiment": "scale",
        "dataset": {
            "preset": "Table",
            "root": str(work / "raw"),
            "args": {"root": str(corpus), "index": str(csv_file), "name": "scale"},
        },
        "features": {**DEFAULTS["features"], "root": str(work / "features")},
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _tree_pss(pid: int) -> int:
    """Bytes of proportional set size of `pid` and all its descendants (0 for those gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) << 10 for line in f if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += map(int, f.read().split())
        except (OSError, StopIteration, ValueError):
            continue
    return total


def measured(command: list[str], cwd: Path, log: Path) -> dict:
    """Run `command`; its wall seconds, CPU seconds, largest process's max RSS and sampled tree PSS."""
    peak, done = [0], threading.Event()
    started = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)

        def sample() -> None:
            while not done.wait(0.2):
                peak[0] = max(peak[0], _tree_pss(child.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)  # its usage includes the workers it waited for
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    if child.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        sys.exit(f"{' '.join(command)} failed ({child.returncode}); the end of {log}:\n" + "\n".join(tail))
    return {
        "seconds": seconds,
        "cpu": usage.ru_utime + usage.ru_stime,
        "max_rss": usage.ru_maxrss << 10,  # KiB on Linux
        "tree_pss": peak[0],
    }


def run_size(corpus: Path, root: Path, clips: int, args, start: dict | None) -> dict[str, dict]:
    """Fetch and preprocess the first `clips` clips in a fresh work folder, each stage measured."""
    work = root / f"work-{clips}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = config_for(corpus, listing(corpus, clips), work)
    base = [sys.executable, "-m", "tympan.cli"]
    commands = {
        "fetch": [*base, "fetch", str(config)],
        "preprocess": [*base, "preprocess", str(config), *(["--workers", str(args.workers)] if args.workers else [])],
    }
    results = {}
    for stage in STAGES:
        results[stage] = {"files": clips, **measured(commands[stage], work, work / f"{stage}.log")}
        print(row(stage, results[stage], start and start[stage]), flush=True)
    if not args.keep:
        shutil.rmtree(work)
    return results


HEADER = (
    f"{'clips':>8}  {'stage':<10}  {'seconds':>8}  {'files/s':>8}  {'net files/s':>11}  {'cpu s':>8}"
    f"  {'max RSS':>9}  {'tree PSS':>9}"
)


def net_rate(r: dict, start: dict) -> float:
    """Files per second of the files beyond the start-up run's, its seconds left out."""
    return (r["files"] - start["files"]) / max(r["seconds"] - start["seconds"], 1e-9)


def row(stage: str, r: dict, start: dict | None) -> str:
    mib = 1 << 20
    net = f"{net_rate(r, start):>11.1f}" if start else f"{'-':>11}"
    return (
        f"{r['files']:>8}  {stage:<10}  {r['seconds']:>8.1f}  {r['files'] / r['seconds']:>8.1f}  {net}"
        f"  {r['cpu']:>8.1f}  {r['max_rss'] / mib:>5.0f} MiB  {r['tree_pss'] / mib:>5.0f} MiB"
    )


def verdicts(results: dict[int, dict[str, dict]]) -> list[tuple[str, bool]]:
    start = results[START_UP]
    small, large = sorted(results)[1], max(results)
    checks = []
    for stage in STAGES:
        a, b, s = results[small][stage], results[large][stage], start[stage]
        wall = (b["files"] / b["seconds"]) / (a["files"] / a["seconds"])
        ratio = net_rate(b, s) / net_rate(a, s)
        text = f"{stage}: net files/s at {large} / at {small} = {ratio:.2f} (>= {SPEED_RATIO}; wall {wall:.2f})"
        checks.append((text, ratio >= SPEED_RATIO))
    peak = max(max(r["max_rss"], r["tree_pss"]) for by_stage in results.values() for r in by_stage.values())
    checks.append((f"peak memory {peak / (1 << 20):.0f} MiB (< {MAX_MEMORY >> 20} MiB)", peak < MAX_MEMORY))
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000], help="corpus sizes in clips")
    parser.add_argument("--root", type=Path, default=Path.home() / ".cache" / "tympan-bench" / "scale")
    parser.add_argument("--workers", type=int, help="preprocess worker processes (default: tympan's, one a CPU)")
    parser.add_argument("--keep", action="store_true", help="keep each size's work folder (fetched copy, store, logs)")
    args = parser.parse_args()
    if len(set(args.sizes)) < 2 or min(args.sizes) <= START_UP:
        parser.error(f"--sizes needs two sizes or more, each above the {START_UP} clips of the start-up run")
    root = args.root.expanduser().resolve()
    corpus = root / "corpus"
    generate(corpus, max(args.sizes))
    print(f"corpus: {corpus}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}\n\n{HEADER}", flush=True)
    results = {START_UP: run_size(corpus, root, START_UP, args, None)}
    for clips in sorted(set(args.sizes)):
        results[clips] = run_size(corpus, root, clips, args, results[START_UP])
    print()
    checks = verdicts(results)
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    sys.exit(0 if all(ok for _, ok in checks) else 1)


if __name__ == "__main__":
    main()
