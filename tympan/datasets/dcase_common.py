"""What the DCASE corpora (`dcase2016`, `dcase2018`, `dcase2020`) share: reading their tab- and
comma-separated lists with errors that name the file and line, and a reproducible held-out dev split
by groups (recording locations, clips).
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from tympan.datasets.index import read_csv_text
from tympan.errors import DataError

__all__ = ["held_out", "read_lines", "read_table"]


def read_lines(file: Path, what: str, fields: int) -> Iterator[tuple[str, list[str]]]:
    """The non-empty lines of a headerless tab-separated list as (where, fields): `where` is
    `file:line` for errors; a line with fewer than `fields` fields is a DataError naming it."""
    for number, line in enumerate(read_csv_text(file, what).splitlines(), start=1):
        if not line.strip():
            continue
        parts = [part.strip() for part in line.split("\t")]
        if len(parts) < fields or not all(parts[:fields]):
            raise DataError(f"{file}:{number}: expected {fields} tab-separated fields, got {line.strip()!r}")
        yield f"{file}:{number}", parts


def read_table(file: Path, what: str, columns: Iterable[str], delimiter: str = ",") -> Iterator[tuple[str, dict]]:
    """The rows of a delimited file with a header as (where, row); the header must hold `columns`,
    and every row a value for each of them."""
    reader = csv.DictReader(io.StringIO(read_csv_text(file, what), newline=""), delimiter=delimiter)
    try:
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{file}: not a {what}: no column(s) {', '.join(missing)} in its header")
        reader.fieldnames = header
        for number, row in enumerate(reader, start=2):
            if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
                continue
            empty = [c for c in columns if not (row.get(c) or "").strip()]
            if empty:
                raise DataError(f"{file}:{number}: no {empty[0]} (a {what} row needs {', '.join(columns)})")
            yield f"{file}:{number}", {key: (value or "").strip() for key, value in row.items() if key}
    except csv.Error as err:
        raise DataError(f"{file}: not a {what} ({err})") from None


def held_out(rows: list[dict], fraction: float, seed: int, group: str, stratum: str) -> set[str]:
    """The groups (values of the `group` column) that make a dev split of about `fraction` of `rows`.

    Each group belongs to the stratum most of its rows have. Per stratum, its groups are shuffled
    by a generator seeded with (`seed`, stratum), in an order that does not depend on the order of
    `rows`, and taken until they hold at least `fraction` of the stratum's rows; a stratum's last
    group always stays in training. So the same rows and seed always give the same split, every
    stratum is in both, and no group is in both."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        counts[row[group]][row[stratum]] += 1
    members: dict[str, list[str]] = defaultdict(list)
    for name, strata in counts.items():
        most = max(strata.values())
        members[min(s for s, n in strata.items() if n == most)].append(name)
    chosen: set[str] = set()
    for name in sorted(members):
        groups = sorted(members[name])
        random.Random(f"{seed}:{name}").shuffle(groups)
        size = {g: sum(counts[g].values()) for g in groups}
        target, taken = fraction * sum(size.values()), 0
        for g in groups[:-1]:
            if taken >= target or math.isclose(taken, target):
                break
            chosen.add(g)
            taken += size[g]
    return chosen
