"""Import consent from a CSV file: all rows are recorded, or none (the error names the line)."""

from __future__ import annotations

import codecs
import csv
import io
import zoneinfo
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from klaviyo_consent.choices import Consent, Method
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.phone import clean_country, normalize_phone_number
from klaviyo_consent.services.ledger import (
    EARLIEST_CONSENT,
    ConsentRequest,
    Evidence,
    aware,
    record_consent,
)
from klaviyo_consent.services.membership import MAX_PROFILES, clean_members, record_membership
from klaviyo_consent.validators import KLAVIYO_ID

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


#: The largest CSV field read (64 KiB): a consent text is a few hundred characters; a bigger
#: field is a broken file (an unclosed quote swallowing the rest) or an attack.
MAX_FIELD = 64 * 1024

#: Encodings read without ``--encoding``: UTF-8 with or without BOM, UTF-16 with its BOM.
#: Latin-1 and Windows-1252 cannot be told apart from each other (or from UTF-8 mojibake)
#: reliably, so they need ``--encoding``.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_csv(data: bytes, encoding: str | None, path: Path) -> str:
    """The file's text: in ``encoding`` if given, else UTF-8 (BOM or not) or UTF-16 by its BOM.

    Raises :class:`CommandError` naming the line of the first undecodable byte, or of a NUL
    character (which no database text column stores, and which marks a binary file).
    """
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise CommandError(f"--encoding {encoding!r} is not an encoding Python knows.")
    else:
        encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].decode(encoding, "replace").count("\n") + 1
        byte = data[error.start : error.start + 1].hex()
        hint = (
            "save the file as CSV UTF-8, or name its encoding, e.g. --encoding cp1252 "
            "(Excel on Windows) or --encoding latin-1"
            if encoding.startswith("utf")
            else "check --encoding"
        )
        raise CommandError(
            f"{path}, line {line}: byte 0x{byte} is not {encoding.upper().removesuffix('-SIG')} "
            f"text ({error.reason}); "
            f"{hint}. Nothing was imported."
        ) from None
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        text = text.removeprefix("\ufeff")
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise CommandError(
            f"{path}, line {line}: a NUL character; this is not a text CSV file. "
            "Nothing was imported."
        )
    return text


def member_from_row(row: dict[str, str]) -> dict[str, str]:
    """A ``--members-only`` row: its identifiers for list membership, cleaned (a national
    phone number read in the row's ``country``). A consent column with a value is refused:
    membership never records consent, and ignoring it would drop it silently."""
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


def _record_members(list_id: str, batch: list[tuple[int, dict[str, str]]]) -> None:
    """Record one batch of ``--members-only`` rows; an error names its row's line."""
    try:
        record_membership(list_id, [p for _, p in batch], action="add", method=Method.IMPORT)
    except ConsentValidationError as error:
        parts = (error.field or "").split(".")
        index = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        raise _MemberRowError(batch[index][0], error) from error


class _MemberRowError(Exception):
    def __init__(self, line: int, error: ConsentValidationError) -> None:
        super().__init__(error.message)
        self.line, self.error = line, error


@contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    """csv's field size limit (process-wide) lowered for the length of one import."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _zone(name: str | None) -> tzinfo:
    if not name:
        return timezone.get_default_timezone()
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise CommandError(
            f"--timezone {name!r} is not an IANA time zone, e.g. Europe/London."
        ) from exc


class Command(BaseCommand):
    help = (
        "Record consent from a CSV with a header row: email, phone_number, external_id, "
        "country (ISO 3166-1 alpha-2, for national phone numbers), email_marketing, "
        "sms_marketing, sms_transactional (yes/no), consented_at, consent_text, method_detail."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--list-id", default="")
        parser.add_argument("--custom-source", default="")
        parser.add_argument(
            "--unsubscribe", action="store_true", help="Rows are withdrawals, not consents."
        )
        parser.add_argument(
            "--historical-import",
            action="store_true",
            help="Consent given earlier: every row needs consented_at (Klaviyo's rule).",
        )
        parser.add_argument(
            "--members-only",
            action="store_true",
            help="Rows are people to add to --list-id without consent (Klaviyo keeps them "
            "NEVER_SUBSCRIBED); only email, phone_number, external_id and country are read.",
        )
        parser.add_argument(
            "--encoding",
            default=None,
            help="The file's encoding, e.g. cp1252 or latin-1 (default: UTF-8, with or without "
            "BOM, or UTF-16 with BOM).",
        )
        parser.add_argument(
            "--timezone",
            default=None,
            help="IANA zone a consented_at without a zone is read in (default: TIME_ZONE).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}") from exc
        zone = _zone(options["timezone"])
        consent = Consent.UNSUBSCRIBED if options["unsubscribe"] else Consent.SUBSCRIBED
        text = decode_csv(data, options["encoding"], path)
        members_only = options["members_only"]
        if members_only and not options["list_id"]:
            raise CommandError("--members-only needs --list-id: the list to add the rows to.")
        if members_only and not KLAVIYO_ID.fullmatch(options["list_id"]):
            raise CommandError("--list-id is not a Klaviyo list id: letters and digits only.")
        members: list[tuple[int, dict[str, str]]] = []
        count = 0
        line = 1
        try:
            with _field_limit(MAX_FIELD), transaction.atomic():
                # strict: an unclosed quote is an error at the end of the file, not a last
                # field that silently swallows every line after it.
                reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
                header = reader.fieldnames or []
                if not header:
                    raise CommandError(f"{path}, line 1: no header row. Nothing was imported.")
                repeated = sorted(name for name, n in Counter(header).items() if n > 1)
                if repeated:
                    raise CommandError(
                        f"{path}, line 1: column(s) named twice: {', '.join(repeated)}. "
                        "Nothing was imported."
                    )
                unknown = sorted(set(header) - COLUMNS)
                if unknown:
                    raise CommandError(f"{path}, line 1: unknown column(s) {', '.join(unknown)}.")
                for row in reader:
                    line = reader.line_num
                    if None in row:
                        raise ConsentValidationError(
                            f"{len(row[None])} value(s) more than the header has columns.",
                            field="row",
                        )
                    if members_only:
                        members.append((line, member_from_row(row)))
                        if len(members) == MAX_PROFILES:
                            _record_members(options["list_id"], members)
                            members = []
                        count += 1
                        continue
                    record_consent(
                        request_from_row(
                            row,
                            consent=consent,
                            list_id=options["list_id"],
                            custom_source=options["custom_source"],
                            historical_import=options["historical_import"],
                            zone=zone,
                            source=path.name,
                        )
                    )
                    count += 1
                if members:
                    _record_members(options["list_id"], members)
        except _MemberRowError as failure:
            raise CommandError(
                f"{path}, line {failure.line}: {failure.error.field or 'row'}: "
                f"{failure.error.message} Nothing was imported."
            ) from failure
        except ConsentValidationError as error:
            raise CommandError(
                f"{path}, line {line}: {error.field or 'row'}: {error.message} "
                "Nothing was imported."
            ) from error
        except csv.Error as error:
            if "field larger than field limit" in str(error):
                raise CommandError(
                    f"{path}, line {line + 1}: a field is longer than {MAX_FIELD // 1024} KiB "
                    "(often an unclosed quote). Nothing was imported."
                ) from None
            raise CommandError(
                f"{path}, line {line + 1}: not valid CSV ({error}). Nothing was imported."
            ) from error
        except CommandError:
            raise
        except Exception as error:  # noqa: BLE001 - an import names its line, never a traceback
            raise CommandError(
                f"{path}, line {line}: {type(error).__name__}: {error} Nothing was imported."
            ) from error
        if members_only:
            self.stdout.write(
                f"Recorded {count} row(s) of {path} as members of list {options['list_id']} "
                "(no consent)."
            )
            return
        self.stdout.write(f"Recorded consent from {count} row(s) of {path}.")
