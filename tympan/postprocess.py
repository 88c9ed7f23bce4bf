"""Compare many runs: a table of every run, aggregation over seeds (or any keys), the best run
per group, overlaid training curves and confusion matrices summed per group, as CSV, Markdown
and a self-contained HTML page. Reads only what runs wrote, so it works on a grid that is
still running: unfinished runs are listed with their status and left out of the aggregates."""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import os
import re
import statistics
from pathlib import Path

import numpy as np
import yaml

from tympan.config import flatten, run_id_of
from tympan.errors import ConfigError, DataError
from tympan.fileio import write_csv, write_text
from tympan.results import (
    SPLITS,
    WORST,
    describe,
    group_metric_name,
    metric_values,
    ranking,
    read_summary,
    tracking,
    worst_name,
)
from tympan.results import best as best_of
from tympan.results import first_line as _first_line

log = logging.getLogger("tympan")

IGNORED_KEYS = ("experiment", "training.progress", "training.num_workers", "training.threads", "tracking.")
# where the data lies, not what it is: a pipeline's copy of a config names its own artifact paths
LOCATION_KEYS = ("dataset.root", "features.root", "features.store")
DATA_KEYS = ("dataset.", "features.")
LABEL_CHARS = 48  # a longer group label is replaced by the run id (or "group N")
LEGEND_ENTRIES = 12


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
    return sorted(p.parent for p in Path(root).rglob("config.yaml") if p.parent.name != "bundle" and p.is_file())


def load_runs(root: str | Path) -> list[dict]:
    """`load_run` of every run below `root`; a run whose files cannot be read (a corrupt
    summary.json, config.yaml or metrics.csv) is left out with a warning naming the file."""
    rows = []
    for run_dir in find_runs(root):
        try:
            rows.append(load_run(run_dir))
        except DataError as exc:
            log.warning("skipped a run: %s", exc)
    return rows


def is_copy(run_dir: Path) -> bool:
    """A copy of a run made by someone else: MLflow's artifacts of a run (<run uuid>/artifacts) or
    the pipeline's collected best run (collect/best)."""
    mlflow = run_dir.name == "artifacts" and re.fullmatch(r"[0-9a-f]{32}", run_dir.parent.name) is not None
    return mlflow or run_dir.parts[-2:] == ("collect", "best")


def _run_id(raw: dict, summary: dict | None) -> str:
    """The id a run is known by wherever its copies lie: the summary's, else that of its resolved
    config (computed from the data, so reading a report never imports a config's targets)."""
    return str(_run_block(summary).get("id") or run_id_of(raw))


def _run_block(summary: dict | None) -> dict:
    run = (summary or {}).get("run")
    return run if isinstance(run, dict) else {}


def _read_config(path: Path) -> tuple[dict, dict[str, str]]:
    """A run's config.yaml as data and flattened; a DataError naming it if it is not a config."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise DataError(f"{path}: not a run's config: expected a YAML mapping, got {type(raw).__name__}")
        return raw, flatten(raw)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, AttributeError, RecursionError) as exc:
        raise DataError(f"{path}: not a readable config ({_first_line(exc)})") from None


def _read_history(path: Path) -> list[dict]:
    """The rows of a run's metrics.csv as numbers; a DataError naming it if they are not."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable metrics table ({_first_line(exc)})") from None


def load_run(run_dir: Path) -> dict:
    """One row: run dir, id, status, the flattened config, and dev/test metrics of the best state.
    A file of the run that cannot be read is a DataError naming it."""
    raw, flat = _read_config(run_dir / "config.yaml")
    row = {"run": str(run_dir), "status": status(run_dir), "config": flat, "metrics": {}, "history": []}
    row["history"] = _read_history(run_dir / "metrics.csv")
    summary = None
    if row["status"] == "finished":
        summary = read_summary(run_dir / "summary.json")
        row["metrics"] = metric_values(summary)
        row["tracking"] = tracking(summary, str(run_dir / "summary.json"))
        row["best_epoch"] = _run_block(summary).get("best_epoch")
        row["headline"] = [str(m) for m in ((summary.get("task") or {}).get("headline") or [])]
        # {split: {column: [group values]}} of a run with task.stratify, whose metrics hold each group's
        groups = summary.get("groups") or {}
        row["groups"] = {
            split: {c: list(found["metrics"]) for c, found in columns.items()} for split, columns in groups.items()
        }
    try:
        row["id"] = _run_id(raw, summary)
    except (TypeError, AttributeError, ValueError) as exc:
        raise DataError(f"{run_dir / 'config.yaml'}: not a run's config ({_first_line(exc)})") from None
    return row


