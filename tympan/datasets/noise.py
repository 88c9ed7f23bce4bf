"""Generated noise as an ordinary dataset: white, pink and brown noise and mains hum.

`ColouredNoise` is fetched like any corpus (`tympan fetch`, or by a `BackgroundNoise` augmentation
whose `source:` names it) into `<root>/<name>/`, with an index whose `label` is the colour. It needs
no download: each file comes from its own seeded generator, so the same settings always give the
same bytes. Any other dataset (a corpus of scenes, your own folder of recordings) serves as a
noise source the same way (`tympan.augmentations.sources`).
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Literal

import annotated_types as at
import numpy as np
import soundfile as sf

from tympan.components import NonNegativeInt, PositiveInt
from tympan.datasets import copies
from tympan.datasets.base import About, AudioDataset
from tympan.datasets.table import CopyName
from tympan.fileio import write_json

__all__ = ["COLOURS", "ColouredNoise", "render"]

SETTINGS = "noise.json"  # what the files were generated from; other settings mean generate again
Colour = Literal["white", "pink", "brown", "hum"]
COLOURS = typing.get_args(Colour)
VERSION = 2  # bump when the signals change, so fetched copies are made again (2: 32-bit PCM, not float)
PEAK = 0.5


class ColouredNoise(AudioDataset):
    """`files` files of `seconds` seconds for each of `colours` at `sample_rate`, peak-normalised
    to 0.5: white (flat spectrum), pink (power falling as 1/f), brown (1/f^2) and hum (50 or 60 Hz
    mains with five harmonics of random level and phase over a faint white floor). Every file is
    in the train split; `label` is its colour."""

    name = "coloured_noise"
    target_column = "label"
    about = About(
        task="noise for augmentation (4 colours)",
        classes=len(COLOURS),
        size="generated: 16 files of 5 s by default",
        license="generated here (no licence needed)",
    )

    def __init__(
        self,
        colours: Annotated[list[Colour], at.MinLen(1)] = COLOURS,
        files: PositiveInt = 4,
        seconds: Annotated[float, at.Gt(0), at.Le(600)] = 5.0,
        sample_rate: PositiveInt = 16000,
        seed: NonNegativeInt = 0,
        name: CopyName | None = None,
    ):
        self.colours, self.files, self.seconds = list(colours), files, float(seconds)
        self.sample_rate, self.seed = sample_rate, seed
        if name is not None:
            self.name = name  # else the class's own

    def mirror(self) -> None:
        return None  # generated here, never taken from the data mirror

    def settings(self) -> dict:
        return {
            "dataset": type(self).__name__,
            "version": VERSION,
            "colours": self.colours,
            "files": self.files,
            "seconds": self.seconds,
            "sample_rate": self.sample_rate,
            "seed": self.seed,
        }

    def copy_of(self) -> dict:
        """The settings but the version: a copy of an older version is made again (verify fails)."""
        return {k: v for k, v in self.settings().items() if k != "version"}

    def clips(self) -> list[tuple[str, str, int]]:
        """(path, colour, number) of every file."""
        return [(f"{colour}_{i:02d}.wav", colour, i) for colour in self.colours for i in range(self.files)]

    def download(self, dest: Path) -> None:
        n = round(self.seconds * self.sample_rate)
        for path, colour, i in self.clips():
            rng = np.random.default_rng([self.seed, COLOURS.index(colour), i])
            # 32-bit PCM, not float: libsndfile stamps a float WAV's PEAK chunk with the time
            sf.write(dest / path, render(colour, n, self.sample_rate, rng), self.sample_rate, subtype="PCM_32")
        write_json(dest / SETTINGS, self.settings())

    def verify(self, dest: Path) -> None:
        copies.check_generated(dest / SETTINGS, self.settings())

    def prepare(self, dest: Path) -> list[dict[str, str]]:
        return [{"path": path, "split": "train", "label": colour} for path, colour, _ in self.clips()]


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
