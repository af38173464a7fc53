"""Study tables: mean, std and median per group, display strings, Markdown, CSV (spreadsheet-safe) and JSON."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..store import atomic_write_text, jsonable



def summarize(records: Sequence[Mapping[str, Any]], by: Sequence[str], fields: Sequence[str]
              ) -> list[dict[str, Any]]:
    """Mean, std (population, ddof=0), median and count of each field per group, groups in order of first
    appearance. The median is there because a few stalled traversals can dominate a mean.

    Records missing a field (or holding None) are left out of that field's statistics. The records should come
    sorted (e.g. by key) so that sums run in the same order every time.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault(tuple(r.get(b) for b in by), []).append(r)
    rows = []
    for gkey, recs in groups.items():
        row: dict[str, Any] = dict(zip(by, gkey))
        row["n"] = len(recs)
        for f in fields:
            vals = np.array([r[f] for r in recs if r.get(f) is not None], dtype=np.float64)
            if vals.size:
                row[f"{f}_mean"] = float(vals.mean())
                row[f"{f}_std"] = float(vals.std())
                row[f"{f}_median"] = float(np.median(vals))
                row[f"{f}_n"] = int(vals.size)
        rows.append(row)
    return rows


def format_mean_std(mean: float | None, std: float | None, digits: int = 4) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}g} ± {std:.{digits}g}" if std is not None else f"{mean:.{digits}g}"


def display_rows(rows: Sequence[Mapping[str, Any]], labels: Sequence[str], fields: Mapping[str, str],
                 digits: int = 4) -> list[dict[str, str]]:
    """Rows of `summarize` turned into display strings: label columns as is, then 'mean ± std' per field (columns
    of fields absent from every row are dropped, never filled with made-up values)."""
    present = [f for f in fields if any(f"{f}_mean" in r for r in rows)]
    out = []
    for r in rows:
        d = {lab: str(r.get(lab, "")) for lab in labels}
        d["n"] = str(r.get("n", ""))
        for f in present:
            d[fields[f]] = format_mean_std(r.get(f"{f}_mean"), r.get(f"{f}_std"), digits)
        out.append(d)
    return out


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that spreadsheets will not execute: text that starts with =, +, -, @, tab or CR and is not a
    number gets a leading apostrophe (OWASP's advice for CSV injection); numbers, and text that is a number
    ("-0.00121"), are left as they are, so they read back as numbers. `undo_spreadsheet_safe` reverses it."""
    if isinstance(value, str) and value[:1] in FORMULA_START and not _is_number_text(value):
        return "'" + value
    return value


def undo_spreadsheet_safe(text: str) -> str:
    """The text `spreadsheet_safe` was given, from the cell it wrote."""
    inner = text[1:]
    return inner if text.startswith("'") and spreadsheet_safe(inner) == text else text


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Rows (dicts) to CSV; the columns are the union of the keys in order of appearance; nested values as JSON;
    text cells made spreadsheet-safe (numbers stay numbers). Every CSV the toolkit writes goes through here or
    through `spreadsheet_safe`."""
    path = Path(path)
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=[spreadsheet_safe(c) for c in cols])
        w.writeheader()
        for r in rows:
            w.writerow({spreadsheet_safe(c): spreadsheet_safe(json.dumps(v) if isinstance(v, (dict, list)) else v)
                        for c, v in r.items()})
    return path


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """JSON (non-finite numbers as null), written atomically."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=2))
