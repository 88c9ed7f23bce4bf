"""Shared fixtures: the real FSDD copy that stands in for downloads."""

import os
from pathlib import Path

import pytest


def _data_mirror() -> Path:
    # Dev checkouts and CI both keep `shared/` beside the repository folder.
    env = os.environ.get("TYMPAN_DATA_MIRROR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def fsdd_mirror() -> Path:
    """The data mirror dir (holding `fsdd/recordings/*.wav`); skips when it is absent."""
    mirror = _data_mirror()
    if not (mirror / "fsdd" / "recordings").is_dir():
        pytest.skip(f"no FSDD copy at {mirror}/fsdd/recordings; set TYMPAN_DATA_MIRROR to shared/data")
    return mirror
