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

#: Line ends of each format: LF for both (PostgreSQL's COPY writes LF; every CSV reader takes
#: it). A line end inside a quoted cell is kept as it was given.
NEWLINE = {"csv": "\n", "jsonl": "\n"}


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


def _csv_value(vendor: str, column: str, kind: str) -> str:
    """One cell's text before CSV quoting; NULL stays NULL (an empty cell)."""
    if kind == "ip":
        return _ip(vendor, column)
    if kind == "bool":
        return f"CASE WHEN {column} THEN 'true' ELSE 'false' END"
    if kind == "time":
        return _time(vendor, column)
    if kind in ("json", "int"):
        return f"CAST({column} AS TEXT)"
    return (
        f"CASE WHEN substr({column}, 1, 1) IN ({_PREFIXES}) "
        f"THEN {_literal(chr(39))} || {column} ELSE {column} END"
    )


def _csv_cell(vendor: str, column: str, kind: str) -> str:
    """One cell as printf/format writes it: text and JSON quoted (``"`` doubled); NULL is
    written as nothing (an empty cell)."""
    value = _csv_value(vendor, column, kind)
    if kind in ("text", "json"):
        return f"'\"' || replace({value}, '\"', '\"\"') || '\"'"
    return value


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


def copy(fmt: str, columns: Sequence[tuple[str, str]], inner: str) -> str:
    """PostgreSQL: ``COPY (…) TO STDOUT`` of the whole export (``inner`` with its parameters
    already bound: COPY takes none), one snapshot, streamed by the server's own writer.

    CSV: the cells of :func:`lines` before quoting, quoted by COPY where RFC 4180 needs it (a
    delimiter, a quote, a line end; an empty string is ``""``, NULL is empty), with a header.
    JSON Lines: each row's ``json_build_object`` text, through COPY's CSV writer with a quote
    and a delimiter (0x1E, 0x1F) no JSON text holds raw (json escapes every control
    character), so each line is written exactly as the object's text.
    """
    if fmt == "csv":
        cells = ", ".join(
            f'{_csv_value("postgresql", f"e.c{i}", kind)} AS "{name}"'
            for i, (name, kind) in enumerate(columns)
        )
        query, options = f"SELECT {cells} FROM ({inner}) AS e", "FORMAT csv, HEADER"
    else:
        pairs = ", ".join(
            f"{_literal(name)}, {_json_value('postgresql', f'e.c{i}', kind)}"
            for i, (name, kind) in enumerate(columns)
        )
        query = f"SELECT CAST(json_build_object({pairs}) AS TEXT) FROM ({inner}) AS e"
        options = "FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e'"
    return f"COPY ({query}) TO STDOUT ({options})"


def header(columns: Sequence[tuple[str, str]]) -> str:
    """The CSV header line, with its line end."""
    return ",".join(name for name, _ in columns) + NEWLINE["csv"]
