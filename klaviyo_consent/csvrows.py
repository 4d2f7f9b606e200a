"""Reading a consent CSV: streamed and decoded line by line, its header checked, each row
turned into a :class:`~klaviyo_consent.services.ledger.ConsentRequest` (``request_from_row``).

The one place a CSV file becomes rows and a row becomes a request; the workflow that records
them is :mod:`klaviyo_consent.services.imports`. Failures that concern the whole file (its
encoding, a NUL byte, its header, broken quoting) raise :class:`CsvFileError` naming the line;
a bad value in one row raises :class:`ConsentValidationError` from ``request_from_row``.
"""

from __future__ import annotations

import codecs
import csv
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import IO

from django.utils.dateparse import parse_datetime

from klaviyo_consent.choices import Method
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.phone import clean_country, normalize_phone_number
from klaviyo_consent.services.ledger import EARLIEST_CONSENT, ConsentRequest, Evidence, aware
from klaviyo_consent.services.membership import clean_members


class CsvFileError(Exception):
    """The file as a whole cannot be read on from ``line`` (encoding, NUL, header, quoting)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


COLUMNS = {
    "email",
    "phone_number",
    "external_id",
    "country",
    "email_marketing",
    "sms_marketing",
    "sms_transactional",
    "consented_at",
    "consent_text",
    "method_detail",
}

#: What a rejects file adds to each row it writes back: so a fixed rejects file imports as it
#: is, these two are accepted and ignored.
REJECT_COLUMNS = ("line", "reason")
PURPOSE_COLUMNS = {
    "email_marketing": ("email", "marketing"),
    "sms_marketing": ("sms", "marketing"),
    "sms_transactional": ("sms", "transactional"),
}
TRUE, FALSE = {"1", "true", "yes", "y"}, {"", "0", "false", "no", "n"}


def _flag(value: str, column: str) -> bool:
    text = (value or "").strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ConsentValidationError(f"{value!r} is not yes/no.", field=column)


#: Klaviyo's documented CSV date formats besides ISO 8601 (help centre, "Acceptable date and
#: timestamp formats"): MM/DD/YYYY or MM/DD/YY, with HH:MM[:SS]; a date alone is midnight.
_US_FORMATS = (
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%y %H:%M:%S",
    "%m/%d/%y %H:%M",
    "%m/%d/%Y",
    "%m/%d/%y",
    "%Y-%m-%d",
)


def parse_consented_at(raw: str, zone: tzinfo) -> datetime:
    """A CSV ``consented_at`` in any of Klaviyo's documented formats, as an aware datetime.

    ISO 8601 (``2014-09-30 13:34:08``, ``…T…``, fractions, ``+00:00``/``Z``), ``MM/DD/YYYY``
    and ``MM/DD/YY`` with ``HH:MM[:SS]``, a date alone (midnight) and Unix seconds
    (``1412098448``, UTC). A time without a zone is read in ``zone``. Raises
    :class:`ConsentValidationError` naming ``consented_at``.
    """
    text = raw.strip()
    moment: datetime | None = None
    if text.isascii() and text.isdigit():
        try:
            moment = datetime.fromtimestamp(int(text), tz=UTC)
        except (OverflowError, OSError, ValueError):  # past year 9999
            moment = None
    else:
        try:
            moment = parse_datetime(text)
        except ValueError:  # well-formed but impossible, e.g. 2023-02-30
            moment = None
        for pattern in _US_FORMATS if moment is None else ():
            try:
                moment = datetime.strptime(text, pattern)
            except ValueError:
                continue
            break
    if moment is None:
        raise ConsentValidationError(
            f"{raw!r} is not a date-time; use e.g. 2014-09-30 13:34:08, 2014-09-30T13:34:08Z or "
            "09/30/2014 13:34 (Klaviyo's CSV formats).",
            field="consented_at",
        )
    if moment.year < EARLIEST_CONSENT.year:
        # Before a zone is applied: year 1 in a zone west of UTC is before datetime.min.
        raise ConsentValidationError(
            f"{raw!r} is before {EARLIEST_CONSENT.year}: not a consent this ledger can hold.",
            field="consented_at",
        )
    return aware(moment, zone)


#: Columns stored in a column of limited length (as the API's serializer limits them).
_LIMITED = {"external_id": 255, "method_detail": 255, "email": 320, "phone_number": 64}


def request_from_row(
    row: dict[str, str],
    *,
    consent: str,
    list_id: str = "",
    custom_source: str = "",
    historical_import: bool = False,
    zone: tzinfo = UTC,
    source: str = "",
) -> ConsentRequest:
    """One CSV row as the service request: the one place a row's columns become its fields.

    Not the API's serializer: a CSV speaks yes/no flags and Klaviyo's CSV date formats
    (:func:`parse_consented_at`), which a JSON body does not. ``source`` is the file's name,
    kept as the evidence page (``file:<name>``) and the default ``method_detail``. Raises
    :class:`ConsentValidationError` naming the column.
    """
    if None in row:  # csv.DictReader's key for values beyond the header
        raise ConsentValidationError(
            f"{len(row[None])} value(s) more than the header has columns.",  # type: ignore[index]
            field="row",
        )
    for column in _LIMITED:
        if len(row.get(column) or "") > _LIMITED[column]:
            raise ConsentValidationError(
                f"At most {_LIMITED[column]} characters; this one has {len(row[column])}.",
                field=column,
            )
    subscriptions: dict[str, dict[str, bool]] = {}
    for column, (channel, purpose) in PURPOSE_COLUMNS.items():
        if _flag(row.get(column, ""), column):
            subscriptions.setdefault(channel, {})[purpose] = True
    consented_at = None
    if (row.get("consented_at") or "").strip():
        consented_at = parse_consented_at(row["consented_at"], zone)
    return ConsentRequest(
        consent=consent,
        subscriptions=subscriptions,
        email=row.get("email") or None,
        phone_number=row.get("phone_number") or None,
        external_id=row.get("external_id") or None,
        country=row.get("country") or None,
        list_id=list_id,
        method=Method.IMPORT,
        method_detail=row.get("method_detail") or f"CSV {source}",
        custom_source=custom_source,
        consent_text=row.get("consent_text") or "",
        consented_at=consented_at,
        historical_import=historical_import,
        evidence=Evidence(page_url=f"file:{source}"),
    )


def member_from_row(row: dict[str, str]) -> dict[str, str]:
    """A ``--members-only`` row: its identifiers for list membership, cleaned (a national
    phone number read in the row's ``country``). A consent column with a value is refused:
    membership never records consent, and ignoring it would drop it silently."""
    if None in row:  # csv.DictReader's key for values beyond the header
        raise ConsentValidationError(
            f"{len(row[None])} value(s) more than the header has columns.",  # type: ignore[index]
            field="row",
        )
    given = [c for c in PURPOSE_COLUMNS if (row.get(c) or "").strip()]
    if given:
        raise ConsentValidationError(
            "--members-only records list membership, not consent; empty this column or "
            "import consent without --members-only.",
            field=given[0],
        )
    phone = (row.get("phone_number") or "").strip()
    if phone:
        country = clean_country(row.get("country"), field="country")
        phone = normalize_phone_number(phone, field="phone_number", country=country)
    person = {"email": row.get("email") or "", "phone_number": phone}
    person["external_id"] = row.get("external_id") or ""
    try:
        [member] = clean_members([person])
    except ConsentValidationError as error:
        raise ConsentValidationError(
            error.message, field=(error.field or "row").removeprefix("profiles.0.")
        ) from error
    return {k: v for k, v in vars(member).items() if v}


#: The largest CSV field read (64 KiB): a consent text is a few hundred characters; a bigger
#: field is a broken file (an unclosed quote swallowing the rest) or an attack.
MAX_FIELD = 64 * 1024


@contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    """csv's field size limit (process-wide) lowered for the length of one import."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


#: Encodings read without ``--encoding``: UTF-8 with or without BOM, UTF-16 with its BOM.
#: Latin-1 and Windows-1252 cannot be told apart from each other (or from UTF-8 mojibake)
#: reliably, so they need ``--encoding``.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

#: Bytes read at a time: the file is never held whole, whatever its size.
CHUNK = 1 << 20


def file_encoding(path: Path, encoding: str | None) -> str:
    """``encoding`` if given (checked), else UTF-8 (BOM or not) or UTF-16 by its BOM.

    Raises :class:`ValueError` naming ``--encoding`` for a name Python does not know.
    """
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"--encoding {encoding!r} is not an encoding Python knows.") from None
        if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
            return "utf-8-sig"  # a BOM is not part of the first column's name
        return encoding
    with path.open("rb") as file:
        start = file.read(4)
    return next((name for bom, name in _BOMS if start.startswith(bom)), "utf-8-sig")


