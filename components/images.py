"""The container images the components run in, read from images/images.env (the one place tags are set)."""

from __future__ import annotations

from pathlib import Path

from tympan.errors import ConfigError

ENV_FILE = Path(__file__).resolve().parents[1] / "images" / "images.env"


def read_env(path: Path = ENV_FILE) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments are skipped."""
    if not path.is_file():
        raise ConfigError(f"{path}: missing (it names the images and their tag)")
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        values[key.strip()] = value.strip().strip("\"'")
    return values


def image(name: str, path: Path = ENV_FILE) -> str:
    """`REGISTRY/<name's value>:TAG`, e.g. image("TRAIN_IMAGE")."""
    values = read_env(path)
    missing = [k for k in ("REGISTRY", "TAG", name) if not values.get(k)]
    if missing:
        raise ConfigError(f"{path}: no value for {', '.join(missing)}")
    return f"{values['REGISTRY']}/{values[name]}:{values['TAG']}"


BASE = image("BASE_IMAGE")
TRAIN = image("TRAIN_IMAGE")
SERVE = image("SERVE_IMAGE")