def distinct(runs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(one row per run id, the other copies). The row kept is the most complete directory: a
    finished one, not a copy, with its training state, then the shortest path."""

    def preference(run: dict) -> tuple:
        path = Path(run["run"])
        return run["status"] != "finished", is_copy(path), not (path / "last").is_dir(), len(path.parts), str(path)

    kept: dict[str, dict] = {}
    copies = []
    for run in sorted(runs, key=preference):
        if run["id"] in kept:
            copies.append(run)
        else:
            kept[run["id"]] = run
    return sorted(kept.values(), key=lambda r: r["run"]), copies


def varying_keys(runs: list[dict]) -> list[str]:
    """Config keys whose values differ between runs: what a comparison is about."""
    keys = sorted({k for r in runs for k in r["config"]})
    keys = [k for k in keys if not k.startswith(IGNORED_KEYS) and k not in LOCATION_KEYS]
    return [k for k in keys if len({r["config"].get(k) for r in runs}) > 1]


def _values(run: dict, by: list[str]) -> tuple:
    return tuple(run["config"].get(k) for k in by)


def _short(value) -> str:
    """A config value as a label shows it: the class names of a list of components, else itself."""
    try:
        data = json.loads(value)
    except (TypeError, ValueError):
        return str(value)
    if isinstance(data, list) and all(isinstance(d, dict) and "target" in d for d in data):
        return "+".join(str(d["target"]).rsplit(":", 1)[-1] for d in data) or "none"
    return str(value)


def group_labels(runs: list[dict], by: list[str]) -> dict[tuple, str]:
    """A short label per group: "key=value" for one or two short keys, else the run id of a group
    of one run, else "group N". The runs table maps every label to the full config."""
    members: dict[tuple, list[dict]] = {}
    for run in runs:
        members.setdefault(_values(run, by), []).append(run)
    if not by:
        return {(): "all runs"}
    named = {v: ", ".join(f"{k}={_short(x)}" for k, x in zip(by, v, strict=True)) for v in members}
    if len(by) <= 2 and len(set(named.values())) == len(named) and max(map(len, named.values())) <= LABEL_CHARS:
        return named
    return {v: group[0]["id"] if len(group) == 1 else f"group {n}" for n, (v, group) in enumerate(members.items(), 1)}


def aggregate(runs: list[dict], by: list[str]) -> list[dict]:
    """Mean and standard deviation of every metric over the finished runs of each group."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        if run["status"] == "finished":
            groups.setdefault(_values(run, by), []).append(run)
    rows = []
    for values, members in groups.items():
        row = dict(zip(by, values, strict=True))
        row["runs"] = len(members)
        for metric in sorted({m for r in members for m in r["metrics"]}):
            scores = [r["metrics"][metric] for r in members if metric in r["metrics"]]
            row[f"{metric} mean"] = statistics.fmean(scores)
            row[f"{metric} std"] = statistics.stdev(scores) if len(scores) > 1 else 0.0
        row["group"] = members[0].get("group", "")
        rows.append(row)
    return rows


def best_per_group(runs: list[dict], by: list[str], metric: str, direction: str = "max") -> list[dict]:
    """The best run of each group on `metric` in `direction` (max: highest)."""
    groups: dict[tuple, list] = {}
    for run in runs:
        if metric in run["metrics"]:
            groups.setdefault(_values(run, by), []).append((run, run["metrics"][metric]))
    rows = []
    for key, scored in groups.items():
        run = best_of(scored, direction)[0]
        row = {**dict(zip(by, key, strict=True)), "group": run.get("group", ""), "id": run["id"], "run": run["run"]}
        rows.append({**row, metric: run["metrics"][metric]})
    return rows


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value if value is not None else "")


def _markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "_none_\n"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)).replace("|", "\\|") for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _unit(runs: list[dict]) -> str:
    """Curves run over steps when any run trains by steps, else over epochs."""
    return "step" if any(r["config"].get("training.steps") not in (None, "None") for r in runs) else "epoch"


