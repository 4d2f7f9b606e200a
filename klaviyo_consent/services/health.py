"""Klaviyo's health as the app sees it: remember the last 401, 403 and 429.

A 401 (key revoked), 403 (scope missing) or 429 (rate limited) says nothing about one consent
but everything about the integration; ``note_answer`` keeps the newest of each for the admin
dashboard (``services/reports.py``). Statuses: Klaviyo's error responses (spec revision
2026-07-15, "Errors"; docs, "Rate limits").
"""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from klaviyo_consent.exceptions import KlaviyoAPIError
from klaviyo_consent.models import KlaviyoHealth

#: The answers the dashboard reports.
WATCHED_STATUSES = (401, 403, 429)


def note_answer(error: KlaviyoAPIError, operation: str, *, now: datetime | None = None) -> None:
    """Remember ``error`` when its status is watched (401/403/429); anything else is ignored.

    One UPDATE (an INSERT the first time); ``detail`` is the error's message, which quotes
    Klaviyo's ``errors[].detail`` and never the API key.
    """
    if error.status not in WATCHED_STATUSES:
        return
    fields = {
        "last_seen_at": now or timezone.now(),
        "operation": operation[:64],
        "detail": str(error)[:2000],
    }
    rows = KlaviyoHealth.objects.filter(status=error.status)
    if rows.update(seen=F("seen") + 1, **fields):
        return
    try:
        with transaction.atomic():
            KlaviyoHealth.objects.create(status=error.status, seen=1, **fields)
    except IntegrityError:  # another worker created it meanwhile
        rows.update(seen=F("seen") + 1, **fields)