def _decode_error_line(path: Path, encoding: str) -> tuple[int, str, str]:
    """(line, byte in hex, reason) of the first byte ``encoding`` cannot decode in ``path``,
    found by a second, chunked pass (only on the failure path)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    lines = 0
    with path.open("rb") as file:
        while True:
            chunk = file.read(CHUNK)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                data = error.object
                before = bytes(data[: error.start]).decode(encoding, "replace")
                byte = bytes(data[error.start : error.start + 1]).hex()
                return lines + before.count("\n") + 1, byte, str(error.reason)
            lines += text.count("\n")
            if not chunk:
                return lines + 1, "", "unknown"


def _lines(path: Path, encoding: str, file: IO[str]) -> Iterator[str]:
    """The file's lines (endings kept, for csv), refusing a NUL or an undecodable byte by line."""
    number = 0
    try:
        for number, line in enumerate(file, start=1):  # noqa: B007 - read after the loop
            if "\x00" in line:
                raise CsvFileError(number, "a NUL character; this is not a text CSV file.")
            yield line
    except UnicodeDecodeError:
        line, byte, reason = _decode_error_line(path, encoding)
        name = encoding.upper().removesuffix("-SIG")
        hint = (
            "save the file as CSV UTF-8, or name its encoding, e.g. --encoding cp1252 "
            "(Excel on Windows) or --encoding latin-1"
            if encoding.lower().startswith("utf")
            else "check --encoding"
        )
        raise CsvFileError(line, f"byte 0x{byte} is not {name} text ({reason}); {hint}.") from None


