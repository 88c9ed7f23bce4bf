"""Toy datasets made of tones, chirps and noise bursts, generated on the fly: one per task.

They exist so that every task can train end to end in seconds, in tests and in a first try of
tympan, with no download and no mirror. `download` writes real 16 kHz 16-bit WAV files with
soundfile; everything is drawn from `seed`, each clip from its own generator (seed, split, clip),
so the same settings always give the same bytes. A small model on log-Mel features learns each
of them in a few epochs. A copy holds one set of settings: generating other settings under the
same name is refused (it would change the audio under another config's index), so give such a
block its own `name:`.

- `ToyClassification`: `label` is tone, chirp or noise.
- `ToyMultiLabel`: each clip mixes a non-empty subset of tone, chirp and noise; one 0/1 column each.
- `ToyRegression`: a tone burst in a 1 s clip; `frequency_hz` (200-800) and `duration_ms`
  (200-800) are the targets, in the hundreds so that target scaling matters. Duration, not
  level, so that per-utterance normalisation keeps what is to be predicted.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from tympan.components import NonNegativeInt
from tympan.datasets import copies
from tympan.datasets.base import SPLITS, AudioDataset
from tympan.datasets.table import CopyName
from tympan.fileio import write_json
from tympan.progress import bar

__all__ = ["ToyClassification", "ToyMultiLabel", "ToyRegression"]

SAMPLE_RATE = 16_000
CLASSES = ("tone", "chirp", "noise")
SETTINGS = "toy.json"  # what the files were generated from; other settings mean generate again
FADE_S = 0.01
FLOOR = 0.003  # a faint noise floor under every clip, so no clip is digital silence
VERSION = 1  # bump when the signals change, so fetched copies are generated again


class Toy(AudioDataset):
    """A generated dataset: subclasses `draw` each clip's parameters (targets included) and
    `render` its samples; `prepare` needs only the draws, so indexing never renders audio."""

    def __init__(
        self,
        seed: NonNegativeInt = 0,
        train: NonNegativeInt = 60,
        dev: NonNegativeInt = 20,
        test: NonNegativeInt = 20,
        name: CopyName | None = None,
    ):
        self.seed = seed
        self.counts = {"train": train, "dev": dev, "test": test}
        if name is not None:
            self.name = name  # else the class's own

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        if not args["train"] or not args["dev"]:
            raise ValueError(f"train and dev need clips, got train={args['train']}, dev={args['dev']}")

    @abc.abstractmethod
    def draw(self, rng: np.random.Generator) -> dict:
        """One clip's parameters; its index columns are those named in `targets`."""

    @abc.abstractmethod
    def render(self, clip: dict, rng: np.random.Generator) -> np.ndarray:
        """The clip's float samples in [-1, 1] at SAMPLE_RATE."""

    def mirror(self) -> None:
        return None  # generated here, never taken from the data mirror

    def settings(self) -> dict:
        return {"dataset": type(self).__name__, "version": VERSION, "seed": self.seed, **self.counts}

    def copy_of(self) -> dict:
        """The settings but the version: a copy of an older version is made again (verify fails)."""
        return {k: v for k, v in self.settings().items() if k != "version"}

    def clips(self) -> Iterator[tuple[str, str, dict, np.random.Generator]]:
        """(path, split, parameters, the clip's generator after drawing them) for every clip."""
        for number, split in enumerate(SPLITS):
            for i in range(self.counts[split]):
                rng = np.random.default_rng([self.seed, number, i])
                yield f"{split}/{split}_{i:04d}.wav", split, self.draw(rng), rng

    def download(self, dest: Path) -> None:
        total = sum(self.counts.values())
        for path, _, clip, rng in bar(self.clips(), total=total, desc=f"generate {self.name}", unit="clip"):
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            sf.write(dest / path, self.render(clip, rng), SAMPLE_RATE, subtype="PCM_16", format="WAV")
        write_json(dest / SETTINGS, self.settings())

    def verify(self, dest: Path) -> None:
        copies.check_generated(dest / SETTINGS, self.settings())

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        return [
            {"path": path, "split": split, **{t: str(clip[t]) for t in self.targets}}
            for path, split, clip, _ in self.clips()
        ]


