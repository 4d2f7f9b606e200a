"""A ledger leaf: an event's proof fields as canonical bytes, its identifiers as keyed digests.

Identifiers (email, phone number, evidence) enter a leaf only as HMAC-SHA256 digests under the
ledger secret, so erasing the raw values later leaves the leaf valid. Pure, apart from reading
the event's consent text. Field names and sources: docs/receipts.md.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from klaviyo_consent import merkle
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.models import ConsentEvent, Erasure
from klaviyo_consent.receipts import SCHEMA_VERSION, canonical, text_sha256

#: The event's identifiers, which enter a leaf only as HMAC-SHA256 digests.
IDENTIFIER_FIELDS = (
    "email",
    "phone_number",
    "external_id",
    "ip_address",
    "user_agent",
    "page_url",
    "recorded_by",
)


def ledger_secret() -> bytes:
    """The HMAC key for identifier digests: LEDGER_SECRET, else derived from SECRET_KEY."""
    secret = consent_settings.LEDGER_SECRET
    if secret:
        return secret.encode() if isinstance(secret, str) else bytes(secret)
    return hashlib.sha256(
        b"klaviyo-consent ledger secret\x00" + settings.SECRET_KEY.encode()
    ).digest()


def digest(field: str, value: str, secret: bytes | None = None) -> str:
    """Hex HMAC-SHA256(ledger secret, ``field`` NUL ``value``): one identifier in the ledger."""
    message = f"{field}\x00{value}".encode()
    return hmac.new(secret or ledger_secret(), message, hashlib.sha256).hexdigest()


def identifier_values(event: ConsentEvent) -> dict[str, str]:
    """The event's raw identifiers as the ledger digests them ('' when absent or erased)."""
    return {
        "email": event.email or "",
        "phone_number": event.phone_number or "",
        "external_id": event.external_id or "",
        "ip_address": event.ip_address or "",
        "user_agent": event.user_agent or "",
        "page_url": event.page_url or "",
        "recorded_by": event.recorded_by_label or "",
    }


def event_digests(event: ConsentEvent, secret: bytes | None = None) -> dict[str, str]:
    secret = secret or ledger_secret()
    return {
        field: digest(field, value, secret)
        for field, value in identifier_values(event).items()
        if value
    }


def utc_timestamp(moment: datetime | None) -> str | None:
    """``moment`` in UTC as RFC 3339 with microseconds (``2026-01-02T03:04:05.000006Z``)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def consent_text_of(event: ConsentEvent) -> str:
    text = event.consent_text_version
    return text.body if text is not None else (event.consent_text or "")


def build_record(event: ConsentEvent, digests: dict[str, str]) -> dict[str, Any]:
    """The leaf content of ``event``: its proof fields, identifiers as digests.

    Field names and sources: docs/receipts.md.
    """
    text = event.consent_text_version
    body = consent_text_of(event)
    return {
        "schema_version": SCHEMA_VERSION,
        "record_id": event.pk,
        "pii_principal_id": {
            "profile_id": event.profile_id,
            "email": digests.get("email"),
            "phone_number": digests.get("phone_number"),
            "external_id": digests.get("external_id"),
        },
        "purpose": {"channel": event.channel, "purpose": event.purpose, "list_id": event.list_id},
        "consent_state": event.consent,
        "suppression": event.suppression,
        "collection_method": {
            "method": event.method,
            "method_detail": event.method_detail,
            "custom_source": event.custom_source,
        },
        "notice": {
            "consent_text_sha256": text_sha256(body) if body else None,
            "key": text.key if text else None,
            "version": text.version if text else None,
            "locale": text.locale if text else None,
        },
        "timestamps": {
            "recorded_at": utc_timestamp(event.recorded_at),
            "consented_at": utc_timestamp(event.consented_at),
            "historical_import": event.historical_import,
        },
        "evidence": {
            "ip_address": digests.get("ip_address"),
            "user_agent": digests.get("user_agent"),
            "page_url": digests.get("page_url"),
            "recorded_by": digests.get("recorded_by"),
        },
        "klaviyo_data": event.klaviyo_data or {},
    }


def event_leaf(event: ConsentEvent, digests: dict[str, str]) -> bytes:
    return merkle.leaf_hash(canonical(build_record(event, digests)))


#: ``record_type`` of an erasure record's leaf (an event's leaf has none).
ERASURE_RECORD = "erasure"


def erasure_digests(erasure: Erasure, secret: bytes | None = None) -> dict[str, str]:
    """The keyed digest of who asked (their username), kept on the erasure's LedgerEntry."""
    label = erasure.recorded_by_label
    return {"recorded_by": digest("recorded_by", label, secret)} if label else {}


def build_erasure_record(erasure: Erasure, digests: dict[str, str]) -> dict[str, Any]:
    """The leaf content of an erasure record: who asked (as a digest), when, what, for whom
    (the profile id and the digests of the identifiers erased, never the identifiers).

    Field names: docs/erasure.md.
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "record_type": ERASURE_RECORD,
        "record_id": erasure.pk,
        "pii_principal_id": {
            "profile_id": erasure.profile_id,
            "email": list(erasure.digests.get("email") or []),
            "phone_number": list(erasure.digests.get("phone_number") or []),
            "external_id": list(erasure.digests.get("external_id") or []),
        },
        "erasure": {
            "scope": erasure.scope,
            "source": erasure.source,
            "events": erasure.events,
            "evidence_before": utc_timestamp(erasure.evidence_before),
        },
        "timestamps": {"recorded_at": utc_timestamp(erasure.requested_at)},
        "evidence": {"recorded_by": digests.get("recorded_by")},
    }


def erasure_leaf(erasure: Erasure, digests: dict[str, str]) -> bytes:
    return merkle.leaf_hash(canonical(build_erasure_record(erasure, digests)))
