"""Inference over files and folders with a bundle: one row per file (and per window with
sliding windows), embeddings beside the table, unreadable files reported and skipped."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tympan import audio
from tympan.bundle import Prediction, Predictor
from tympan.errors import AudioError, DataError
from tympan.fileio import atomic_path, write_csv, write_json
from tympan.progress import bar

log = logging.getLogger("tympan")
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus"}


def find_audio(paths: list[str | Path]) -> list[Path]:
    """Files as given, and the audio files under each directory (sorted, recursive)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            found.append(path)  # a missing file is reported when it is read
    return found


@dataclass
class Results:
    rows: list[dict] = field(default_factory=list)
    columns: set[str] = field(default_factory=set)  # the per-column outputs' table columns (prob_<class>)
    embeddings: list[np.ndarray] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _row(predictor: Predictor, file: Path, prediction: Prediction, window: str | None, span: tuple) -> dict:
    """Columns: file, [window (its number, or `mean` for the file's aggregate), start, end],
    then the task's outputs in table form (e.g. label, one probability column per class)."""
    row: dict = {"file": str(file)}
    if window is not None:
        row["window"], row["start"], row["end"] = window, round(span[0], 3), round(span[1], 3)
    row.update(predictor.as_row(prediction))
    return row


def run(
    predictor: Predictor,
    paths: list[str | Path],
    window: float | None = None,
    hop: float | None = None,
    embeddings: bool = False,
    progress: bool = True,
) -> Results:
    """Predict every file; with `window`, one row per window plus a `mean` row per file."""
    columns = {f"{o.prefix}{c}" for o in predictor.outputs() if o.columns for c in o.columns}
    results = Results(columns=columns)
    files = find_audio(paths)
    if not files:
        raise DataError(f"no audio files in {', '.join(map(str, paths))}")
    for file in bar(files, progress, desc="inference", unit="file"):
        try:
            outputs = _predict_file(predictor, file, window, hop, embeddings)
        except (AudioError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, AudioError) else str(exc)
            log.warning("skipped %s: %s", file, reason)
            results.failed.append((str(file), reason))
            continue
        for name, span, prediction in outputs:
            row = _row(predictor, file, prediction, name, span)
            results.rows.append(row)
            if embeddings:
                results.embeddings.append(prediction.embedding)
    return results


def _predict_file(predictor: Predictor, file: Path, window, hop, embeddings: bool) -> list[tuple]:
    """(window name, span, prediction) of one file; a prediction that is not a number is a
    ValueError, so that it is reported as a failure and never as a normal row."""
    samples, rate = audio.load(file)
    duration = (0.0, len(samples) / rate)
    if window is None:
        outputs = [(None, duration, predictor.predict(samples, rate, embeddings))]
    else:
        spans, windows, mean = predictor.predict_windows(samples, rate, window, hop or window, embeddings)
        outputs = [(str(i), span, p) for i, (span, p) in enumerate(zip(spans, windows, strict=True))]
        outputs.append(("mean", duration, mean))
    if not all(np.isfinite(p.scores).all() for _, _, p in outputs):
        raise ValueError("non-finite output (NaN or infinite scores; is the audio level sane?)")
    return outputs


def write(results: Results, output: str | Path) -> list[Path]:
    """Write the table as .csv or .json, and embeddings as `<output stem>.embeddings.npy`
    (row i of the array belongs to row i of the table)."""
    output = Path(output)
    written = [output]
    if output.suffix == ".json":
        failed = [{"file": file, "error": error} for file, error in results.failed]
        write_json(output, {"predictions": results.rows, "failed": failed})
    elif output.suffix == ".csv":
        write_csv(output, results.rows)
    else:
        raise DataError(f"{output}: the output must end in .csv or .json")
    if results.embeddings:
        path = output.with_name(f"{output.stem}.embeddings.npy")
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, np.stack(results.embeddings))
        written.append(path)
    return written


_PLACE = ("file", "window", "start", "end")


def to_text(results: Results) -> str:
    """A compact table for the terminal when no output file is given: each file (and window) with
    its one-value outputs (a label, a label set, regression values), not the per-class columns."""
    lines = []
    for row in results.rows:
        where = f" [{row['window']}: {row['start']}-{row['end']} s]" if "window" in row else ""
        values = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                  if k not in _PLACE and k not in results.columns]  # fmt: skip
        lines.append("\t".join([f"{row['file']}{where}", *values]))
    return "\n".join(lines)
