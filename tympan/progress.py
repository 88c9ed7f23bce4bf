"""Progress bars that stay readable in logs: redrawn often on a terminal, rarely in CI and DVC."""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(iterable=None, enabled: bool = True, **kwargs) -> tqdm:
    interactive = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.1 if interactive else 10.0)
    return tqdm(iterable, disable=not enabled, dynamic_ncols=interactive, **kwargs)
