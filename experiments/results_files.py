"""Results files read through one validated loader, for the documentation blocks generated from them
(`experiments.generated_docs`): a results file is parsed, checked against its block's schema, and every text in it
escaped for a Markdown table cell and for HTML before a renderer sees it; a rendered block that would lose all the
rows of its table is refused.

Every refusal is one line naming the file and the field (`docs/results/claims.json: field 'constants' is missing`),
never a traceback from inside a renderer, and never a page that silently lost its table or carries raw HTML from a
results file.

A schema is written in plain Python values: a type (`str`, `int`, `dict`, `list`, `NUMBER`), a dict of fields
(`{"name": schema}`; a name ending in "?" is optional; `"*"` checks every value of a mapping whose keys are data),
a one-element list (`[schema]`: every item), `NonEmpty(schema)`, or `Optional(schema)` (None allowed).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blindspots.errors import InputError

__all__ = ["NUMBER", "NonEmpty", "Optional", "SCHEMAS", "load_results", "check_schema", "escape_cell",
           "check_rows_kept"]


class _Number:
    """An int or a float (not a bool)."""

    def __repr__(self) -> str:
        return "a number"


NUMBER = _Number()


@dataclass(frozen=True)
class NonEmpty:
    """The schema `of`, and at least one item (a list) or field (a dict)."""

    of: Any


@dataclass(frozen=True)
class Optional:
    """The schema `of`, or None (JSON null)."""

    of: Any


_ROBUSTNESS_RECORD = {
    "n": int, "eps": NUMBER, "clean_accuracy": NUMBER, "robust_accuracy": NUMBER, "robust_ci95": [NUMBER],
    "attacks": [{"name": str, "accuracy_after": NUMBER}], "checks": [{"name": str, "status": str}],
    "threads": int, "cpu_seconds_ensemble": NUMBER, "cpu_seconds_checks": NUMBER,
}

# a benchmark's recorded run (blindspots.studies.measured.record_run)
_BENCHMARK_RUNS = {"runs": NonEmpty([{"benchmark": str, "command": str, "measured": str, "machine": dict, "met": bool,
                                      "summary": str, "figures": dict, "transcribed?": str}])}

# block name (experiments.generated_docs.BLOCKS) -> the schema of its results file: the fields its renderer reads
SCHEMAS: dict[str, Any] = {
    "paper-claims": {"claims": NonEmpty([{"claim": str, "rows": [dict]}]), "constants": {"*": NUMBER},
                     "validity": dict},
    "zoobot-results": {"runs": NonEmpty({"*": dict})},
    "zoo-training": {"models": NonEmpty({"*": {"clean_accuracy": NUMBER, "pgd_accuracy": NUMBER,
                                              "apgd_accuracy": NUMBER, "train_seconds": NUMBER}})},
    "zoo-robustness": {"command": str, "data": str, "budget_text": str, "tolerances": {"*": NUMBER},
                       "models": NonEmpty({"*": {"linf?": _ROBUSTNESS_RECORD, "l2?": _ROBUSTNESS_RECORD}})},
    **{name: _BENCHMARK_RUNS for name in ("benchmark-runs", "lst-passes", "lst-passes-other-digits", "detector-table")},
}

_TYPE_WORDS = {str: "text", int: "an integer", float: "a number", bool: "true or false", dict: "an object",
               list: "a list"}


def _describe(value: Any) -> str:
    kind = {dict: "an object", list: "a list", str: "text", bool: "a boolean", type(None): "null"}.get(type(value))
    return kind or ("a number" if isinstance(value, (int, float)) else type(value).__name__)


def check_schema(data: Any, schema: Any, where: str = "") -> None:
    """Raise `InputError("field 'a.b[3].c' ...")` at the first place where `data` does not fit `schema`."""
    field = where or "the top level"
    named = f"field {where!r}" if where else "the top level"
    if isinstance(schema, Optional):
        if data is not None:
            check_schema(data, schema.of, where)
        return
    if isinstance(schema, NonEmpty):
        check_schema(data, schema.of, where)
        if len(data) == 0:
            raise InputError(f"{named} is empty (a block rendered from it would have no rows)")
        return
    if schema is NUMBER:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise InputError(f"{named} must be a number, got {_describe(data)}")
        return
    if isinstance(schema, type):
        ok = isinstance(data, schema) and not (schema is int and isinstance(data, bool))
        if schema is float:
            ok = isinstance(data, (int, float)) and not isinstance(data, bool)
        if not ok:
            raise InputError(f"{named} must be {_TYPE_WORDS.get(schema, schema.__name__)}, got {_describe(data)}")
        return
    if isinstance(schema, list):
        if not isinstance(data, list):
            raise InputError(f"{named} must be a list, got {_describe(data)}")
        for i, item in enumerate(data):
            check_schema(item, schema[0], f"{where}[{i}]")
        return
    if isinstance(schema, dict):
        if not isinstance(data, dict):
            raise InputError(f"{named} must be an object, got {_describe(data)}")
        for key, sub in schema.items():
            if key == "*":
                for k, v in data.items():
                    check_schema(v, sub, f"{where}.{k}" if where else k)
                continue
            optional = key.endswith("?")
            name = key[:-1] if optional else key
            path = f"{where}.{name}" if where else name
            if name not in data:
                if optional:
                    continue
                raise InputError(f"field {path!r} is missing" + (f" (in {field})" if where else ""))
            check_schema(data[name], sub, path)
        return
    raise TypeError(f"not a schema: {schema!r}")  # a bug in SCHEMAS, not in the file


_CELL = str.maketrans({"|": "\\|", "\n": " ", "\r": " "})
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")  # how raw HTML starts (CommonMark): a tag, a comment, a declaration


def escape_cell(text: str) -> str:
    """Text safe in a Markdown table cell and in HTML: a '<' that would start a tag, comment or script as an entity
    ('0.5 < 0.6' stays as it is), '|' escaped (no new cell), line breaks as spaces (no new row)."""
    return _TAG_START.sub("&lt;", text.translate(_CELL))


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return escape_cell(value)
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    if isinstance(value, dict):
        return {escape_cell(k) if isinstance(k, str) else k: _escaped(v) for k, v in value.items()}
    return value


def load_results(path: str | Path, schema: Any = None) -> Any:
    """The parsed JSON of a results file, checked against `schema` (None: any JSON), every text escaped with
    `escape_cell`. A missing, unreadable, non-UTF-8 or malformed file, or one that does not fit, is an `InputError`
    naming the file (and the field)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"results file {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"results file {path} is a folder") from None
    except OSError as exc:
        raise InputError(f"cannot read results file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"results file {path} is not UTF-8 text (a JSON results file was expected)") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"results file {path} is not valid JSON: {str(exc).splitlines()[0]}") from None
    if schema is not None:
        try:
            check_schema(data, schema)
        except InputError as exc:
            raise InputError(f"results file {path}: {exc}") from None
    return _escaped(data)


_ROW = re.compile(r"^\|(?!\s*:?-{3,})")  # a table line that is not the |---| separator


def _table_rows(markdown: str) -> int:
    """Data rows of the tables in a block: table lines minus one header per table."""
    lines = markdown.splitlines()
    rows = headers = 0
    for i, line in enumerate(lines):
        if _ROW.match(line.strip()):
            is_header = i + 1 < len(lines) and re.match(r"^\|\s*:?-{3,}", lines[i + 1].strip())
            headers += bool(is_header)
            rows += not is_header
    return rows


def check_rows_kept(name: str, old: str, new: str, source: str | None = None) -> None:
    """Refuse to replace a block whose tables held rows with one whose tables hold none (a results file that lost
    its entries would otherwise delete the docs' table and pass)."""
    before, after = _table_rows(old), _table_rows(new)
    if before and not after:
        raise InputError(f"generated block {name!r}: its results file{' ' + source if source else ''} leaves its "
                         f"table with no rows (it has {before}); refusing to write it")
