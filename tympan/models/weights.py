"""The one loader for pretrained weights.

Files are data, never code: safetensors, or torch files read with `weights_only=True`, so a
checkpoint whose unpickling would run code is refused. Loading is strict (every key of the model
filled, every key of the file used, every shape equal; only batch-norm's step counters may be
absent) except for a head named for replacement, which is loaded where it fits and otherwise keeps
its fresh initialisation. Foreign formats (PANN checkpoints wrap their state dict in {"model": ...}
and name layers their own way) are read through `nested` and `key_map`. Nothing is loaded unless
everything fits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tympan.errors import DataError
from tympan.models import sources
from tympan.targets import first_line

KeyMap = Mapping[str, str | None] | Callable[[str], str | None]
SHOWN = 5  # keys named in an error


@dataclass
class Loaded:
    """What a load did: keys loaded, head keys left as initialised, keys of neither side ignored."""

    loaded: list[str] = field(default_factory=list)
    kept_head: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    provenance: sources.Provenance | None = None  # what was read: the name given and the file's sha256


def load_weights(
    model: nn.Module,
    path: str | Path,
    head: str | None = None,
    key_map: KeyMap | None = None,
    strict: bool = True,
    nested: str | None = None,
) -> Loaded:
    """Load the weights in `path` into `model`; a DataError naming the file if they do not fit.

    `head`: a prefix of the model's keys (e.g. "fc_out") whose tensors are replaced: loaded where
    the file has them with equal shapes, otherwise left as initialised. `key_map`: renames the
    file's keys, as {old prefix: new prefix or None to drop} (longest prefix wins) or a function
    of the key. `nested`: the key holding the state dict where a checkpoint wraps it; a file that
    is already a flat state dict is read as is. `strict=False` tolerates missing and unexpected
    keys (reported in the result), never a shape mismatch.
    """
    name = str(path)
    path = sources.weights_file(name)
    state = _state_dict(_read(path), nested, path)
    state = _rename(state, key_map, path)
    own = model.state_dict()
    under_head = _prefix_test(head)
    result, mismatched = Loaded(), []
    for key, tensor in own.items():
        if key not in state and key.endswith(".num_batches_tracked"):
            continue  # batch-norm's step counter, no weight: older files (torchvision's ImageNet ones) lack it
        if key not in state:
            (result.kept_head if under_head(key) else result.missing).append(key)
        elif state[key].shape != tensor.shape:
            if under_head(key):
                result.kept_head.append(key)
            else:
                mismatched.append(f"{key}: file {tuple(state[key].shape)}, model {tuple(tensor.shape)}")
        else:
            result.loaded.append(key)
    result.unexpected = [k for k in state if k not in own and not under_head(k)]
    problems = [f"shapes differ for {_first(mismatched)}"] if mismatched else []
    if strict and result.missing:
        problems.append(f"{len(result.missing)} keys of the model missing from the file: {_first(result.missing)}")
    if strict and result.unexpected:
        problems.append(f"{len(result.unexpected)} keys of the file unknown to the model: {_first(result.unexpected)}")
    if problems:
        raise DataError(f"{path}: weights do not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict({k: state[k] for k in result.loaded}, strict=False)
    result.provenance = sources.provenance(name, path)
    return result


def _read(path: Path) -> object:
    """The file's content: a safetensors file (told by its header, whatever its name) or a torch
    file loaded with weights_only=True."""
    if not path.is_file():
        raise DataError(f"{path}: no such weights file")
    with open(path, "rb") as f:
        start = f.read(9)
    if len(start) == 9 and start[8:9] == b"{":  # 8-byte header length, then the JSON header
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as exc:
            raise DataError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an untrusted file can fail in any way
        raise DataError(f"{path}: {_why_unreadable(exc)}") from None


def _why_unreadable(exc: Exception) -> str:
    """Why torch refused a file, in tympan's words. torch's own message advises loading again with
    weights_only=False, which would run whatever code the file carries: it is never repeated."""
    text = str(exc)
    if not text.startswith("Weights only load failed"):
        return f"not a safetensors file, nor a torch file of tensors ({first_line(exc)})"
    found = re.search(r"GLOBAL ([\w.]+)", text)  # "Unsupported global: GLOBAL x" and "unsupported GLOBAL x whose..."
    if found:
        return (
            f"refused: unpickling it would run code (it calls {found.group(1)}); tympan reads torch files with "
            "weights_only=True and never unpickles code, so such a file cannot be loaded. Save a plain state dict "
            "or safetensors"
        )
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)  # e.g. "Unsupported operand 110"
    reason = detail.group(1).split(" Please")[0] if detail else "a pickle that weights_only loading refuses"
    return f"not a safetensors file, nor a torch file of tensors ({reason})"


def _rename(state: dict[str, torch.Tensor], key_map: KeyMap | None, path: Path) -> dict[str, torch.Tensor]:
    """The state dict with its keys renamed by `key_map` (None drops a key)."""
    if key_map is None:
        return state
    rename_key = key_map if callable(key_map) else _prefix_renamer(key_map)
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        new = rename_key(key)
        if new is None:
            continue
        if new in renamed:
            raise DataError(f"{path}: the key map gives two tensors the name {new!r}")
        renamed[new] = tensor
    return renamed


def _state_dict(content: object, nested: str | None, path: Path) -> dict[str, torch.Tensor]:
    """The flat {name: tensor} dict in a file's content."""
    if isinstance(content, Mapping) and nested is not None and isinstance(content.get(nested), Mapping):
        content = content[nested]
    if not isinstance(content, Mapping):
        raise DataError(f"{path}: holds a {type(content).__name__}, not a state dict of named tensors")
    others = [str(k) for k, v in content.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if others:
        hint = (
            f" (nested={others[0]!r} picks a state dict inside it)"
            if isinstance(content.get(others[0]), Mapping)
            else ""
        )
        raise DataError(f"{path}: not a flat state dict, {len(others)} entries are not tensors: {_first(others)}{hint}")
    return dict(content)


def _prefix_renamer(key_map: Mapping[str, str | None]) -> Callable[[str], str | None]:
    prefixes = sorted(key_map, key=len, reverse=True)

    def rename_key(key: str) -> str | None:
        for prefix in prefixes:
            if key.startswith(prefix):
                new = key_map[prefix]
                return None if new is None else new + key[len(prefix) :]
        return key

    return rename_key


def _prefix_test(head: str | None) -> Callable[[str], bool]:
    """Whether a key lies under the module `head` ("fc_out" covers "fc_out.weight", not "fc_out2.weight")."""
    if not head:
        return lambda key: False
    prefix = head.rstrip(".") + "."
    return lambda key: key.startswith(prefix)


def _first(keys: list[str]) -> str:
    more = f", ... ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more
