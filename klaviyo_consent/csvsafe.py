"""CSV the app writes never carries a live spreadsheet formula (OWASP "CSV Injection").

Values are stored and sent to Klaviyo exactly as given (``=HYPERLINK(...)`` is a legal
``consent_text``); only when one leaves the app in a CSV file does a cell that a spreadsheet
would run get a leading apostrophe, which Excel, LibreOffice and Google Sheets show as text.
CSV written in Python goes through :func:`writer`; the export (services/export_sql.py) has
its database write the same rule from :data:`FORMULA_PREFIXES`, so that tuple is its one source.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any

#: A cell starting with one of these is read as a formula (OWASP: ``=``, ``+``, ``-``, ``@``,
#: tab, carriage return); full-width ``＝``/``＋``/``－``/``＠`` are too, by some spreadsheets.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralize(value: Any) -> Any:
    """``value`` as a CSV cell no spreadsheet runs: a string starting with a formula prefix
    gets a leading ``'``. Numbers, None and other values pass unchanged (a negative number
    is a number, not a formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class SafeWriter:
    """``csv.writer`` whose rows are neutralised cell by cell; same arguments as csv.writer."""

    def __init__(self, file: Any, *args: Any, **kwargs: Any) -> None:
        self._writer = csv.writer(file, *args, **kwargs)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([neutralize(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(file: Any, *args: Any, **kwargs: Any) -> SafeWriter:
    """A :class:`SafeWriter` on ``file``: use it wherever the app writes CSV."""
    return SafeWriter(file, *args, **kwargs)