class ToyClassification(Toy):
    """Which of tone, chirp or noise burst a clip (0.5-1 s) holds."""

    name = "toy_classification"
    target_column = "label"
    default_task = "classification"

    def draw(self, rng: np.random.Generator) -> dict:
        return {"label": CLASSES[rng.integers(len(CLASSES))], "seconds": rng.uniform(0.5, 1.0)}

    def render(self, clip: dict, rng: np.random.Generator) -> np.ndarray:
        n = round(clip["seconds"] * SAMPLE_RATE)
        return _mix(n, rng, [_SOURCES[clip["label"]](n, rng)])


class ToyMultiLabel(Toy):
    """Which of tone, chirp and noise a clip (0.5-1 s) mixes; every clip has at least one."""

    name = "toy_multilabel"
    target_column = CLASSES[0]
    targets = list(CLASSES)
    default_task = "multilabel"

    def draw(self, rng: np.random.Generator) -> dict:
        subset = int(rng.integers(1, 2 ** len(CLASSES)))  # a non-empty subset, as bits
        return {name: (subset >> bit) & 1 for bit, name in enumerate(CLASSES)} | {"seconds": rng.uniform(0.5, 1.0)}

    def render(self, clip: dict, rng: np.random.Generator) -> np.ndarray:
        n = round(clip["seconds"] * SAMPLE_RATE)
        return _mix(n, rng, [_SOURCES[name](n, rng) for name in CLASSES if clip[name]])


class ToyRegression(Toy):
    """A tone burst at `frequency_hz` lasting `duration_ms`, somewhere in a 1 s clip."""

    name = "toy_regression"
    target_column = "frequency_hz"
    targets = ["frequency_hz", "duration_ms"]
    default_task = "regression"

    def draw(self, rng: np.random.Generator) -> dict:
        duration = int(rng.integers(200, 801))
        onset = int(rng.integers(0, 1000 - duration + 1))
        return {"frequency_hz": int(rng.integers(200, 801)), "duration_ms": duration, "onset_ms": onset}

    def render(self, clip: dict, rng: np.random.Generator) -> np.ndarray:
        burst = _harmonic(clip["duration_ms"] * SAMPLE_RATE // 1000, rng, clip["frequency_hz"])
        start = clip["onset_ms"] * SAMPLE_RATE // 1000
        placed = np.zeros(SAMPLE_RATE)
        placed[start : start + len(burst)] = burst
        return _mix(SAMPLE_RATE, rng, [placed])


# ---- the signals


def _fade(x: np.ndarray) -> np.ndarray:
    """Raised-cosine edges, so an event starts and stops without a click."""
    k = min(round(FADE_S * SAMPLE_RATE), len(x) // 2)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k))
    x[:k] *= ramp
    x[len(x) - k :] *= ramp[::-1]
    return x


def _tone(n: int, rng: np.random.Generator, frequency: float | None = None) -> np.ndarray:
    """A sine, at `frequency` or at a log-uniform 300-3000 Hz."""
    frequency = frequency or float(np.exp(rng.uniform(np.log(300), np.log(3000))))
    t = np.arange(n) / SAMPLE_RATE
    return _fade(rng.uniform(0.2, 0.4) * np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi)))


def _harmonic(n: int, rng: np.random.Generator, frequency: float) -> np.ndarray:
    """A tone with its first four harmonics: the spacing of their lines on a Mel scale tells the
    fundamental even to a model that pools over frequency (a pure tone only has a position)."""
    t = np.arange(n) / SAMPLE_RATE
    partials = sum(np.sin(2 * np.pi * k * frequency * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5))
    return _fade(rng.uniform(0.15, 0.25) * partials)


def _chirp(n: int, rng: np.random.Generator) -> np.ndarray:
    """A linear sweep between 300-1000 Hz and 2000-6000 Hz, up or down."""
    low, high = rng.uniform(300, 1000), rng.uniform(2000, 6000)
    f0, f1 = (low, high) if rng.random() < 0.5 else (high, low)
    t = np.arange(n) / SAMPLE_RATE
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * n / SAMPLE_RATE))
    return _fade(rng.uniform(0.2, 0.4) * np.sin(phase))


def _noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """A white noise burst, quieter than the tones so that they still stand out in a mix."""
    return _fade(rng.uniform(0.03, 0.1) * rng.standard_normal(n))


_SOURCES = {"tone": _tone, "chirp": _chirp, "noise": _noise}


def _mix(n: int, rng: np.random.Generator, sources: list[np.ndarray]) -> np.ndarray:
    return np.clip(FLOOR * rng.standard_normal(n) + sum(sources), -1.0, 1.0)