def _curves(runs: list[dict], metric: str, path: Path) -> None:
    """Dev curves, one line per run, one colour and legend entry per group."""
    from tympan.plots import overlaid_curves

    column, unit = f"dev_{metric}", _unit(runs)
    lines = [
        (
            r["group"],
            [h[unit] for h in r["history"] if column in h and unit in h],
            [h[column] for h in r["history"] if column in h and unit in h],
        )
        for r in runs
        if r["history"]
    ]
    overlaid_curves(lines, f"dev {metric}", path, xlabel=unit, legend_entries=LEGEND_ENTRIES)


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
    names: dict[tuple, str] = {}
    for run in runs:
        found = read_confusion(Path(run["run"])) if run["status"] == "finished" else None
        if found is not None:
            key = _values(run, by)
            groups.setdefault(key, []).append(found)
            names[key] = run.get("group") or ", ".join(f"{k}={v}" for k, v in zip(by, key, strict=True)) or "all runs"
    made = []
    for number, (values, matrices) in enumerate(groups.items(), 1):
        labels = matrices[0][0]
        if any(m[0] != labels for m in matrices):
            continue  # runs on different label sets cannot be summed
        path = out / f"confusion_{number}.png"
        counts = sum(m[1] for m in matrices)
        confusion_matrix(counts, labels, path, title=f"{names[values]} ({len(matrices)} runs, dev)")
        made.append({"group": names[values], "runs": len(matrices), "counts": counts, "path": path})
    return made


def _html_table(rows: list[dict], columns: list[str] | None = None, css: str = "") -> str:
    if not rows:
        return "<p><em>none</em></p>"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table class='{css}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}th{background:#f3f3f3}"
    "table.labels td{text-align:left}img{max-width:100%;margin:0.5em}.grid{display:flex;flex-wrap:wrap}"
    ".warning{background:#fff4e5;border-left:4px solid #e69500;padding:0.5em 1em}"
)


def _check_by(by: list[str], runs: list[dict], keys: list[str]) -> None:
    unknown = [k for k in by if all(k not in r["config"] for r in runs)]
    if unknown:
        raise ConfigError(f"--by {', '.join(unknown)}: no run has this config key; keys that vary: {', '.join(keys)}")


def _keys_text(keys: list[str], none: str) -> str:
    """Keys for a heading: one or two by name, more by count (the labels table has their values)."""
    if len(keys) > 2:
        return f"{len(keys)} keys (values in the labels table)"
    return ", ".join(keys) or none


def _config_text(run: dict, keys: list[str]) -> str:
    return "; ".join(f"{k}={run['config'].get(k)}" for k in keys) or "(the same config)"


def report(
    root: str | Path,
    by: list[str] | None = None,
    metric: str | None = None,
    output: str | Path | None = None,
    direction: str | None = None,
) -> Path:
    """Write runs.csv, groups.csv, best.csv, report.md, report.html, curves.png and one summed
    confusion matrix per group to `output` (default `<root>/report/`).

    The best runs are those best on the runs' tracking metric in its direction (summary.json),
    unless `metric` (and `direction`) name another; see `results.ranking`.

    Each run counts once however many copies of it lie below `root` (the pipeline's and MLflow's):
    runs are told apart by their id. Groups and runs get short labels; the runs table maps each
    label to its directory and the values of every key that varies."""
    root = Path(root)
    runs, copies = distinct(load_runs(root))
    if not runs:
        raise DataError(f"{root}: no runs (no */config.yaml below it)")
    metric, direction = ranking([r["tracking"] for r in runs if "tracking" in r], metric, direction)
    known = sorted({m for r in runs for m in r["metrics"]})
    if known and metric not in known:
        raise ConfigError(f"--metric {metric}: no run has it; they have {', '.join(known)}")
    keys = varying_keys(runs)
    if by is not None:
        _check_by(by, runs, keys)
    by = [k for k in keys if k != "seed"] if by is None else list(by)
    labels = group_labels(runs, by)
    for run in runs:
        run["group"] = labels[_values(run, by)]
    out = Path(output) if output else root / "report"
    table = [
        {
            "id": r["id"],
            "group": r["group"],
            "run": r["run"],
            "status": r["status"],
            **{k: r["config"].get(k) for k in keys},
            "best_epoch": r.get("best_epoch"),
            **r["metrics"],
        }
        for r in runs
    ]
    groups = aggregate(runs, by)
    best = best_per_group(runs, by, metric, direction)
    write_csv(out / "runs.csv", table, list(dict.fromkeys(k for r in table for k in r)))
    write_csv(out / "groups.csv", groups, list(dict.fromkeys(k for r in groups for k in r)) or ["runs"])
    write_csv(out / "best.csv", best, list(dict.fromkeys(k for r in best for k in r)) or ["run"])
    _curves(runs, metric.split(".", 1)[-1], out / "curves.png")
    for stale in [*out.glob("confusion_*.png"), *out.glob("groups_*.png")]:
        stale.unlink()
    confusions = summed_confusions(runs, by, out)
    strata = group_tables(runs, _group_metrics(runs, metric), out)

    finished = sum(r["status"] == "finished" for r in runs)
    intro = f"{len(runs)} runs, {finished} finished; compared on " + (
        f"{len(keys)} keys: {', '.join(keys)}." if keys else "nothing (one config)."
    )
    intro += f" Best runs are ranked on {describe(metric, direction)}; runs.csv and groups.csv hold every metric."
    if copies:
        intro += f" {len(copies)} more directories are copies of these runs (the same run id) and count once."
    notes = _data_warnings(root, keys)
    over = _keys_text([k for k in keys if k not in by], "runs")
    grouped = _keys_text(by, "nothing")
    metrics = _headline(runs, metric)
    spread = [{"group": g["group"], "runs": g["runs"], **_mean_std(g, metrics)} for g in groups]
    sections = [
        (f"Mean ± std over {over}, grouped by {grouped}", spread, ["group", "runs", *metrics]),
        (f"Best run per group, on {describe(metric, direction)}", best, ["group", "id", metric]),
        ("All runs", table, ["id", "group", "status", "best_epoch", *metrics]),
    ]
    legend = [{"id": r["id"], "group": r["group"], "run": r["run"], "config": _config_text(r, keys)} for r in runs]
    page = {"title": f"Runs in {root}", "intro": intro, "notes": notes, "sections": sections, "legend": legend}
    page["strata"] = strata
    write_text(out / "report.md", _markdown(page, confusions))
    write_text(out / "report.html", _html(page, out / "curves.png", confusions))
    return out


