"""Compare many runs: a table of every run, aggregation over seeds (or any keys), the best run
per group, overlaid training curves and confusion matrices summed per group, as CSV, Markdown
and a self-contained HTML page. Reads only what runs wrote, so it works on a grid that is
still running: unfinished runs are listed with their status and left out of the aggregates."""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import statistics
from pathlib import Path

import numpy as np
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


def _unit(runs: list[dict]) -> str:
    """Curves run over steps when any run trains by steps, else over epochs."""
    return "step" if any(r["config"].get("training.steps") not in (None, "None") for r in runs) else "epoch"


def _curves(runs: list[dict], keys: list[str], metric: str, path: Path) -> None:
    from tympan.plots import overlaid_curves

    column, unit = f"dev_{metric}", _unit(runs)
    series = {
        _label(r, keys) or r["run"]: (
            [h[unit] for h in r["history"] if column in h and unit in h],
            [h[column] for h in r["history"] if column in h and unit in h],
        )
        for r in runs
        if r["history"]
    }
    overlaid_curves(series, f"dev {metric}", path, xlabel=unit)


def _label(run: dict, keys: list[str]) -> str:
    return ", ".join(f"{k}={run['config'].get(k)}" for k in keys)


def read_confusion(run_dir: Path, split: str = "dev") -> tuple[list[str], np.ndarray] | None:
    """(labels, counts) of a finished run's confusion matrix, or None where the run has none."""
    path = Path(run_dir) / "plots" / f"confusion_{split}.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    labels = [r["true"] for r in rows]
    return labels, np.array([[int(r[label]) for label in labels] for r in rows])


def summed_confusions(runs: list[dict], by: list[str], out: Path) -> list[dict]:
    """One confusion matrix per group, the counts summed over its finished runs (seeds, say)."""
    from tympan.plots import confusion_matrix

    groups: dict[tuple, list] = {}
    for run in runs:
        found = read_confusion(Path(run["run"])) if run["status"] == "finished" else None
        if found is not None:
            groups.setdefault(tuple(run["config"].get(k) for k in by), []).append(found)
    made = []
    for number, (values, matrices) in enumerate(groups.items(), 1):
        labels = matrices[0][0]
        if any(m[0] != labels for m in matrices):
            continue  # runs on different label sets cannot be summed
        title = ", ".join(f"{k}={v}" for k, v in zip(by, values, strict=True)) or "all runs"
        path = out / f"confusion_{number}.png"
        counts = sum(m[1] for m in matrices)
        confusion_matrix(counts, labels, path, title=f"{title} ({len(matrices)} runs, dev)")
        made.append({"group": title, "runs": len(matrices), "counts": counts, "path": path})
    return made


def _html_table(rows: list[dict]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    columns = list(dict.fromkeys(k for r in rows for k in r))

    def cell(value):
        return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value if value is not None else ""))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}th{background:#f3f3f3}"
    "img{max-width:100%;margin:0.5em}.grid{display:flex;flex-wrap:wrap}"
)


def report(
    root: str | Path, by: list[str] | None = None, metric: str = "dev.accuracy", output: str | Path | None = None
) -> Path:
    """Write runs.csv, groups.csv, best.csv, report.md, report.html, curves.png and one summed
    confusion matrix per group to `output` (default `<root>/report/`)."""
    root = Path(root)
    runs = [load_run(r) for r in find_runs(root)]
    if not runs:
        raise DataError(f"{root}: no runs (no */config.yaml below it)")
    keys = varying_keys(runs)
    by = [k for k in keys if k != "seed"] if by is None else list(by)
    out = Path(output) if output else root / "report"
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
    for stale in out.glob("confusion_*.png"):
        stale.unlink()
    confusions = summed_confusions(runs, by, out)
    finished = sum(r["status"] == "finished" for r in runs)
    title = f"Runs in {root}"
    intro = f"{len(runs)} runs, {finished} finished; compared on {', '.join(keys) or 'nothing (one config)'}."
    over = ", ".join(k for k in keys if k not in by) or "runs"
    groups_title = f"Mean ± std over {over}, grouped by {', '.join(by) or 'nothing'}"
    sections = [
        (groups_title, groups),
        (f"Best run per group ({metric})", best),
        ("All runs", table),
    ]
    markdown = [f"# {title}\n", f"{intro}\n"]
    for heading, rows in sections:
        markdown += [f"## {heading}\n", _markdown_table(rows)]
    markdown += ["## Training curves\n", "![dev curves](curves.png)\n"]
    markdown += ["## Confusion matrices (dev, summed per group)\n"]
    markdown += [f"![{c['group']}]({c['path'].name})\n" for c in confusions] or ["_none yet_\n"]
    write_text(out / "report.md", "\n".join(markdown))
    page = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>"]
    page += [f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"]
    for heading, rows in sections:
        page += [f"<h2>{html.escape(heading)}</h2>", _html_table(rows)]
    page += ["<h2>Training curves</h2>", _img(out / "curves.png", "dev curves")]
    page += ["<h2>Confusion matrices (dev, summed per group)</h2><div class='grid'>"]
    page += [_img(c["path"], c["group"]) for c in confusions] + ["</div>"]
    write_text(out / "report.html", "\n".join(page))
    return out
