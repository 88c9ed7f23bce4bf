"""Where pretrained weights come from: a local path, or a published name downloaded once.

`pretrained:` takes a local file or directory, or a name:
- a PANN release on Zenodo (`Cnn14_mAP=0.431`, `Cnn10_mAP=0.380`; `CATALOGUE`);
- a torchvision weights tag of the model's architecture (`IMAGENET1K_V1`, `DEFAULT`);
- a timm pretrained tag of the model's architecture (`a1_in1k`; `imagenet` for timm's default);
- a Hugging Face hub id (`facebook/wav2vec2-base`) for the transformers families.

A name is resolved to its published location and checksum, downloaded once into
`$TYMPAN_CACHE` (default `~/.cache/tympan`: resumable, verified, atomic; see tympan.downloads)
and used from there on, offline too. `$TYMPAN_WEIGHTS_MIRROR` (a folder, or an http(s) base
URL) stands in for the network: a published file is fetched from `<mirror>/<file name>`, a hub
id from `<mirror>/huggingface/<id>/`. A model records what it loaded as a `Provenance`
(the name and the file's sha256), never the file's content or code.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tympan import downloads
from tympan.errors import DataError

CACHE_ENV = "TYMPAN_CACHE"
MIRROR_ENV = "TYMPAN_WEIGHTS_MIRROR"
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class Published:
    """A weights file at a public URL with its published checksum ("md5:<hex>" or "sha256:<hex>")."""

    url: str
    checksum: str

    @property
    def file(self) -> str:
        return self.url.rsplit("/", 1)[-1].replace("%3D", "=")


# the PANN releases (Kong et al., 2020), https://zenodo.org/records/3987831: sizes 25,237,595 and 327,428,481 bytes
ZENODO = "https://zenodo.org/records/3987831/files"
CATALOGUE: dict[str, Published] = {
    "Cnn10_mAP=0.380": Published(f"{ZENODO}/Cnn10_mAP%3D0.380.pth", "md5:bfb1f1f9968938fa8ef4012b8471f5f6"),
    "Cnn14_mAP=0.431": Published(f"{ZENODO}/Cnn14_mAP%3D0.431.pth", "md5:541141fa2ee191a88f24a3219fff024e"),
}


@dataclass(frozen=True)
class Provenance:
    """What a model's pretrained weights were: the name given and the sha256 of what was read."""

    name: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tympan")


def is_local(pretrained: str) -> bool:
    """A path, not a name: it exists, holds a path separator, or ends like a weights file."""
    return Path(pretrained).expanduser().exists() or "/" in pretrained or pretrained.endswith(WEIGHT_SUFFIXES)


def weights_file(pretrained: str) -> Path:
    """A local file for `pretrained`: the path itself, or a catalogue name's cached download."""
    if pretrained in CATALOGUE:
        return fetch(CATALOGUE[pretrained])
    path = Path(pretrained).expanduser()
    if not path.is_file():
        known = ", ".join(CATALOGUE)
        raise DataError(f"{pretrained}: no such weights file, and not a published name ({known})")
    return path


def fetch(published: Published) -> Path:
    """The cached copy of `published`, downloaded (from the mirror if one is set) and verified once."""
    mirror = os.environ.get(MIRROR_ENV)
    url = published.url
    if mirror:
        base = mirror if "://" in mirror else Path(mirror).expanduser().resolve().as_uri()
        url = f"{base.rstrip('/')}/{quote(published.file)}"
    return downloads.download_file(url, cache_dir() / "weights" / published.file, checksum=published.checksum)


def torchvision_file(architecture: str, tag: str) -> Path:
    """torchvision's `tag` weights of `architecture` (its URL's file name carries the sha256's first digits)."""
    from torchvision import models

    try:
        weights = models.get_model_weights(architecture)[tag]
    except (KeyError, ValueError):
        tags = ", ".join(w.name for w in models.get_model_weights(architecture))
        raise DataError(f"torchvision's {architecture} has no weights {tag!r}; it has: {tags}, DEFAULT") from None
    prefix = re.search(r"-([0-9a-f]{8,})\.\w+$", weights.url)
    checksum = f"sha256:{prefix.group(1)}" if prefix else None
    return fetch(Published(weights.url, checksum)) if checksum else _unverified(weights.url)


def hub_file(repo_id: str, filename: str) -> Path:
    """One file of a Hugging Face hub repository: from the mirror, else through huggingface_hub's cache."""
    return hub_dir(repo_id, [filename]) / filename


def hub_dir(repo_id: str, patterns: list[str] | None = None) -> Path:
    """A local directory holding hub repository `repo_id` (config and weights; `patterns` narrow the
    files): `<mirror>/huggingface/<id>` where a mirror folder is set, else huggingface_hub's
    download into `$TYMPAN_CACHE/huggingface`, which works offline once cached."""
    if not HUB_ID.fullmatch(repo_id):
        raise DataError(f"pretrained {repo_id!r}: not a local path, and not a hub id like 'facebook/wav2vec2-base'")
    mirror = os.environ.get(MIRROR_ENV)
    if mirror and "://" not in mirror:
        folder = Path(mirror).expanduser() / "huggingface" / repo_id
        if not folder.is_dir():
            raise DataError(f"pretrained {repo_id!r}: not in the weights mirror ({folder} does not exist)")
        return folder
    from huggingface_hub import snapshot_download

    patterns = patterns or ["*.json", "*.safetensors", "*.txt"]
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir() / "huggingface", allow_patterns=patterns))
    except Exception as exc:  # huggingface_hub's errors for offline, missing repos and network failures vary
        raise DataError(f"pretrained {repo_id!r}: cannot get it from the hub ({type(exc).__name__}: {exc})") from None


def provenance(name: str, file: Path) -> Provenance:
    return Provenance(name, downloads.digest(file))


def _unverified(url: str) -> Path:
    raise DataError(f"{url}: no published checksum to verify it against; download it yourself and name the file")
