"""Klaviyo webhooks: verify a delivery, then re-read the profiles it names from Klaviyo.

A webhook is only a nudge. Its payload is never taken as consent: the profiles it names are read
back with ``GET /api/profiles`` through :func:`services.mirror.pull_profiles`, exactly as polling
does, so a changed consent reaches the ledger by one path (an inbound ``klaviyo`` event written by
``record_drift``) whether a webhook or the poller noticed it first.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from klaviyo_consent import strict_json
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import (
    ConsentValidationError,
    KlaviyoConsentError,
    MalformedWebhook,
    WebhookRejected,
)
from klaviyo_consent.models import Profile, WebhookDelivery, normalize_email
from klaviyo_consent.phone import normalize_phone_number
from klaviyo_consent.services.mirror import local_profiles
from klaviyo_consent.services.verify import pull_profiles
from klaviyo_consent.validators import KLAVIYO_ID

logger = logging.getLogger("klaviyo_consent.webhooks")

#: The topics that announce a consent change; items on any other topic are ignored.
CONSENT_TOPICS: tuple[str, ...] = (
    "event:klaviyo.subscribed_to_email_marketing",
    "event:klaviyo.unsubscribed_from_email_marketing",
    "event:klaviyo.manually_suppressed_from_email_marketing",
    "event:klaviyo.manually_unsuppressed_from_email_marketing",
    "event:klaviyo.updated_email_preferences",
    "event:klaviyo.subscribed_to_sms_marketing",
    "event:klaviyo.unsubscribed_from_sms_marketing",
)

WEBHOOK_ID_HEADER = "Klaviyo-Webhook-Id"
SIGNATURE_HEADER = "Klaviyo-Signature"
TIMESTAMP_HEADER = "Klaviyo-Timestamp"

#: Past this, a number in Klaviyo-Timestamp is read as milliseconds (as seconds it is year 5138).
_MILLISECONDS_FROM = 1e11


@dataclass
class WebhookReport:
    """What one delivery did: items received, profiles re-read, items ignored."""

    received: int = 0
    profiles_refreshed: int = 0
    ignored: int = 0
    error: str = ""
    #: Processing raised (not a Klaviyo outage): the endpoint answers 500 so Klaviyo resends.
    failed: bool = False

    def as_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "received": self.received,
            "profiles_refreshed": self.profiles_refreshed,
            "ignored": self.ignored,
        }
        if self.error:
            answer["error"] = self.error
        return answer


def sign(body: bytes, timestamp: str, secret: str) -> str:
    """Klaviyo's signature: hex HMAC-SHA256 keyed with the secret over body + timestamp."""
    return hmac.new(secret.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()


def parse_timestamp(value: str) -> float | None:
    """Seconds since the epoch for a Klaviyo-Timestamp, or None when it cannot be read.

    Klaviyo does not document the format, so Unix seconds (integer or decimal), Unix
    milliseconds and ISO 8601 (naive means UTC) are all accepted.
    """
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        moment = parse_datetime(text)
        if moment is None:
            return None
        if timezone.is_naive(moment):
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if not math.isfinite(number):
        return None
    return number / 1000 if abs(number) >= _MILLISECONDS_FROM else number


def verify_webhook(
    body: bytes, headers: Mapping[str, str], *, now: float | None = None
) -> WebhookDelivery:
    """Check a delivery's signature, age, webhook id and novelty, then store it.

    Storing is part of verifying: the unique signature is what makes the next copy of a
    processed delivery a replay. A copy of a delivery that was stored but never processed
    (processing raised, or Klaviyo could not be reached) is returned again, so Klaviyo's resend
    is processed: webhooks are handled at least once. Raises :class:`WebhookRejected` (nothing
    stored) or :class:`MalformedWebhook` (signed, but not a JSON envelope; nothing stored). ``now``
    (Unix seconds) replaces the clock in tests.
    """
    # The secret is never held in a local variable: the DEBUG=True error page prints them all.
    if not consent_settings.WEBHOOK_SECRET:
        raise WebhookRejected(
            "not_configured", 'Webhooks are not configured: KLAVIYO_CONSENT["WEBHOOK_SECRET"].'
        )
    given = {name.lower(): value for name, value in headers.items()}
    values = {}
    for name in (WEBHOOK_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER):
        value = (given.get(name.lower()) or "").strip()
        if not value:
            raise WebhookRejected("missing_header", f"The {name} header is missing.")
        values[name] = value
    webhook_id, stamp = values[WEBHOOK_ID_HEADER], values[TIMESTAMP_HEADER]

    expected = sign(body, stamp, consent_settings.WEBHOOK_SECRET)
    offered = values[SIGNATURE_HEADER].lower().encode("utf-8", "replace")
    if not hmac.compare_digest(expected.encode(), offered):
        raise WebhookRejected(
            "bad_signature", f"The {SIGNATURE_HEADER} does not match the body and timestamp."
        )

    sent_at = parse_timestamp(stamp) if len(stamp) <= 64 else None
    if sent_at is None:
        raise WebhookRejected("bad_timestamp", f"The {TIMESTAMP_HEADER} cannot be read.")
    tolerance = float(consent_settings.WEBHOOK_TOLERANCE)
    skew = (time.time() if now is None else now) - sent_at
    if abs(skew) > tolerance:
        side = "old" if skew > 0 else "in the future"
        raise WebhookRejected(
            "stale_timestamp",
            f"The {TIMESTAMP_HEADER} is {abs(skew):.0f} s {side}; "
            f"WEBHOOK_TOLERANCE allows {tolerance:.0f} s.",
        )

    document = _parse(body)
    meta = document.get("meta")
    meta_id = meta.get("klaviyo_webhook_id") if isinstance(meta, dict) else None
    if len(webhook_id) > 255 or not isinstance(meta_id, str) or meta_id != webhook_id:
        raise WebhookRejected(
            "webhook_id_mismatch",
            f"meta.klaviyo_webhook_id does not match the {WEBHOOK_ID_HEADER} header.",
        )

    items = document["data"]
    topics = sorted(
        {
            item["topic"]
            for item in items
            if isinstance(item, dict) and isinstance(item.get("topic"), str)
        }
    )
    try:
        with transaction.atomic():
            return WebhookDelivery.objects.create(
                webhook_id=webhook_id,
                signature=expected,
                klaviyo_timestamp=stamp,
                topics=topics,
                body=document,
            )
    except IntegrityError:
        stored = WebhookDelivery.objects.filter(
            signature=expected, processed_at__isnull=True
        ).first()
        if stored is not None:
            return stored  # stored, never processed: Klaviyo's resend gets its second chance
        raise WebhookRejected("replay", "This delivery was already accepted.") from None


def _parse(body: bytes) -> dict[str, Any]:
    try:
        document = strict_json.loads(body)
    except strict_json.UnsafeJSON as exc:
        raise MalformedWebhook(str(exc)) from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise MalformedWebhook('The body must be a JSON object with a "data" list.')
    return document


@dataclass
class Identifiers:
    """Profile identifiers found in one webhook item."""

    profile_ids: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    phone_numbers: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.profile_ids or self.emails or self.phone_numbers)