def _group_metrics(runs: list[dict], metric: str) -> list[str]:
    """The metrics the per-group tables show: the ranking metric's own (accuracy, for
    dev.accuracy.worst_speaker too), then the runs' tasks' headline metrics."""
    name = metric.split(".", 1)[-1]
    return list(dict.fromkeys([name.rpartition(WORST)[0] or name, *(m for r in runs for m in r.get("headline", []))]))


def group_tables(runs: list[dict], metrics: list[str], out: Path) -> list[dict]:
    """For each `task.stratify` column and metric: a table, a row per set of runs (the report's
    groups) and split, holding the metric of each group value (mean ± std over the set's finished
    runs) and of its worst group; and its plot, `groups_<n>.png`. Metrics no run has are left out."""
    from tympan.plots import group_bars

    finished = [r for r in runs if r["status"] == "finished"]
    sets: dict[str, list[dict]] = {}
    for run in finished:
        sets.setdefault(run["group"], []).append(run)
    columns = dict.fromkeys(c for r in finished for found in r.get("groups", {}).values() for c in found)
    made = []
    for column in columns:
        for metric in metrics:
            table = _group_table(sets, column, metric)
            if table["rows"]:
                table["path"] = out / f"groups_{len(made) + 1}.png"
                group_bars(table.pop("panels"), metric, column, table["path"])
                made.append(table)
    return made


def _group_table(sets: dict[str, list[dict]], column: str, metric: str) -> dict:
    """One column's table of one metric: its rows and columns, and the panels of its plot."""
    rows, panels, shown = [], {}, {}
    for split in SPLITS:
        worst = f"{split}.{worst_name(metric, column)}"
        for label, members in sets.items():
            values = sorted({v for r in members for v in r.get("groups", {}).get(split, {}).get(column, [])})
            scores = _group_scores(members, split, column, values, metric)
            if not scores:
                continue
            panels.setdefault(split, {})[label] = {v: (statistics.fmean(s), _std(s)) for v, s in scores.items()}
            shown.update(dict.fromkeys(scores))
            worsts = [r["metrics"][worst] for r in members if worst in r["metrics"]]
            row = {"runs": label, "split": split, **{v: _mean_std_text(s) for v, s in scores.items()}}
            rows.append({**row, f"worst {column}": _mean_std_text(worsts) if worsts else ""})
    columns = ["runs", "split", *shown, f"worst {column}"]
    return {"heading": f"{metric} per {column}", "rows": rows, "columns": columns, "panels": panels}


