"""Noise corpora: where the files of a `BackgroundNoise` augmentation come from.

A corpus writes audio files into a folder once: atomically (a killed fetch leaves no folder that
looks complete) and with a settings file, so a folder made with other settings is made again.
`BackgroundNoise(folder=..., source={target: ..., args: ...})` fetches its source into its folder
when it is built, in whatever process trains (CLI, `dvc repro` or a pipeline's training step),
so an experiment that names a corpus runs from its config alone. A folder of your own recordings
(MUSAN, a site's ambience) needs no source.

`ColouredNoise` is generated here, with no download: white, pink and brown noise and mains hum,
each file from its own seeded generator, so the same settings always give the same bytes.
"""

from __future__ import annotations

import abc
import json
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
import numpy as np
import soundfile as sf

from tympan import components
from tympan.components import Checked, NonNegativeInt, PositiveInt
from tympan.fileio import atomic_dir, write_json

SETTINGS = "noise.json"
Colour = Literal["white", "pink", "brown", "hum"]
COLOURS = typing.get_args(Colour)
VERSION = 2  # bump when the signals change, so fetched copies are made again (2: 32-bit PCM, not float)
PEAK = 0.5


class NoiseCorpus(Checked, abc.ABC):
    """A set of noise files that `fetch` writes into a folder once."""

    @abc.abstractmethod
    def settings(self) -> dict:
        """What the files are made from: a folder made with other settings is made again."""

    @abc.abstractmethod
    def write(self, folder: Path) -> None:
        """Write the corpus's audio files into the empty `folder`."""

    def fetch(self, folder: str | Path) -> Path:
        """`folder` holding this corpus (made now unless it already does)."""
        folder = Path(folder)
        if self.complete(folder):
            return folder
        with atomic_dir(folder) as tmp:
            self.write(tmp)
            write_json(tmp / SETTINGS, self.settings())
        return folder

    def complete(self, folder: Path) -> bool:
        try:
            return json.loads((folder / SETTINGS).read_text()) == self.settings()
        except (OSError, ValueError):
            return False


def build_source(source: Any, where: str = "source") -> NoiseCorpus:
    """A corpus from `{target: package.module:Class, args: {...}}`; anything else is a ValueError naming `where`."""
    if not isinstance(source, dict) or not isinstance(source.get("target"), str) or set(source) - {"target", "args"}:
        raise ValueError(f"{where}: expected {{target: package.module:Class, args: {{...}}}}, got {source!r}")
    args = source.get("args") or {}
    if not isinstance(args, dict):
        raise ValueError(f"{where}: args must be a mapping, got {args!r}")
    return components.build(source["target"], args, where=where, kind=NoiseCorpus)


class ColouredNoise(NoiseCorpus):
    """`files` files of `seconds` seconds for each of `colours` at `sample_rate`, peak-normalised
    to 0.5: white (flat spectrum), pink (power falling as 1/f), brown (1/f^2) and hum (50 or 60 Hz
    mains with five harmonics of random level and phase over a faint white floor)."""

    def __init__(
        self,
        colours: Annotated[list[Colour], at.MinLen(1)] = COLOURS,
        files: PositiveInt = 4,
        seconds: Annotated[float, at.Gt(0), at.Le(600)] = 5.0,
        sample_rate: PositiveInt = 16000,
        seed: NonNegativeInt = 0,
    ):
        self.colours, self.files, self.seconds = list(colours), files, float(seconds)
        self.sample_rate, self.seed = sample_rate, seed

    def settings(self) -> dict:
        return {
            "corpus": type(self).__name__,
            "version": VERSION,
            "colours": self.colours,
            "files": self.files,
            "seconds": self.seconds,
            "sample_rate": self.sample_rate,
            "seed": self.seed,
        }

    def write(self, folder: Path) -> None:
        n = round(self.seconds * self.sample_rate)
        for colour in self.colours:
            for i in range(self.files):
                rng = np.random.default_rng([self.seed, COLOURS.index(colour), i])
                samples = render(colour, n, self.sample_rate, rng)
                # 32-bit PCM, not float: libsndfile stamps a float WAV's PEAK chunk with the time
                sf.write(folder / f"{colour}_{i:02d}.wav", samples, self.sample_rate, subtype="PCM_32")


def render(colour: str, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """`n` float32 samples of one colour, peak-normalised to PEAK."""
    if colour == "hum":
        t = np.arange(n) / sample_rate
        mains = rng.choice([50.0, 60.0])
        harmonics = range(1, 6)
        samples = sum(
            rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * k * mains * t + rng.uniform(0, 2 * np.pi)) for k in harmonics
        )
        samples = samples + 0.01 * rng.standard_normal(n)
    else:
        exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[colour]
        spectrum = np.fft.rfft(rng.standard_normal(n))
        frequencies = np.fft.rfftfreq(n, 1 / sample_rate)
        frequencies[0] = frequencies[1] if n > 1 else 1.0  # no infinite gain at DC
        samples = np.fft.irfft(spectrum / frequencies ** (exponent / 2), n)
        samples -= samples.mean()
    peak = float(np.abs(samples).max()) or 1.0
    return (PEAK * samples / peak).astype(np.float32)
