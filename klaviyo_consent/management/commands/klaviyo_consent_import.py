"""Import consent from a CSV file: all rows are recorded, or none (the error names the line)."""

from __future__ import annotations

import csv
import zoneinfo
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from klaviyo_consent.choices import Consent, Method
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.services.ledger import ConsentRequest, Evidence, aware, record_consent

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
    if text.isdigit():
        moment = datetime.fromtimestamp(int(text), tz=UTC)
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
    return aware(moment, zone)


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
            "--timezone",
            default=None,
            help="IANA zone a consented_at without a zone is read in (default: TIME_ZONE).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        try:
            handle = path.open(newline="", encoding="utf-8-sig")
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}") from exc
        options["zone"] = _zone(options["timezone"])
        count = 0
        line = 1
        try:
            with handle, transaction.atomic():
                reader = csv.DictReader(handle)
                unknown = sorted(set(reader.fieldnames or []) - COLUMNS)
                if unknown:
                    raise CommandError(f"{path}, line 1: unknown column(s) {', '.join(unknown)}.")
                for row in reader:
                    line = reader.line_num
                    if None in row:
                        raise ConsentValidationError(
                            f"{len(row[None])} value(s) more than the header has columns.",
                            field="row",
                        )
                    record_consent(self._request(row, options, path))
                    count += 1
        except ConsentValidationError as error:
            raise CommandError(
                f"{path}, line {line}: {error.field or 'row'}: {error.message} "
                "Nothing was imported."
            ) from error
        except UnicodeDecodeError as error:
            raise CommandError(
                f"{path}, after line {line}: not UTF-8 text ({error.reason}); save the file as "
                "CSV UTF-8. Nothing was imported."
            ) from error
        except csv.Error as error:
            raise CommandError(
                f"{path}, line {line + 1}: not valid CSV ({error}). Nothing was imported."
            ) from error
        except CommandError:
            raise
        except Exception as error:  # noqa: BLE001 - an import names its line, never a traceback
            raise CommandError(
                f"{path}, line {line}: {type(error).__name__}: {error} Nothing was imported."
            ) from error
        self.stdout.write(f"Recorded consent from {count} row(s) of {path}.")

    def _request(self, row: dict[str, str], options: dict[str, Any], path: Path) -> ConsentRequest:
        subscriptions: dict[str, dict[str, bool]] = {}
        for column, (channel, purpose) in PURPOSE_COLUMNS.items():
            if _flag(row.get(column, ""), column):
                subscriptions.setdefault(channel, {})[purpose] = True
        consented_at = None
        if (row.get("consented_at") or "").strip():
            consented_at = parse_consented_at(row["consented_at"], options["zone"])
        return ConsentRequest(
            consent=Consent.UNSUBSCRIBED if options["unsubscribe"] else Consent.SUBSCRIBED,
            subscriptions=subscriptions,
            email=row.get("email") or None,
            phone_number=row.get("phone_number") or None,
            external_id=row.get("external_id") or None,
            country=row.get("country") or None,
            list_id=options["list_id"],
            method=Method.IMPORT,
            method_detail=row.get("method_detail") or f"CSV {path.name}",
            custom_source=options["custom_source"],
            consent_text=row.get("consent_text") or "",
            consented_at=consented_at,
            historical_import=options["historical_import"],
            evidence=Evidence(page_url=f"file:{path.name}"),
        )
