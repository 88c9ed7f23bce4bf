"""What a fetch found: each file's duration, sample rate and channels, and the data report.

At fetch time every index row gets the columns `duration` (seconds), `sample_rate` (Hz) and
`channels`, read from its file's header alone (no samples are decoded), one file at a time. A
file whose header cannot be read (empty, not audio, no frames) is unreadable: with the dataset
block's `on_unreadable: raise` that is a DataError naming it; with `skip` it stays in the index
with those three columns empty, for preprocessing to skip and report, as an empty file always did.

The data report sums the index up per split: files and total duration, sample rates and channel
counts, the class balance (classification: files per class; multi-label: files with each class) or
the target ranges (regression: min, mean and max) over every indexed file, and the files that
preprocessing will skip as unreadable (counted, the first few named with their reason). It is
built in the same pass that writes the index, saved beside it as `report-<key>.json` and
`report-<key>.md` (see `copies.report_files`), printed by `tympan fetch` and logged to MLflow
with each training run under `data/`. It holds no timestamps: the same index gives the same
report, so a versioned copy does not change when nothing did.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import soundfile as sf

from tympan.datasets.index import SPLITS, Index
from tympan.errors import DataError

__all__ = ["AUDIO_COLUMNS", "Tally", "header", "markdown", "measure", "text"]

log = logging.getLogger(__name__)

AUDIO_COLUMNS = ("duration", "sample_rate", "channels")
SHOWN_UNREADABLE = 5  # unreadable files a report names (it counts them all)
SHOWN_CLASSES = 12  # printed: up to this many classes as a table; more as one line a split
ONES = ("1", "1.0")  # a multi-label class the row has (as tasks.multilabel reads it)
HEADER_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError, OSError)


# ---------------------------------------------------------------- each file's header


def header(path: Path) -> tuple[str, str, str] | str:
    """The index values (duration in seconds, sample rate, channels) of an audio file, read from
    its header; or, when it has none that soundfile reads, the reason in words."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with sf.SoundFile(path) as f:  # opening reads the header only
            frames, rate, channels = f.frames, f.samplerate, f.channels
    except HEADER_ERRORS as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"cannot read the audio header ({reason.removeprefix(f'Error opening {str(path)!r}: ')})"
    if rate <= 0 or channels <= 0:
        return f"cannot read the audio header (it declares {rate} Hz, {channels} channels)"
    if frames <= 0:
        return "no audio frames"
    return seconds_text(frames / rate), str(rate), str(channels)


