"""Print the requirements of pyproject.toml (core plus the named extras), one a line.

The Dockerfiles install these in a layer of their own before copying the source, so
editing tympan/ does not reinstall every dependency. Usage:
`python pyproject_requirements.py pyproject.toml mlops > requirements.txt`.
"""

from __future__ import annotations

import sys

import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"{pyproject}: unknown extra(s) {', '.join(unknown)}; known: {', '.join(sorted(optional))}")
    lines = list(project.get("dependencies", []))
    for extra in extras:
        lines += [line for line in optional[extra] if line not in lines]
    return lines


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: pyproject_requirements.py PYPROJECT [EXTRA ...]")
    print("\n".join(requirements(sys.argv[1], sys.argv[2:])))
