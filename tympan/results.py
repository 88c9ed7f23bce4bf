"""What a run's summary.json holds, read the one way every consumer needs it (tracking,
postprocess, the registry's tags, the pipeline's champion gate)."""

from __future__ import annotations


def metric_values(summary: dict) -> dict[str, float]:
    """{"dev": {"accuracy": 0.9}} -> {"dev.accuracy": 0.9}; the names `promote --metric` takes."""
    return {
        f"{split}.{name}": float(value)
        for split, metrics in summary.items()
        if split != "run"
        for name, value in (metrics or {}).items()
    }
