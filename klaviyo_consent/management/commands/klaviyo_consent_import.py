"""Import consent from a CSV file: all rows are recorded, or none (the error names the line)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils.dateparse import parse_datetime

from klaviyo_consent.choices import Consent, Method
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.services.ledger import ConsentRequest, Evidence, record_consent

COLUMNS = {
    "email",
    "phone_number",
    "external_id",
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


class Command(BaseCommand):
    help = (
        "Record consent from a CSV with a header row: email, phone_number, external_id, "
        "email_marketing, sms_marketing, sms_transactional (yes/no), consented_at, "
        "consent_text, method_detail."
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

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        try:
            handle = path.open(newline="", encoding="utf-8-sig")
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}") from exc
        with handle, transaction.atomic():
            reader = csv.DictReader(handle)
            unknown = sorted(set(reader.fieldnames or []) - COLUMNS)
            if unknown:
                raise CommandError(f"{path}, line 1: unknown column(s) {', '.join(unknown)}.")
            count = 0
            for row in reader:
                try:
                    record_consent(self._request(row, options, path))
                except ConsentValidationError as error:
                    raise CommandError(
                        f"{path}, line {reader.line_num}: {error.field or 'row'}: {error.message} "
                        "Nothing was imported."
                    ) from error
                count += 1
        self.stdout.write(f"Recorded consent from {count} row(s) of {path}.")

    def _request(self, row: dict[str, str], options: dict[str, Any], path: Path) -> ConsentRequest:
        subscriptions: dict[str, dict[str, bool]] = {}
        for column, (channel, purpose) in PURPOSE_COLUMNS.items():
            if _flag(row.get(column, ""), column):
                subscriptions.setdefault(channel, {})[purpose] = True
        consented_at = None
        if (row.get("consented_at") or "").strip():
            consented_at = parse_datetime(row["consented_at"].strip())
            if consented_at is None:
                raise ConsentValidationError(
                    f"{row['consented_at']!r} is not an ISO 8601 date-time.", field="consented_at"
                )
        return ConsentRequest(
            consent=Consent.UNSUBSCRIBED if options["unsubscribe"] else Consent.SUBSCRIBED,
            subscriptions=subscriptions,
            email=row.get("email") or None,
            phone_number=row.get("phone_number") or None,
            external_id=row.get("external_id") or None,
            list_id=options["list_id"],
            method=Method.IMPORT,
            method_detail=row.get("method_detail") or f"CSV {path.name}",
            custom_source=options["custom_source"],
            consent_text=row.get("consent_text") or "",
            consented_at=consented_at,
            historical_import=options["historical_import"],
            evidence=Evidence(page_url=f"file:{path.name}"),
        )
