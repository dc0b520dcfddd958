"""The samples as CSV: one column per series (after the variable, a parametric model's
parameters), one row per point. A non-finite value (null in the
JSON) is an empty cell, and a last column ``non_finite`` then names, per row, the columns left
empty and the kind of value (nan, inf, -inf) — the JSON's ``non_finite`` entries, row by row."""

from __future__ import annotations

import csv
import io

from odeserve.report import Samples


def _row_notes(samples: Samples, columns: dict[str, str], rows: int) -> list[str]:
    """Per row: ``column:kind`` for each empty cell (kinds from the series' non_finite entry)."""
    notes: list[list[str]] = [[] for _ in range(rows)]
    for entry in samples.non_finite:
        column = columns.get(entry.field)
        if column is None:
            continue
        kind = entry.kinds[0] if len(entry.kinds) == 1 else "/".join(entry.kinds)
        series = _series(samples, entry.field)
        for i, v in enumerate(series):
            if v is None:
                notes[i].append(f"{column}:{kind}")
    return [" ".join(n) for n in notes]


def _series(samples: Samples, field: str) -> list[float | None]:
    group, _, name = field.partition(".")
    table: dict[str, list[float | None]] = getattr(samples, group)
    return table[name]


def to_csv(samples: Samples) -> str:
    groups = {"values": samples.values, "derivatives": samples.derivatives, "residuals": samples.residuals}
    columns = {f"{g}.{name}": name for g, table in groups.items() for name in table}
    ranged = samples.parameters or {}  # a parametric model's parameter values, after the variable
    header = [samples.variable, *ranged, *columns.values()]
    series: list[list[float | None]] = [list(samples.x)]
    series += [list(v) for v in ranged.values()]
    series += [list(table[name]) for table in groups.values() for name in table]
    rows = [["" if v is None else repr(v) for v in row] for row in zip(*series)]
    if samples.non_finite:
        header.append("non_finite")
        for row, note in zip(rows, _row_notes(samples, columns, len(rows))):
            row.append(note)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()
