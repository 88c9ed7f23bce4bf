"""The `tympan` command. Each subcommand loads a config and calls one stage.

Overrides follow the config path as `key.path=value` (values parsed as YAML), e.g.
`tympan train params.yaml training.epochs=3 seed=2`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import fire
import yaml

from tympan import config as configuration
from tympan import stages
from tympan.errors import TympanError


def _config(config: str, overrides: tuple[str, ...]) -> configuration.Config:
    parsed = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise configuration.ConfigError(f"override {item!r} must look like key.path=value")
        parsed[key] = yaml.safe_load(value)
    return configuration.load(config, parsed)


def _print_summary(run_dir: Path, summary: dict) -> None:
    for split in ("dev", "test"):
        metrics = summary.get(split) or {}
        if metrics:
            print(f"{split}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        else:
            print(f"{split}: no clips in this split")
    print(f"run: {run_dir}")


class Commands:
    """tympan: train, evaluate and serve audio models from a YAML config."""

    def fetch(self, config: str = "params.yaml", *overrides: str) -> None:
        """Download the dataset (or copy it from $TYMPAN_DATA_MIRROR) and write its index."""
        print(f"dataset: {stages.fetch(_config(config, overrides))}")

    def preprocess(self, config: str = "params.yaml", *overrides: str) -> None:
        """Extract offline features into packed, memory-mapped files per split."""
        print(f"features: {stages.preprocess(_config(config, overrides))}")

    def train(self, config: str = "params.yaml", *overrides: str, run_dir: str | None = None) -> None:
        """Train one model; writes runs/<experiment>/<run id>/ (or --run-dir)."""
        run, summary = stages.train(_config(config, overrides), run_dir)
        _print_summary(run, summary)

    def show(self, run_dir: str) -> None:
        """Print a finished run's dev and test results."""
        path = Path(run_dir) / "summary.json"
        if not path.is_file():
            raise TympanError(f"{run_dir}: no summary.json (the run has not finished)")
        _print_summary(Path(run_dir), json.loads(path.read_text()))

    def config(self, config: str = "params.yaml", *overrides: str) -> None:
        """Print the resolved config (presets expanded, defaults filled) and its run id."""
        resolved = _config(config, overrides)
        print(resolved.to_yaml(), end="")
        print(f"# run id: {resolved.run_id()}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        fire.Fire(Commands, command=argv, name="tympan")
    except TympanError as exc:
        print(f"tympan: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tympan: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