def seconds_text(value: float) -> str:
    """Seconds to the microsecond, without trailing zeros: 0.438375, 1, 10.000063."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def measure(index: Index, on_unreadable: str, what: str) -> dict[str, str]:
    """Give every row of `index` (in place) its AUDIO_COLUMNS from its file's header; return the
    unreadable files as {path: reason}. Rows that already have one of those columns (the
    dataset's own) are refused: the measured value would replace it. With `on_unreadable` other
    than "skip", an unreadable file is a DataError naming it (and how many more there are)."""
    unreadable: dict[str, str] = {}
    for row in index:
        clash = [c for c in AUDIO_COLUMNS if c in row]
        if clash:
            raise DataError(
                f"{what}: its index has a column {clash[0]!r}, which fetching fills in itself (each file's "
                f"{', '.join(AUDIO_COLUMNS)} as its header gives them); rename that column"
            )
        info = header(index.path_of(row))
        if isinstance(info, str):
            unreadable[row["path"]] = info
            info = ("", "", "")
        row.update(zip(AUDIO_COLUMNS, info, strict=True))
    if unreadable and on_unreadable != "skip":
        path, reason = next(iter(unreadable.items()))
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise DataError(f"{index.root / path}: {reason}{more}; set dataset.on_unreadable: skip to leave it out")
    if unreadable:
        path, reason = next(iter(unreadable.items()))
        log.warning(
            "%d unreadable file(s), e.g. %s (%s): preprocessing will skip them (on_unreadable: skip)",
            len(unreadable), index.root / path, reason,
        )  # fmt: skip
    return unreadable


# ---------------------------------------------------------------- the report


class _Split:
    """What one split's rows add up to."""

    def __init__(self, kind: str, targets: list[str]):
        self.kind, self.targets = kind, targets
        self.files = 0
        self.seconds = 0.0
        self.shortest = math.inf
        self.longest = 0.0
        self.rates: Counter = Counter()
        self.channels: Counter = Counter()
        self.unreadable = 0
        self.examples: list[dict[str, str]] = []
        self.classes: dict[str, Counter] = {t: Counter() for t in targets}  # classification
        self.positives: Counter = Counter()  # multilabel: files per class
        self.ranges = {t: [math.inf, 0.0, -math.inf, 0, 0] for t in targets}  # min, sum, max, count, not numbers

    def add(self, row: dict[str, str], reason: str | None, targets: list) -> None:
        """One row; `targets` what its target columns hold, as `Tally.add` reads them once a row."""
        self.files += 1
        if reason is not None:
            self.unreadable += 1
            if len(self.examples) < SHOWN_UNREADABLE:
                self.examples.append({"path": row["path"], "reason": reason})
        elif row.get("duration"):
            seconds = float(row["duration"])
            self.seconds += seconds
            self.shortest, self.longest = min(self.shortest, seconds), max(self.longest, seconds)
            self.rates[int(row["sample_rate"])] += 1
            self.channels[int(row["channels"])] += 1
        if self.kind == "regression":  # (target, number or None)
            for target, number in targets:
                kept = self.ranges[target]
                if number is None:
                    kept[4] += 1
                else:
                    kept[0], kept[1], kept[2] = min(kept[0], number), kept[1] + number, max(kept[2], number)
                    kept[3] += 1
        elif self.kind == "multilabel":  # the classes the row has
            self.positives.update(targets)
        else:  # (target, value)
            for target, value in targets:
                self.classes[target][value] += 1

    def result(self) -> dict:
        out = {
            "files": self.files,
            "duration_s": round(self.seconds, 3),
            "shortest_s": round(self.shortest, 6) if self.shortest != math.inf else None,
            "longest_s": round(self.longest, 6) if self.shortest != math.inf else None,
            "sample_rates": {str(k): v for k, v in sorted(self.rates.items())},
            "channels": {str(k): v for k, v in sorted(self.channels.items())},
            "unreadable": self.unreadable,
            "unreadable_examples": self.examples,
        }
        if self.kind == "regression":
            out["targets"] = {t: _range(*self.ranges[t]) for t in self.targets}
        elif self.kind == "multilabel":
            out["classes"] = {t: self.positives[t] for t in self.targets}
        else:
            out["classes"] = {t: dict(sorted(self.classes[t].items(), key=_class_order)) for t in self.targets}
        return out


def _finite(text: str) -> float | None:
    """A target value as a finite number; None for anything else (counted as not a number)."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _range(low: float, total: float, high: float, count: int, not_numbers: int) -> dict:
    if not count:
        return {"min": None, "mean": None, "max": None, "not_numbers": not_numbers}
    return {"min": low, "mean": round(total / count, 6), "max": high, "not_numbers": not_numbers}


def _class_order(item: tuple[str, int]):
    """Numeric class names in numeric order (2 before 10), then the others alphabetically."""
    name = item[0]
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def task_kind(task: str) -> str:
    """ "regression", "multilabel" or "classification" for a dataset's default task preset."""
    lowered = task.lower().replace("-", "").replace("_", "")
    return "regression" if "regression" in lowered else "multilabel" if "multilabel" in lowered else "classification"


class Tally:
    """The report of index rows added one at a time (`add`), per split and in total."""

    def __init__(self, dataset: str, task: str, targets: list[str]):
        self.dataset, self.kind, self.targets = dataset, task_kind(task), list(targets)
        self.splits = {split: _Split(self.kind, self.targets) for split in SPLITS}
        self.total = _Split(self.kind, self.targets)

    def add(self, row: dict[str, str], reason: str | None = None) -> None:
        """One row; `reason` is why its file is unreadable (None: it was read). Its target columns are
        read once, here, for its split and the total: a multi-label row may have hundreds."""
        if self.kind == "regression":
            targets = [(t, _finite(row.get(t, ""))) for t in self.targets]
        elif self.kind == "multilabel":
            targets = [t for t in self.targets if row.get(t) != "0" and str(row.get(t, "")).strip() in ONES]
        else:
            targets = [(t, row.get(t, "").strip()) for t in self.targets]
        self.splits[row["split"]].add(row, reason, targets)
        self.total.add(row, reason, targets)

    def result(self, index_file: str, block: dict) -> dict:
        return {
            "dataset": self.dataset,
            "index": index_file,
            "block": block,
            "task": self.kind,
            "targets": self.targets,
            "splits": {split: tally.result() for split, tally in self.splits.items()},
            "total": self.total.result(),
        }


# ---------------------------------------------------------------- as text and Markdown


def duration_text(seconds: float) -> str:
    """1 h 02 min, 3 min 40 s, 12.5 s."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{seconds:.1f} s"


def _counts(counts: dict[str, int], unit: str = "") -> str:
    """{"8000": 500} -> "8000 Hz"; several: "16000 Hz (90), 44100 Hz (10)"."""
    if not counts:
        return "-"
    if len(counts) == 1:
        return f"{next(iter(counts))}{unit}"
    return ", ".join(f"{k}{unit} ({v})" for k, v in counts.items())


def _overview(report: dict) -> tuple[list[str], list[list[str]]]:
    header_row = ["split", "files", "duration", "sample rates", "channels", "unreadable"]
    rows = []
    for name, split in [*report["splits"].items(), ("total", report["total"])]:
        rows.append([
            name, str(split["files"]), duration_text(split["duration_s"]),
            _counts(split["sample_rates"], " Hz"), _counts(split["channels"]), str(split["unreadable"]),
        ])  # fmt: skip
    return header_row, rows


def _targets_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Regression: a row per target and split (min, mean, max); classes: a row per class, a
    column per split."""
    splits = [*SPLITS, "total"]
    parts = {**report["splits"], "total": report["total"]}
    if report["task"] == "regression":
        rows = []
        for target in report["targets"]:
            for split in splits:
                found = parts[split]["targets"][target]
                numbers = [_number(found[k]) for k in ("min", "mean", "max")]
                rows.append([target, split, *numbers, str(found["not_numbers"])])
        return ["target", "split", "min", "mean", "max", "not numbers"], rows
    if report["task"] == "multilabel":
        return ["class", *splits], [[c, *(str(parts[s]["classes"][c]) for s in splits)] for c in report["targets"]]
    rows = []
    for target in report["targets"]:
        names = list(parts["total"]["classes"][target])
        prefix = [target] if len(report["targets"]) > 1 else []
        rows += [[*prefix, c, *(str(parts[s]["classes"][target].get(c, 0)) for s in splits)] for c in names]
    return (["target"] if len(report["targets"]) > 1 else []) + ["class", *splits], rows


def _number(value) -> str:
    return "-" if value is None else f"{value:.6g}"


def _aligned(header_row: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header_row, *rows]) for i in range(len(header_row))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header_row, *rows]]


