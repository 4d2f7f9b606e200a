"""What the ledger alone says of a person's consent now: per channel and purpose, the latest
event's consent, its delivery and verdict, and whether the person can receive messages."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC
from typing import Any

from klaviyo_consent.choices import CHANNEL_PURPOSES, Consent, DeliveryStatus, Method
from klaviyo_consent.models import ConsentEvent, Profile
from klaviyo_consent.services.ledger import PHONE_NUMBER_REPLACED, latest_events


def ledger_for(
    profile: Profile | None, *, events: Iterable[ConsentEvent] | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """The latest local state per channel and purpose: what the ledger alone says of consent.

    ``events``: the profile's events in id order with their deliveries (its whole history, or
    only the latest per key from :func:`latest_events`) when the caller already holds them,
    to spare a query. No profile and no events: every leaf is NEVER_SUBSCRIBED.
    """
    if events is None:
        events = () if profile is None else latest_events([profile.pk])[profile.pk]
    latest: dict[tuple[str, str], ConsentEvent] = {}
    for event in events:
        latest[(event.channel, event.purpose)] = event
    ledger: dict[str, dict[str, dict[str, Any]]] = {}
    for channel, purposes in CHANNEL_PURPOSES.items():
        for purpose in purposes:
            event = latest.get((channel, purpose))
            if event is None:
                leaf: dict[str, Any] = {
                    "consent": Consent.NEVER_SUBSCRIBED,
                    "delivery": None,
                    "reason": "",
                    "event_id": None,
                    "consented_at": None,
                }
            else:
                delivery = getattr(event, "delivery", None)
                reason = delivery.reason if delivery else ""
                if not reason and event.method_detail == PHONE_NUMBER_REPLACED:
                    reason = PHONE_NUMBER_REPLACED  # why the ledger closed it, when Klaviyo is mute
                leaf = {
                    "consent": event.consent,
                    "delivery": delivery.status if delivery else None,
                    "reason": reason,
                    "event_id": event.pk,
                    "consented_at": _consented_at(event),
                }
            leaf["can_receive"], leaf["cannot_receive_reason"] = can_receive(
                event, channel, purpose
            )
            ledger.setdefault(channel, {})[purpose] = leaf
    return ledger


def can_receive(event: ConsentEvent | None, channel: str, purpose: str) -> tuple[bool, str]:
    """Can the person receive ``channel``/``purpose`` messages, per the ledger's latest event,
    and if not, why (an empty reason when they can).

    An inbound event carries Klaviyo's own ``can_receive_<channel>_<purpose>`` (Klaviyo's
    profile ``subscriptions`` object, revision 2026-07-15) and its suppressions; the site's own
    event counts only once Klaviyo applied it.
    """
    if event is None:
        return False, "never subscribed"
    delivery = getattr(event, "delivery", None)
    status = delivery.status if delivery else None
    if event.suppression == "suppress":
        where = "" if status == DeliveryStatus.APPLIED else f"; Klaviyo: {status}"
        return False, f"suppressed from the site (USER_SUPPRESSED{where})"
    data = event.klaviyo_data or {}
    flag = data.get(f"can_receive_{channel}_{purpose}")
    suppressed = [s.get("reason") for s in data.get("suppression") or [] if isinstance(s, dict)]
    if event.consent != Consent.SUBSCRIBED:
        why = "unsubscribed" if event.consent == Consent.UNSUBSCRIBED else "never subscribed"
        if event.method == Method.KLAVIYO:
            detail = event.method_detail or "changed in Klaviyo"
            why = f"{why} in Klaviyo ({detail})"
        return False, why
    if event.method == Method.KLAVIYO:
        if flag is False or suppressed:
            if suppressed:
                return False, f"suppressed in Klaviyo ({', '.join(r for r in suppressed if r)})"
            return False, f"Klaviyo reports can_receive_{channel}_{purpose}: false"
        return True, ""
    if status == DeliveryStatus.APPLIED:
        return True, ""
    reason = f": {delivery.reason}" if delivery and delivery.reason else ""
    return False, f"consent not applied in Klaviyo ({status}{reason})"


def _consented_at(event: ConsentEvent) -> str | None:
    """When the person agreed: the import's date, Klaviyo's timestamp, or when we recorded it."""
    if event.consented_at:
        return event.consented_at.astimezone(UTC).isoformat()
    stamp = (event.klaviyo_data or {}).get("consent_timestamp")
    return stamp or event.recorded_at.astimezone(UTC).isoformat()