_EMAIL_KEYS = frozenset({"email", "$email", "email_address"})
_PHONE_KEYS = frozenset({"phone_number", "$phone_number"})
_PROFILE_ID_KEYS = frozenset({"profile_id", "$profile_id", "klaviyo_id", "profile"})
_MAX_DEPTH = 8
_MAX_NODES = 5000


def _walk(node: Any) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(key, value, parent) for every entry of every object in ``node``, breadth first, bounded."""
    queue: deque[tuple[Any, int]] = deque([(node, 0)])
    seen = 0
    while queue and seen < _MAX_NODES:
        current, depth = queue.popleft()
        seen += 1
        children: list[Any] = []
        if isinstance(current, dict):
            for key, value in current.items():
                yield str(key), value, current
                children.append(value)
        elif isinstance(current, list):
            children = current
        if depth < _MAX_DEPTH:
            queue.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def extract_identifiers(payload: Any) -> Identifiers:
    """Every profile identifier in a webhook item's ``payload``, wherever it sits.

    Assumption: Klaviyo documents the envelope but not the payload of the consent topics, so no
    one shape is trusted (``payload.data.attributes.profile…``, ``payload.profile``,
    ``payload.attributes``…). The payload is walked and values are collected under ``email`` /
    ``phone_number`` (also ``$``-prefixed), ``profile_id``, a string ``profile``, and the ``id``
    of any object whose ``type`` is ``profile``. A wrong guess costs at most one profile re-read
    too many or too few: consent is always read from Klaviyo's API, and polling catches what a
    missed webhook leaves behind.
    """
    found = Identifiers()
    for key, value, parent in _walk(payload):
        if not isinstance(value, str) or not value.strip():
            continue
        name = key.lower()
        if name in _EMAIL_KEYS and "@" in value:
            found.emails.add(normalize_email(value))
        elif name in _PHONE_KEYS:
            try:
                found.phone_numbers.add(normalize_phone_number(value))
            except ConsentValidationError:
                continue
        elif name in _PROFILE_ID_KEYS or (name == "id" and parent.get("type") == "profile"):
            # Klaviyo's id alphabet only: anything else never reaches a request carrying the key.
            if KLAVIYO_ID.fullmatch(value.strip()):
                found.profile_ids.add(value.strip())
    return found


def _local_profiles(wanted: Identifiers) -> list[Profile]:
    if not wanted:
        return []
    return list(local_profiles(wanted.profile_ids, wanted.emails, wanted.phone_numbers))


def handle_webhook(delivery: WebhookDelivery) -> WebhookReport:
    """Process a stored delivery and record the outcome on its row, success or failure.

    Safe to run again on the same delivery (re-reading is idempotent). Every run counts in
    ``attempts``; a failure (Klaviyo unreachable, or any exception while processing) is kept in
    ``error`` with ``failed_at`` and leaves ``processed_at`` empty, so Klaviyo's resend or
    :func:`retry_unprocessed` processes it again. ``report.failed`` says whether it failed.
    """
    report = WebhookReport()
    try:
        with transaction.atomic():
            _process(delivery, report)
    except Exception as exc:  # noqa: BLE001 - recorded on the row, never lost
        report.error = f"Processing failed: {type(exc).__name__}: {exc}"
        report.failed = True
        logger.exception("Webhook delivery %s: %s", delivery.pk, report.error)
    now = timezone.now()
    delivery.attempts += 1
    delivery.processed_at = None if report.error else now
    delivery.error = report.error
    if report.error:
        delivery.failed_at = now
    delivery.save(update_fields=["processed_at", "error", "attempts", "failed_at"])
    return report


def retry_unprocessed(*, limit: int | None = None) -> list[WebhookReport]:
    """Process again every stored delivery that was never processed, oldest first.

    Used by ``manage.py klaviyo_consent_retry_webhooks``; ``limit`` caps how many are tried.
    """
    pending = WebhookDelivery.objects.filter(processed_at__isnull=True).order_by(
        "received_at", "id"
    )
    if limit is not None:
        pending = pending[:limit]
    return [handle_webhook(delivery) for delivery in pending]


def _process(delivery: WebhookDelivery, report: WebhookReport) -> None:
    """Re-read from Klaviyo every local profile the delivery's consent items name."""
    per_item: list[Identifiers | None] = []
    for item in delivery.body.get("data") or []:
        report.received += 1
        if not isinstance(item, dict) or item.get("topic") not in CONSENT_TOPICS:
            per_item.append(None)
            continue
        per_item.append(extract_identifiers(item.get("payload")))

    wanted = Identifiers()
    for found in filter(None, per_item):
        wanted.profile_ids |= found.profile_ids
        wanted.emails |= found.emails
        wanted.phone_numbers |= found.phone_numbers
    profiles = _local_profiles(wanted)
    by_id = {p.klaviyo_id: p for p in profiles if p.klaviyo_id}
    by_email = {p.email: p for p in profiles if p.email}
    by_phone = {p.phone_number: p for p in profiles if p.phone_number}
    refresh: dict[int, Profile] = {}
    for found in per_item:
        matched = (
            [by_id[v] for v in found.profile_ids if v in by_id]
            + [by_email[v] for v in found.emails if v in by_email]
            + [by_phone[v] for v in found.phone_numbers if v in by_phone]
            if found
            else []
        )
        if not matched:
            report.ignored += 1
        refresh.update((p.pk, p) for p in matched)

    if refresh:
        try:
            report.profiles_refreshed = pull_profiles(
                list(refresh.values()), source="webhook"
            ).profiles_mirrored
        except KlaviyoConsentError as exc:
            # Our messages never carry the API key. Answer 200: the row keeps the error and
            # ``klaviyo_consent_retry_webhooks`` (or polling) re-reads these profiles.
            report.error = f"Could not re-read the profiles from Klaviyo: {exc}"
            logger.warning("Webhook delivery %s: %s", delivery.pk, report.error)
