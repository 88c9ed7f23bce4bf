"""Files per second of `tympan preprocess` beside a plain per-file loop and autrainer 0.10.0.

Every clip of the FSDD mirror (`$TYMPAN_DATA_MIRROR/fsdd/recordings`: 2,500 here, 3,000 in the
full set) becomes a 16 kHz PANN log-Mel (preset PannLogMel16k: torchlibrosa, window 512, hop 160,
64 bins, 50-8000 Hz). Each contender is one command, timed by its wall seconds with process
start-up included, as a user waits for it:
  tympan      `tympan preprocess` (worker processes, one packed store per split)
  plain loop  a per-file script as a user would write it: soundfile, torchaudio resampling,
              torchlibrosa Spectrogram + LogmelFilterBank, np.save per file
  autrainer   `autrainer preprocess` of autrainer 0.10.0 with its own log_mel_16k preprocessing,
              on a CSV-indexed dataset of the same files in the same splits (--with-autrainer:
              installed into its own venv under ~/.cache/tympan-bench/ on first use)
Targets: tympan >= 2x the plain loop's files/s and >= 3x autrainer's. A second table leaves
start-up out (tympan's extraction and packing, from its log, beside the plain loop's loop, which
it prints), and a last line says where tympan's time goes: each step's CPU a clip on one thread,
and the start-up of a run that finds its store built. The machine's load average is printed
before each command: other work on it slows every contender, unevenly.

    python bench/preprocess_speed.py [--with-autrainer] [--repeat 3] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import autrainer_peer
import numpy as np
import yaml
from autrainer_peer import AUTRAINER

from tympan import config as configuration
from tympan import cpu, stages
from tympan.store import SPLITS, open_split

TARGETS = {"plain loop": 2.0, f"autrainer {AUTRAINER}": 3.0}

PLAIN_LOOP = '''\
"""PANN log-Mels of every WAV in a folder, one .npy per file."""
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torchlibrosa.stft import LogmelFilterBank, Spectrogram

source, target = Path(sys.argv[1]), Path(sys.argv[2])
target.mkdir(parents=True, exist_ok=True)
spectrogram = Spectrogram(n_fft=512, hop_length=160, win_length=512)
logmel = LogmelFilterBank(sr=16000, n_fft=512, n_mels=64, fmin=50, fmax=8000, top_db=None)
started = time.perf_counter()
for path in sorted(source.glob("*.wav")):
    samples, rate = sf.read(path, dtype="float32")
    waveform = torch.from_numpy(samples)
    if rate != 16000:
        waveform = AF.resample(waveform, rate, 16000)
    with torch.no_grad():
        features = logmel(spectrogram(waveform[None]))[0, 0]
    np.save(target / f"{path.stem}.npy", features.numpy())
print(f"loop {time.perf_counter() - started:.2f} s")
'''


def mirror() -> Path:
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    path = Path(os.environ.get("TYMPAN_DATA_MIRROR") or default).resolve()  # the commands run elsewhere
    if not (path / "fsdd" / "recordings").is_dir():
        sys.exit(f"no FSDD copy at {path}/fsdd/recordings; set TYMPAN_DATA_MIRROR")
    return path


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(command: list[str], cwd: Path, fresh: Path, repeat: int, env: dict | None = None) -> tuple[float, str]:
    """Best wall seconds of `repeat` runs of `command` (each after removing `fresh`, its output) and
    that run's output (stdout and stderr); exits naming the command if it fails."""
    best, output = float("inf"), ""
    for _ in range(repeat):
        shutil.rmtree(fresh, ignore_errors=True)
        print(f"  load average {load()} before: {' '.join(command)}", flush=True)
        started = time.perf_counter()
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
        if seconds < best:
            best, output = seconds, result.stdout + result.stderr
    return best, output


