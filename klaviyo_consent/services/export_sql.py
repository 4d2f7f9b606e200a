"""One exported line per row, written by the database: the SQL around the export's SELECT.

Formatting a million rows cell by cell in Python cost more than reading them; SQLite and
PostgreSQL write the same text in C. Pure string building, no Django: ``services/export.py``
gives the inner SELECT (its columns aliased ``c0``, ``c1``, … in :data:`COLUMNS` order) and runs
the result. What each kind of column becomes:

========  ===================================  ==========================================
kind      CSV cell (RFC 4180)                  JSON Lines value
========  ===================================  ==========================================
int       digits; null → empty                 number / null
ip        the address; null → empty            string / null
text      quoted, ``"`` doubled; a formula     string / null (exact)
          prefix gets a leading ``'``
          (``csvsafe.FORMULA_PREFIXES``);
          null → empty
time      UTC RFC 3339 with microseconds, as   string / null
          the leaf writes it
          (``2026-01-02T03:04:05.000006Z``)
bool      ``true`` / ``false``                 true / false
json      the stored JSON text, quoted         the object itself / null
========  ===================================  ==========================================
"""

from __future__ import annotations

from collections.abc import Sequence

from klaviyo_consent.csvsafe import FORMULA_PREFIXES

#: Line ends of each format (CSV: RFC 4180's CRLF, as Python's csv module writes).
NEWLINE = {"csv": "\r\n", "jsonl": "\n"}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_PREFIXES = ", ".join(_literal(prefix) for prefix in FORMULA_PREFIXES)


def _time(vendor: str, column: str) -> str:
    if vendor == "postgresql":
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    # Django keeps a SQLite datetime as UTC text "YYYY-MM-DD HH:MM:SS[.ffffff]": the
    # microseconds are left out when they are zero.
    return (
        f"(replace({column}, ' ', 'T') || "
        f"CASE WHEN length({column}) = 19 THEN '.000000Z' ELSE 'Z' END)"
    )


def _ip(vendor: str, column: str) -> str:
    # PostgreSQL's inet as text carries the netmask (203.0.113.7/32); host() is the address.
    return f"host({column})" if vendor == "postgresql" else column


def _csv_cell(vendor: str, column: str, kind: str) -> str:
    """One cell's SQL; NULL is an empty cell (printf/format write NULL as nothing)."""
    if kind == "ip":
        return _ip(vendor, column)
    if kind == "int":
        return column
    if kind == "bool":
        return f"CASE WHEN {column} THEN 'true' ELSE 'false' END"
    if kind == "time":
        return _time(vendor, column)
    if kind == "json":
        value = f"CAST({column} AS TEXT)"
    else:
        value = (
            f"CASE WHEN substr({column}, 1, 1) IN ({_PREFIXES}) "
            f"THEN '''' || {column} ELSE {column} END"
        )
    return f"'\"' || replace({value}, '\"', '\"\"') || '\"'"


def _json_value(vendor: str, column: str, kind: str) -> str:
    if kind == "ip":
        return _ip(vendor, column)
    if kind == "time":
        return _time(vendor, column)
    if kind == "json":
        return f"CAST({column} AS json)" if vendor == "postgresql" else f"json({column})"
    if kind == "bool" and vendor != "postgresql":
        return f"CASE WHEN {column} THEN json('true') ELSE json('false') END"
    return column


def lines(vendor: str, fmt: str, columns: Sequence[tuple[str, str]], inner: str) -> str:
    """``SELECT c0, <line> FROM (inner) AS e``: the first column (the event id, for the next
    page), then the row as one line of ``fmt`` without its line end.

    ``vendor``: ``sqlite`` or ``postgresql`` (``connection.vendor``); ``columns``: (name, kind)
    in the inner SELECT's order, kinds as in the module's table; ``inner``: SQL whose columns
    are aliased ``c0``…``cN``. Run it with the inner SELECT's parameters (never None: the
    driver must read its placeholders, which turns ``%%`` into ``%``).
    """
    if fmt == "csv":
        cells = [_csv_cell(vendor, f"e.c{i}", kind) for i, (_, kind) in enumerate(columns)]
        # One printf (SQLite) / format (PostgreSQL) call: a chain of || copied the growing
        # line once per cell. "%%s" is "%s" once the driver has read its placeholders.
        function = "format" if vendor == "postgresql" else "printf"
        line = f"{function}('{','.join(['%%s'] * len(cells))}', {', '.join(cells)})"
    else:
        pairs = ", ".join(
            f"{_literal(name)}, {_json_value(vendor, f'e.c{i}', kind)}"
            for i, (name, kind) in enumerate(columns)
        )
        function = "json_build_object" if vendor == "postgresql" else "json_object"
        line = f"CAST({function}({pairs}) AS TEXT)"
    return f"SELECT e.c0, {line} FROM ({inner}) AS e"


def header(columns: Sequence[tuple[str, str]]) -> str:
    """The CSV header line, with its line end."""
    return ",".join(name for name, _ in columns) + NEWLINE["csv"]