def _mean_std_text(scores: list[float]) -> str:
    return f"{statistics.fmean(scores):.4f} ± {_std(scores):.4f}"


def _group_scores(members: list[dict], split: str, column: str, values: list[str], metric: str) -> dict:
    """{group value: [the metric of that group in each run that has it]} of one set of runs."""
    scores = {}
    for value in values:
        name = group_metric_name(split, column, value, metric)
        found = [r["metrics"][name] for r in members if name in r["metrics"]]
        if found:
            scores[value] = found
    return scores


def _std(scores: list[float]) -> float:
    return statistics.stdev(scores) if len(scores) > 1 else 0.0


def _headline(runs: list[dict], metric: str) -> list[str]:
    """The ranking metric on dev and test: what the page's tables show. Tasks report many more
    (per class, per target), which would make the tables too wide to read; the CSVs keep them."""
    name = metric.split(".", 1)[-1]
    candidates = dict.fromkeys((metric, f"dev.{name}", f"test.{name}"))
    return [m for m in candidates if any(m in r["metrics"] for r in runs)]


def _mean_std(group: dict, metrics: list[str]) -> dict[str, str]:
    """ "0.9300 ± 0.0070" per metric: one column each keeps the table narrow."""
    return {m: f"{group[f'{m} mean']:.4f} ± {group[f'{m} std']:.4f}" for m in metrics if f"{m} mean" in group}


def _data_warnings(root: Path, keys: list[str]) -> list[str]:
    """A warning when the runs compared were trained or evaluated on different data or features."""
    data_keys = [k for k in keys if k.startswith(DATA_KEYS)]
    if not data_keys:
        return []
    warning = (
        f"Warning: these runs differ in their data or features ({', '.join(data_keys)}): their metrics "
        "were measured on different inputs and do not compare directly."
    )
    log.warning("%s: %s", root, warning)
    return [warning]


LEGEND_TITLE = "Labels: each run's directory and the values of the keys that vary"
STRATA_TITLE = "Per group (task.stratify): mean ± std over each set's runs"


def _markdown(page: dict, confusions: list[dict]) -> str:
    lines = [f"# {page['title']}\n", f"{page['intro']}\n", *[f"> **{n}**\n" for n in page["notes"]]]
    for heading, rows, columns in page["sections"]:
        lines += [f"## {heading}\n", _markdown_table(rows, columns)]
    lines += ["## Training curves\n", "![dev curves](curves.png)\n"]
    lines += [f"### {LEGEND_TITLE}\n", _markdown_table(page["legend"])]
    lines += ["## Confusion matrices (dev, summed per group)\n"]
    lines += [f"![{c['group']}]({c['path'].name})\n" for c in confusions] or ["_none yet_\n"]
    if page["strata"]:
        lines += [f"## {STRATA_TITLE}\n"]
    for table in page["strata"]:
        lines += [f"### {table['heading']}\n", _markdown_table(table["rows"], table["columns"])]
        lines += [f"![{table['heading']}]({table['path'].name})\n"]
    return "\n".join(lines)


def _html(page: dict, curves: Path, confusions: list[dict]) -> str:
    """A self-contained page: the same content as the Markdown, images inlined."""
    title = html.escape(page["title"])
    parts = [f"<!doctype html><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style>"]
    parts += [f"<h1>{title}</h1><p>{html.escape(page['intro'])}</p>"]
    parts += [f"<p class='warning'>{html.escape(n)}</p>" for n in page["notes"]]
    for heading, rows, columns in page["sections"]:
        parts += [f"<h2>{html.escape(heading)}</h2>", _html_table(rows, columns)]
    parts += ["<h2>Training curves</h2>", _img(curves, "dev curves")]
    parts += [f"<h3>{html.escape(LEGEND_TITLE)}</h3>", _html_table(page["legend"], css="labels")]
    parts += ["<h2>Confusion matrices (dev, summed per group)</h2><div class='grid'>"]
    parts += [_img(c["path"], c["group"]) for c in confusions] + ["</div>"]
    if page["strata"]:
        parts += [f"<h2>{html.escape(STRATA_TITLE)}</h2>"]
    for table in page["strata"]:
        parts += [f"<h3>{html.escape(table['heading'])}</h3>", _html_table(table["rows"], table["columns"])]
        parts += [_img(table["path"], table["heading"])]
    return "\n".join(parts)