def read_rows(path: Path, encoding: str | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """Each data row of the CSV at ``path`` as (line number, {column: value}), streamed.

    Constant memory: the file is decoded as it is read. The header is checked first (present,
    no column twice, only :data:`COLUMNS`). A row with more values than the header has columns
    is yielded with the extra values under the key ``None`` (``request_from_row`` refuses it).
    Raises :class:`CsvFileError` (with its line) for a problem of the file itself, and
    :class:`ValueError` for an unknown ``encoding``; ``OSError`` if it cannot be opened.
    """
    name = file_encoding(path, encoding)
    with path.open("r", encoding=name, newline="") as file, _field_limit(MAX_FIELD):
        # strict: an unclosed quote is an error at the end of the file, not a last field that
        # silently swallows every line after it.
        reader = csv.DictReader(_lines(path, name, file), strict=True)
        last = 1
        try:
            header = reader.fieldnames or []
            if not header:
                raise CsvFileError(1, "no header row.")
            repeated = sorted(name for name, n in Counter(header).items() if n > 1)
            if repeated:
                raise CsvFileError(1, f"column(s) named twice: {', '.join(repeated)}.")
            unknown = sorted(set(header) - COLUMNS - set(REJECT_COLUMNS))
            if unknown:
                raise CsvFileError(1, f"unknown column(s) {', '.join(unknown)}.")
            last = 1
            for row in reader:
                last = reader.line_num
                for column in REJECT_COLUMNS:
                    row.pop(column, None)
                yield last, row
        except csv.Error as error:
            line = last + 1
            if "field larger than field limit" in str(error):
                raise CsvFileError(
                    line,
                    f"a field is longer than {MAX_FIELD // 1024} KiB (often an unclosed quote).",
                ) from None
            raise CsvFileError(line, f"not valid CSV ({error}).") from None
