"""What `tympan models` prints: every model preset with its family, the input kind it takes, its
parameter count for a typical input, where its pretrained weights can come from, and the line
that puts it in a config.

Parameters are counted on torch's meta device (no memory, no weights read), for 64 Mel bins,
88-value vectors, 1-channel images or 16 kHz waveforms, and 10 outputs. A preset whose
architecture lives in a hub repository is counted only once that repository is local.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tympan.config.presets import available_presets, load_preset
from tympan.models.base import SIZE_NAMES, AudioModel
from tympan.models.sources import is_local
from tympan.targets import first_line, resolve_target

TYPICAL = {"n_outputs": 10, "n_mels": 64, "n_bins": 64, "input_dim": 88, "sample_rate": 16000, "in_channels": 1}


@dataclass(frozen=True)
class Row:
    preset: str
    family: str
    accepts: str
    parameters: str
    pretrained: str
    example: str


def rows() -> list[Row]:
    return [_row(name) for name in available_presets("models")]


def table() -> str:
    """The rows as aligned text, then what each family's weights may be."""
    found = rows()
    header = Row("preset", "family", "accepts", "parameters", "pretrained", "in a config")
    cells = [header, *found]
    widths = [max(len(getattr(r, f)) for r in cells) for f in ("preset", "family", "accepts", "parameters")]
    lines = []
    for r in cells:
        first = (r.preset, r.family, r.accepts, r.parameters)
        lines.append("  ".join(v.ljust(w) for v, w in zip(first, widths, strict=True)) + f"  {r.example}")
    families = {}
    for r in found:
        families.setdefault(r.family, r.pretrained)
    lines += ["", "pretrained weights (`pretrained:` in model.args; a local path always works):"]
    lines += [f"  {family}: {weights}" for family, weights in families.items()]
    return "\n".join(lines)


def _row(name: str) -> Row:
    preset = load_preset("models", name)
    cls = resolve_target(preset["target"])
    args = dict(preset.get("args") or {})
    return Row(
        preset=name,
        family=cls.__name__,
        accepts=" or ".join(getattr(cls, "accepts", AudioModel.accepts)),
        parameters=_parameters(cls, args),
        pretrained=getattr(cls, "weights_from", "none (trained from scratch)"),
        example=f"model: {name}" if "pretrained" not in args else f"model: {name}  # pretrained: {args['pretrained']}",
    )


def _parameters(cls: type, args: dict) -> str:
    source = args.get("pretrained")
    if isinstance(source, str) and getattr(cls, "architecture_from_pretrained", False):
        # a hub id holds a path separator too, so is_local alone does not tell it from a path
        if not is_local(source) or not Path(source).expanduser().exists():
            return "(hub)"
    args = {k: v for k, v in args.items() if k != "pretrained"}
    sizes = {k: v for k, v in TYPICAL.items() if k in SIZE_NAMES and _takes(cls, k)}
    try:
        with torch.device("meta"):
            model = cls(**args, **sizes)
    except Exception as exc:  # a family that cannot be built offline says why, the listing goes on
        return f"? ({first_line(exc)[:40]})"
    count = sum(p.numel() for p in model.parameters())
    return f"{count / 1e6:.1f} M" if count >= 1e5 else f"{count / 1e3:.0f} k"


def _takes(cls: type, name: str) -> bool:
    import inspect

    return name in inspect.signature(cls).parameters
