"""Compare many runs: a table of every run, aggregation over seeds (or any keys), the best run
per group, overlaid training curves. Reads only what runs wrote, so it works on a grid that is
still running: unfinished runs are listed with their status and left out of the aggregates."""

from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path

import yaml

from tympan.errors import DataError
from tympan.fileio import write_csv, write_text
from tympan.registry import flatten, metric_values

IGNORED_KEYS = ("experiment", "training.progress", "training.num_workers", "tracking.")


def status(run_dir: Path) -> str:
    """finished, running (its process is alive), or stopped (killed, crashed or interrupted)."""
    if (run_dir / "summary.json").is_file():
        return "finished"
    pid_file = run_dir / "running.pid"
    if pid_file.is_file():
        try:
            os.kill(int(pid_file.read_text()), 0)
            return "running"
        except (OSError, ValueError):
            pass
    return "stopped"


def find_runs(root: str | Path) -> list[Path]:
    return sorted(p.parent for p in Path(root).rglob("config.yaml") if p.parent.name != "bundle")


def load_run(run_dir: Path) -> dict:
    """One row: run dir, status, the flattened config, and dev/test metrics of the best state."""
    config = flatten(yaml.safe_load((run_dir / "config.yaml").read_text()))
    row = {"run": str(run_dir), "status": status(run_dir), "config": config, "metrics": {}, "history": []}
    if (run_dir / "metrics.csv").is_file():
        with open(run_dir / "metrics.csv", newline="") as f:
            row["history"] = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    if row["status"] == "finished":
        summary = json.loads((run_dir / "summary.json").read_text())
        row["metrics"] = metric_values(summary)
        row["best_epoch"] = summary.get("run", {}).get("best_epoch")
    return row


def varying_keys(runs: list[dict]) -> list[str]:
    """Config keys whose values differ between runs: what a comparison is about."""
    keys = sorted({k for r in runs for k in r["config"]})
    keys = [k for k in keys if not k.startswith(IGNORED_KEYS)]
    return [k for k in keys if len({r["config"].get(k) for r in runs}) > 1]


def aggregate(runs: list[dict], by: list[str]) -> list[dict]:
    """Mean and standard deviation of every metric over the finished runs of each group."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        if run["status"] == "finished":
            groups.setdefault(tuple(run["config"].get(k) for k in by), []).append(run)
    rows = []
    for values, members in groups.items():
        row = dict(zip(by, values, strict=True))
        row["runs"] = len(members)
        for metric in sorted({m for r in members for m in r["metrics"]}):
            scores = [r["metrics"][metric] for r in members if metric in r["metrics"]]
            row[f"{metric} mean"] = statistics.fmean(scores)
            row[f"{metric} std"] = statistics.stdev(scores) if len(scores) > 1 else 0.0
        rows.append(row)
    return rows


def best_per_group(runs: list[dict], by: list[str], metric: str) -> list[dict]:
    best: dict[tuple, dict] = {}
    for run in runs:
        if metric not in run["metrics"]:
            continue
        key = tuple(run["config"].get(k) for k in by)
        if key not in best or run["metrics"][metric] > best[key]["metrics"][metric]:
            best[key] = run
    return [
        {**dict(zip(by, key, strict=True)), "run": r["run"], metric: r["metrics"][metric]} for key, r in best.items()
    ]


def _markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "_none_\n"
    columns = list(dict.fromkeys(k for r in rows for k in r))

    def cell(value):
        return f"{value:.4f}" if isinstance(value, float) else str(value if value is not None else "")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _curves(runs: list[dict], keys: list[str], metric: str, path: Path) -> None:
    from tympan.plots import overlaid_curves

    column = f"dev_{metric}"
    series = {
        ", ".join(f"{k}={r['config'].get(k)}" for k in keys) or r["run"]: (
            [h["epoch"] for h in r["history"] if column in h],
            [h[column] for h in r["history"] if column in h],
        )
        for r in runs
        if r["history"]
    }
    overlaid_curves(series, f"dev {metric}", path)


def report(root: str | Path, by: list[str] | None = None, metric: str = "dev.accuracy") -> Path:
    """Write `<root>/report/`: runs.csv, groups.csv, best.csv, report.md and curves.png."""
    root = Path(root)
    runs = [load_run(r) for r in find_runs(root)]
    if not runs:
        raise DataError(f"{root}: no runs (no */config.yaml below it)")
    keys = varying_keys(runs)
    by = [k for k in keys if k != "seed"] if by is None else list(by)
    out = root / "report"
    table = [
        {
            "run": r["run"],
            "status": r["status"],
            **{k: r["config"].get(k) for k in keys},
            "best_epoch": r.get("best_epoch"),
            **r["metrics"],
        }
        for r in runs
    ]
    groups = aggregate(runs, by)
    best = best_per_group(runs, by, metric)
    write_csv(out / "runs.csv", table, list(dict.fromkeys(k for r in table for k in r)))
    write_csv(out / "groups.csv", groups, list(dict.fromkeys(k for r in groups for k in r)) or ["runs"])
    write_csv(out / "best.csv", best, list(dict.fromkeys(k for r in best for k in r)) or ["run"])
    _curves(runs, keys, metric.split(".", 1)[1], out / "curves.png")
    finished = sum(r["status"] == "finished" for r in runs)
    confusions = [r for r in runs if (Path(r["run"]) / "plots/confusion_dev.png").is_file()]
    text = [
        f"# Runs in {root}\n",
        f"{len(runs)} runs, {finished} finished; compared on {', '.join(keys) or 'nothing (one config)'}.\n",
        f"## Mean ± std over {', '.join(k for k in keys if k not in by) or 'runs'}, "
        f"grouped by {', '.join(by) or 'nothing'}\n",
        _markdown_table(groups),
        f"## Best run per group ({metric})\n",
        _markdown_table(best),
        "## All runs\n",
        _markdown_table(table),
        "## Training curves\n",
        "![dev curves](curves.png)\n",
        "## Confusion matrices (dev)\n",
        *[f"- {r['run']}: ![]({Path(r['run']).resolve() / 'plots/confusion_dev.png'})\n" for r in confusions],
    ]
    write_text(out / "report.md", "\n".join(text))
    return out