def tympan_workspace(root: Path, data: Path) -> tuple[Path, dict]:
    """A workspace whose exp.yaml takes every FSDD speaker (the preset's splits), fetched."""
    config = {
        "experiment": "preprocess-speed",
        "dataset": {"preset": "FSDD", "root": str(root / "data/raw")},
        "features": {"preset": "PannLogMel16k", "root": str(root / "data/features")},
        "model": "SmallCNN",
        "optimizer": "AdamW",
    }
    (root / "exp.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "TYMPAN_DATA_MIRROR": str(data)}
    subprocess.run([sys.executable, "-m", "tympan.cli", "fetch", "exp.yaml"], cwd=root, env=env, check=True)
    return root, env


def stored_clips(features: Path) -> dict[str, np.ndarray]:
    """tympan's features of every clip, by file stem."""
    store = next(features.glob("fsdd-*"))
    clips = {}
    for split in SPLITS:
        packed = open_split(store, split)
        clips.update({Path(row["path"]).stem: packed.clip(i) for i, row in enumerate(packed.rows)})
    return clips


def agreement(tympan: dict[str, np.ndarray], files: list[Path]) -> str:
    """How another contender's .npy files compare with tympan's store."""
    same, worst = 0, 0.0
    for file in files:
        other = np.load(file).reshape(tympan[file.stem].shape)
        same += int(np.array_equal(other, tympan[file.stem]))
        worst = max(worst, float(np.abs(other - tympan[file.stem]).max()))
    return f"{same}/{len(files)} clips bit-identical to tympan's, largest difference {worst:.2g} dB"


def breakdown(root: Path, env: dict) -> str:
    """Where tympan's time goes: per-clip CPU of each step on one thread (as each worker runs
    it), and the start-up of a `tympan preprocess` that finds its store already there."""
    import torch

    from tympan import audio

    config = configuration.load(str(root / "exp.yaml"))
    pipeline = config.features.pipeline()
    files = sorted((root / "data/raw/fsdd/recordings").glob("*.wav"))
    torch.set_num_threads(1)
    steps = dict.fromkeys(["decode", "resample", "log-Mel", "pack"], 0.0)
    for file in files:
        times = [time.perf_counter()]
        samples, rate = audio.load(file)
        times.append(time.perf_counter())
        samples = audio.resample(samples, rate, pipeline.sample_rate)
        times.append(time.perf_counter())
        features = pipeline.extract(samples)
        times.append(time.perf_counter())
        np.ascontiguousarray(features, dtype=np.float32).tobytes()
        times.append(time.perf_counter())
        for step, start, end in zip(steps, times[:-1], times[1:], strict=True):
            steps[step] += end - start
    per_clip = ", ".join(f"{step} {1000 * seconds / len(files):.2f}" for step, seconds in steps.items())
    command = [sys.executable, "-m", "tympan.cli", "preprocess", "exp.yaml"]
    started = time.perf_counter()
    subprocess.run(command, cwd=root, env=env, capture_output=True, check=True)
    startup = time.perf_counter() - started
    return f"ms a clip on one thread: {per_clip}; start-up (a run that finds its store) {startup:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-autrainer", action="store_true", help=f"also time autrainer {AUTRAINER}")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each command; the best counts")
    parser.add_argument("--workers", type=int, help="tympan's --workers (default: one per CPU given)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/tympan-bench", help="autrainer's venv")
    args = parser.parse_args()

    data = mirror()
    autrainer = autrainer_peer.venv(args.cache) if args.with_autrainer else None
    with tempfile.TemporaryDirectory(prefix="preprocess-speed-") as tmp:
        root, env = tympan_workspace(Path(tmp), data)
        raw = root / "data/raw/fsdd"
        files = sum(1 for _ in (raw / "recordings").glob("*.wav"))
        print(f"\nFSDD: {files} files from {data}; {cpu.cpu_budget()} CPUs\n", flush=True)

        command = [sys.executable, "-m", "tympan.cli", "preprocess", "exp.yaml"]
        command += ["--workers", str(args.workers)] if args.workers else []
        seconds, output = timed(command, root, root / "data/features", args.repeat, env)
        results = {"tympan preprocess": seconds}
        steady = {"tympan preprocess": float(re.search(r"files extracted in ([\d.]+) s", output)[1])}
        tympan_clips = stored_clips(root / "data/features")
        notes = {"where tympan's time goes": breakdown(root, env)}

        (root / "plain_loop.py").write_text(PLAIN_LOOP)
        plain = [sys.executable, "plain_loop.py", str(raw / "recordings"), "plain"]
        results["plain loop"], output = timed(plain, root, root / "plain", args.repeat)
        steady["plain loop"] = float(re.search(r"loop ([\d.]+) s", output)[1])
        notes["plain loop"] = agreement(tympan_clips, sorted((root / "plain").glob("*.npy")))

        if autrainer:
            project = autrainer_peer.project(root / "autrainer", stages.index_of(configuration.load(root / "exp.yaml")))
            out = project / "data/FSDD/log_mel_16k"
            name = f"autrainer {AUTRAINER}"
            results[name] = timed([str(autrainer), "preprocess", "-u", "0"], project, out, args.repeat)[0]
            notes[name] = agreement(tympan_clips, sorted(out.glob("*.npy")))

    print(f"\n{'whole command':20}{'seconds':>9}{'files/s':>9}   tympan is")
    for name, seconds in results.items():
        ratio = "" if name.startswith("tympan") else f"{seconds / results['tympan preprocess']:5.2f}x as fast"
        target = f" (target >= {TARGETS[name]:g}x)" if name in TARGETS else ""
        print(f"{name:20}{seconds:9.1f}{files / seconds:9.0f}   {ratio}{target}")
    print(f"\n{'start-up excluded':20}{'seconds':>9}{'files/s':>9}   tympan is")
    for name, seconds in steady.items():
        ratio = "" if name.startswith("tympan") else f"{seconds / steady['tympan preprocess']:5.2f}x as fast"
        print(f"{name:20}{seconds:9.1f}{files / seconds:9.0f}   {ratio}")
    print("(tympan: its extraction and packing, from its log; plain loop: its loop, as it prints it)\n")
    for name, note in notes.items():
        print(f"{name}: {note}")
    print(f"(best of {args.repeat}; wall time of each command, start-up included; load average now {load()})")


if __name__ == "__main__":
    main()
