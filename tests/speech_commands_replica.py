"""Miniature copies of Speech Commands v0.02 as its main archive lays them out, for the tests.

`write_layout` writes any clips in the corpus's scheme: `<word>/<speaker>_nohash_<take>.wav`
(16-bit PCM, mono, 16 kHz), `validation_list.txt` and `testing_list.txt` listing the clips of the
dev and test speakers (the official lists are by speaker too), and `_background_noise_/*.wav`.

`from_fsdd` makes a copy a model can learn: the words zero..nine are real speech, the spoken
digits of the Free Spoken Digit Dataset (8 kHz, resampled to 16 kHz, padded with silence or cut
to one second), one FSDD speaker per Speech Commands speaker; the corpus's other 25 words, which
its verify insists on, get a few synthetic tones of their own from speakers in no list (train),
and `_background_noise_` one generated noise recording.

Run as a script, it writes such a copy into a data mirror, for running experiments/speech-commands
without the real corpus:

    python -m tests.speech_commands_replica MIRROR    # writes MIRROR/speech_commands/ from the FSDD
                                                      # copy in $TYMPAN_DATA_MIRROR (or ../shared/data)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Collection, Iterable, Mapping
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from tympan.datasets.speech_commands import WORDS

RATE = 16_000
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# the FSDD speakers of a learnable copy: three to train on, an unseen speaker each for dev and test
FSDD_SPLITS = {"train": ("george", "jackson", "lucas"), "dev": ("nicolas",), "test": ("yweweler",)}

Clip = tuple[str, str, int, np.ndarray]  # word, speaker id, take, samples (float, at RATE)


def speaker_id(name: str) -> str:
    """An 8-hex-digit id as the corpus's speakers have (a hash, stable for a name)."""
    return hashlib.sha1(name.encode()).hexdigest()[:8]


def write_layout(
    root: Path, clips: Iterable[Clip], dev: Collection[str], test: Collection[str], noises: Mapping[str, np.ndarray]
) -> Path:
    """Write `clips` and `noises` (file name: samples) in the main archive's layout under `root`;
    the clips of speakers in `dev` and `test` are listed in the validation and testing lists."""
    lists: dict[str, list[str]] = {"validation_list.txt": [], "testing_list.txt": []}
    for word, speaker, take, samples in clips:
        path = f"{word}/{speaker}_nohash_{take}.wav"
        (root / word).mkdir(parents=True, exist_ok=True)
        sf.write(root / path, samples, RATE, subtype="PCM_16")
        if speaker in dev:
            lists["validation_list.txt"].append(path)
        elif speaker in test:
            lists["testing_list.txt"].append(path)
    for name, listed in lists.items():
        (root / name).write_text("".join(f"{path}\n" for path in listed))
    (root / "_background_noise_").mkdir(parents=True, exist_ok=True)
    for name, samples in noises.items():
        sf.write(root / "_background_noise_" / name, samples, RATE, subtype="PCM_16")
    return root


def one_second(samples: np.ndarray, rate: int, rng: np.random.Generator, floor: float = 1e-3) -> np.ndarray:
    """`samples` as one second at RATE: resampled, levelled to a peak of 0.5 (FSDD's speakers are
    recorded 15 dB apart), padded after with silence or cut, over a faint noise floor as the
    corpus's recordings have (digital silence would be -100 dB in a log-Mel, far below any speech)."""
    if rate != RATE:
        common = gcd(RATE, rate)
        samples = resample_poly(samples, RATE // common, rate // common)
    samples = samples[:RATE] * (0.5 / max(float(np.abs(samples).max()), 1e-6))
    out = rng.normal(0.0, floor, RATE)
    out[: len(samples)] += samples
    return np.clip(out, -1.0, 1.0)


def from_fsdd(
    recordings: Path,
    root: Path,
    takes: Mapping[str, int] | None = None,
    splits: Mapping[str, Collection[str]] = FSDD_SPLITS,
    others: int = 1,
) -> Path:
    """A learnable copy under `root` from FSDD's `recordings/` folder: takes 0..n-1 of every digit
    by each speaker of `splits` (n per split from `takes`; by default all 50 for train, 10 for dev
    and 5 for test), and `others` synthetic clips of each other word. Returns `root`."""
    takes = {"train": 50, "dev": 10, "test": 5, **(takes or {})}
    rng = np.random.default_rng(0)
    clips: list[Clip] = []
    for split, speakers in splits.items():
        for speaker in speakers:
            for digit, word in enumerate(DIGITS):
                for take in range(takes[split]):
                    samples, rate = sf.read(recordings / f"{digit}_{speaker}_{take}.wav", dtype="float64")
                    clips.append((word, speaker_id(speaker), take, one_second(samples, rate, rng)))
    time = np.arange(RATE) / RATE
    for n, word in enumerate(w for w in WORDS if w not in DIGITS):
        for take in range(others):
            tone = 0.2 * np.sin(2 * np.pi * (300 + 40 * n) * time) * np.hanning(RATE)
            clips.append((word, speaker_id(f"synthetic-{take}"), take, tone + rng.normal(0, 1e-3, RATE)))
    dev = {speaker_id(s) for s in splits.get("dev", ())}
    test = {speaker_id(s) for s in splits.get("test", ())}
    return write_layout(root, clips, dev, test, {"white_noise.wav": rng.uniform(-0.1, 0.1, 2 * RATE)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mirror", type=Path, help="the data mirror to write speech_commands/ into")
    parser.add_argument("--fsdd", type=Path, help="the folder holding fsdd/recordings (default: the data mirror)")
    args = parser.parse_args(argv)
    default = os.environ.get("TYMPAN_DATA_MIRROR") or Path(__file__).resolve().parents[2] / "shared" / "data"
    fsdd = args.fsdd or Path(default)
    recordings = fsdd / "fsdd" / "recordings"
    target = args.mirror / "speech_commands"
    if not recordings.is_dir():
        print(f"{recordings}: no FSDD recordings (give --fsdd)", file=sys.stderr)
        return 2
    if target.exists():
        print(f"{target}: exists already; remove it first", file=sys.stderr)
        return 2
    print(from_fsdd(recordings, target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
