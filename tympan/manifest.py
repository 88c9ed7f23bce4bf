"""A bundle's `bundle.json`: read with limits, checked field by field, older formats converted.

A bundle is data that may have been tampered with, so every field is checked before anything is
built from it: types, bounds, finite numbers, no unknown keys, a size and nesting limit on the
file. What can only be checked against what the fields build (the model's minimum input, the
task's outputs, the recorded pipeline) is checked by the Predictor once built (`bundle.py`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tympan.errors import DataError

FORMAT = "tympan-bundle/2"
OLD_FORMATS = ("tympan-bundle/1",)  # read by converting them (see `_upgrade`)
MANIFEST = "bundle.json"
MAX_BYTES = 64 << 20  # a real manifest is kilobytes; an inline Hugging Face config stays far below this
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # what a served model may be called (a URL path segment)

__all__ = ["FORMAT", "MANIFEST", "Manifest", "read_manifest"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class ComponentRecord(_Record):
    target: str = Field(min_length=1, max_length=300)
    args: dict[str, Any] = Field(default_factory=dict)


class PretrainedRecord(_Record):
    """Where the model's starting weights came from (for people and audits; never loaded)."""

    name: str = Field(min_length=1, max_length=1000)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ModelRecord(ComponentRecord):
    pretrained: PretrainedRecord | None = None


class TaskRecord(ComponentRecord):
    targets: list[str] = Field(min_length=1, max_length=100_000)
    state: dict[str, Any]


class FeaturesRecord(_Record):
    sample_rate: int = Field(gt=0, le=768_000)
    offline: list[ComponentRecord] = Field(max_length=64)
    online: list[ComponentRecord] = Field(max_length=64)


class InputRecord(_Record):
    kind: Literal["waveform", "frames", "vector", "image"]
    sample_rate: int = Field(gt=0, le=768_000)
    frame_rate: float | None = Field(None, gt=0, le=768_000)
    min_frames: int = Field(ge=1, le=100_000)  # checked again against the built model
    window: float | None = Field(None, gt=0, le=86_400)  # seconds: the natural sliding window


class DataRecord(_Record):
    dataset: str = Field(max_length=1000)
    features_key: str = Field(max_length=1000)


class Manifest(_Record):
    format: Literal["tympan-bundle/2"]
    run_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,200}$")
    experiment: str = Field(pattern=NAME)
    task: TaskRecord
    model: ModelRecord
    features: FeaturesRecord
    input: InputRecord
    data: DataRecord
    outputs: list[dict[str, Any]] | None = None  # checked against the task's own (bundle.py)
    pipeline: dict[str, Any] | None = None  # the record of training's data flow, for people
    metrics: dict[str, Any] = Field(default_factory=dict)


def read_manifest(directory: str | Path) -> dict:
    """A bundle's bundle.json as plain data, checked (`Manifest`) and in today's format; a
    DataError naming the file and the field otherwise."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise DataError(f"{directory}: not a tympan bundle (no {MANIFEST})")
    if path.stat().st_size > MAX_BYTES:
        raise DataError(f"{path}: {path.stat().st_size} bytes, more than a bundle manifest may hold ({MAX_BYTES})")
    try:
        manifest = json.loads(path.read_bytes(), parse_constant=_refuse_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise DataError(f"{path}: nested too deeply to be a bundle manifest") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: must hold a JSON object, not {type(manifest).__name__}")
    if manifest.get("format") in OLD_FORMATS:
        manifest = _upgrade(path, manifest)
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: unsupported bundle format {manifest.get('format')!r} (expected {FORMAT!r})")
    try:
        return Manifest.model_validate(manifest).model_dump()
    except ValidationError as exc:
        raise DataError(f"{path}: {_first_problem(exc)}") from None
    except RecursionError:
        raise DataError(f"{path}: nested too deeply to be a bundle manifest") from None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a bundle may hold")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a float")
    return value


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "the manifest"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where!r}: {error['msg']}{more}"


def _upgrade(path: Path, old: dict) -> dict:
    """A tympan-bundle/1 manifest (single-label classification, one feature extractor, optional
    per-clip normalisation) in today's form."""
    try:
        labels, extractor, input_ = old["labels"], old["features"], old["input"]
        args = {k: v for k, v in extractor["args"].items() if k != "sample_rate"}
        sample_rate = extractor["args"].get("sample_rate", input_.get("sample_rate"))
        normalize = old["normalize"]
        target = extractor.get("target")
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: a {OLD_FORMATS[0]} manifest without the fields it must have ({exc!r})") from None
    online = [{"target": "tympan.transforms.normalize:Normalize", "args": {"mode": "instance"}}]
    kept = {k: v for k, v in old.items() if k not in ("labels", "normalize", "task", "features", "format", "input")}
    return {
        **kept,
        "format": FORMAT,
        "task": {"target": "tympan.tasks.classification:Classification", "args": {}, "targets": ["label"],
                 "state": {"labels": labels, "class_weights": None}},
        "features": {"sample_rate": sample_rate, "offline": [{"target": target, "args": args}],
                     "online": online if normalize == "utterance" else []},
        "input": {"kind": "frames", **input_} if isinstance(input_, dict) else input_,
    }  # fmt: skip