def _markdown_table(header_row: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header_row), "|" + "|".join("---" for _ in header_row) + "|", *map(line, rows)]


def _balance_line(report: dict) -> str:
    what = {"regression": "target ranges", "multilabel": "files per class (multi-label)"}
    return what.get(report["task"], "files per class")


def _class_summary(report: dict) -> list[str]:
    """Many classes, printed: per split how many of all the classes have files, and the fewest and
    most files a class has there."""
    multilabel = report["task"] == "multilabel"
    columns = [""] if multilabel else report["targets"]
    lines = []
    for split, part in [*report["splits"].items(), ("total", report["total"])]:
        if not part["files"]:
            lines.append(f"  {split}: no files")
            continue
        for target in columns:
            names = report["total"]["classes"] if multilabel else report["total"]["classes"][target]
            found = part["classes"] if multilabel else part["classes"][target]
            counts = {name: found.get(name, 0) for name in names}
            fewest, most = min(counts, key=counts.get), max(counts, key=counts.get)
            name = f"{target} " if len(columns) > 1 else ""
            lines.append(
                f"  {split}: {name}{sum(1 for v in counts.values() if v)} of {len(counts)} classes have files; "
                f"fewest {counts[fewest]} ({fewest}), most {counts[most]} ({most})"
            )
    return lines


def text(report: dict) -> str:
    """The report as a compact terminal table (many classes in one line a split)."""
    lines = [f"{report['dataset']}: data report ({report['index']})", *_aligned(*_overview(report))]
    header_row, rows = _targets_table(report)
    lines += ["", f"{_balance_line(report)}:"]
    if report["task"] != "regression" and len(rows) > SHOWN_CLASSES:
        lines += _class_summary(report)
    else:
        lines += ["  " + line for line in _aligned(header_row, rows)]
    lines += _unreadable_lines(report)
    return "\n".join(lines)


def _unreadable_lines(report: dict) -> list[str]:
    if not report["total"]["unreadable"]:
        return []
    lines = ["", f"unreadable files, left out by preprocessing ({report['total']['unreadable']}):"]
    for split, part in report["splits"].items():
        lines += [f"  {split}: {e['path']}: {e['reason']}" for e in part["unreadable_examples"]]
        more = part["unreadable"] - len(part["unreadable_examples"])
        if more > 0:
            lines.append(f"  {split}: and {more} more")
    return lines


def markdown(report: dict) -> str:
    """The report as Markdown: every table in full."""
    lines = [f"# Data report: {report['dataset']}", "", f"Index: `{report['index']}`; task: {report['task']}.", ""]
    lines += _markdown_table(*_overview(report))
    lines += ["", f"## {_balance_line(report).capitalize()}", "", *_markdown_table(*_targets_table(report))]
    if report["total"]["unreadable"]:
        lines += ["", "## Unreadable files", ""]
        lines += _markdown_table(
            ["split", "file", "reason"],
            [[s, e["path"], e["reason"]] for s, p in report["splits"].items() for e in p["unreadable_examples"]],
        )
        lines += ["", f"{report['total']['unreadable']} in all; preprocessing leaves them out (on_unreadable: skip)."]
    return "\n".join(lines) + "\n"
