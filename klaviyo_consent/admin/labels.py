"""Human words for the admin: Klaviyo's field names and values as staff read them, local times.

Pure functions, no queries. Klaviyo's own values stay visible (in a ``title``) so nobody
translates back by guessing; the page shows the words.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.formats import date_format

from klaviyo_consent.choices import Channel, Consent, DeliveryStatus, Method, Purpose, Suppression


def subscription_label(channel: str, purpose: str) -> str:
    """``email``, ``marketing`` → "Email marketing": Klaviyo's
    ``subscriptions.<channel>.<purpose>`` as staff say it."""
    channel_label = Channel(channel).label if channel in Channel.values else channel
    purpose_label = Purpose(purpose).label if purpose in Purpose.values else purpose
    return f"{channel_label} {purpose_label.lower()}"


#: Klaviyo's leaf fields (profile ``subscriptions.<channel>.<purpose>``, revision 2026-07-15)
#: under the names the page shows.
MIRROR_LABELS = {
    "consent": "Consent",
    "method": "Method",
    "method_detail": "Method detail",
    "custom_method_detail": "Source",
    "consent_timestamp": "When",
    "double_optin": "Double opt-in",
    "suppression": "Suppression",
    "can_receive": "Can receive",
}

#: What Klaviyo writes as a code (``PREFERENCE_PAGE``, ``TEXT``), not as a sentence.
_CODE = re.compile(r"[A-Z][A-Z0-9_]*")
#: Codes that are acronyms, kept upper-case ("API", "SMS").
_ACRONYMS = frozenset({"API", "SMS", "URL", "CSV", "STOP"})

CONSENT_LABELS = dict(Consent.choices)
VERDICT_LABELS = dict(DeliveryStatus.choices)
METHOD_LABELS = dict(Method.choices)
SUPPRESSION_LABELS = dict(Suppression.choices)


def humanize_code(value: Any) -> str:
    """Klaviyo's upper-case codes read as words: ``PREFERENCE_PAGE`` → "Preference page"."""
    if value in (None, ""):
        return "—"
    text = str(value)
    if text in CONSENT_LABELS:
        return CONSENT_LABELS[text]
    if text in _ACRONYMS:
        return text
    if _CODE.fullmatch(text):
        words = [w if w in _ACRONYMS else w.lower() for w in text.split("_")]
        return " ".join(words)[:1].upper() + " ".join(words)[1:]
    return text


def local_time(value: datetime | str | None) -> str:
    """A moment in the current (site or activated) time zone, to the minute: "30 Nov 2026, 09:00
    UTC"; Klaviyo's ISO 8601 strings are parsed first. Unreadable input is shown as given."""
    if value in (None, ""):
        return "—"
    moment = value if isinstance(value, datetime) else parse_datetime(str(value))
    if moment is None:
        return str(value)
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    return date_format(timezone.localtime(moment), "j M Y, H:i T")


def suppression_text(entries: Any) -> str:
    """Klaviyo's ``suppression`` list as words: "User suppressed (since 30 Nov 2026, 09:00 UTC)"."""
    if not entries:
        return "None"
    parts = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        since = entry.get("timestamp")
        parts.append(
            humanize_code(entry.get("reason")) + (f" (since {local_time(since)})" if since else "")
        )
    return ", ".join(parts) or "None"


def yes_no(value: Any) -> str:
    if value is None:
        return "—"
    return "Yes" if value else "No"


def event_title(event: Any) -> str:
    """An event as staff name it: "Email marketing: Subscribed" / "Email marketing: suppress
    request" / "SMS marketing: Unsubscribed (in Klaviyo)"."""
    label = subscription_label(event.channel, event.purpose)
    if getattr(event, "suppression", None):
        what = f"{SUPPRESSION_LABELS.get(event.suppression, event.suppression).lower()} request"
    else:
        what = CONSENT_LABELS.get(event.consent, event.consent)
    where = " (in Klaviyo)" if event.method == Method.KLAVIYO else ""
    return f"{label}: {what}{where}"


#: An ISO 8601 moment inside a sentence (services write reasons with UTC ISO times).
_ISO_MOMENT = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?"
)


def humanize_reason(text: str) -> str:
    """A verdict's reason with its ISO times as local times ("since 30 Nov 2026, 08:16 UTC")."""
    return _ISO_MOMENT.sub(lambda match: local_time(match.group(0)), text or "")
