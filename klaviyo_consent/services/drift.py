"""Drift: consent that changed in Klaviyo (STOP reply, unsubscribe link, spam complaint, double
opt-in confirmed) is written into the ledger as an inbound event, so the ledger alone answers
"what is this person's consent, and why"."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from klaviyo_consent.choices import CHANNEL_PURPOSES, Consent, DeliveryStatus, Method
from klaviyo_consent.models import ConsentEvent, Delivery, Profile, normalize_email
from klaviyo_consent.services import payloads
from klaviyo_consent.services.ledger import latest_events
from klaviyo_consent.signals import drift_detected

#: Our verdicts after which Klaviyo's state is expected to match the ledger.
SETTLED = frozenset({DeliveryStatus.APPLIED, DeliveryStatus.NOT_APPLIED, DeliveryStatus.FAILED})


def _latest_events(profile_ids: list[int]) -> dict[tuple[int, str, str], ConsentEvent]:
    return {
        (event.profile_id, event.channel, event.purpose): event
        for events in latest_events(profile_ids).values()
        for event in events
    }


def _changed_after(leaf: dict[str, Any], moment: datetime) -> bool:
    stamp = payloads.parse_klaviyo_datetime(leaf.get("consent_timestamp"))
    return stamp is not None and stamp > moment


def _drifted(event: ConsentEvent | None, shown: str, leaf: dict[str, Any]) -> bool:
    """Klaviyo shows ``shown``; is that a change the site did not make?"""
    if shown not in (Consent.SUBSCRIBED, Consent.UNSUBSCRIBED):
        return False
    if event is None:
        return True
    status = event.delivery.status
    if event.method == Method.KLAVIYO or status == DeliveryStatus.APPLIED:
        return shown != event.consent
    if status == DeliveryStatus.PENDING_CONFIRMATION:
        return shown == Consent.SUBSCRIBED
    if status in SETTLED:
        # Klaviyo never took this event; only a later change in Klaviyo is news.
        return shown != event.consent and _changed_after(leaf, event.recorded_at)
    return False


def _same_identifier(profile: Profile, data: dict[str, Any], channel: str) -> bool:
    """Does Klaviyo's profile hold our profile's identifier for ``channel``?

    After a number change (docs/identity.md) Klaviyo's SMS state is the old number's until
    Klaviyo learns the new one; recording it for the new number would misattribute it. A
    resource without the attribute (not asked for) is taken as the same; one whose attribute is
    empty holds none of ours.
    """
    attributes = (data or {}).get("attributes") or {}
    name = "email" if channel == "email" else "phone_number"
    if name not in attributes:
        return True
    theirs = attributes[name] or None
    if theirs is not None and name == "email":
        theirs = normalize_email(theirs)
    # Klaviyo's profile without our number (e.g. the email half of a merge Klaviyo has not
    # made yet) says nothing about that number either.
    return theirs == getattr(profile, name)


def _method_detail(leaf: dict[str, Any], shown: str, before: ConsentEvent | None) -> str:
    if (
        before is not None
        and before.delivery.status == DeliveryStatus.PENDING_CONFIRMATION
        and shown == Consent.SUBSCRIBED
    ):
        return "double opt-in confirmed"
    parts = [leaf.get("method"), leaf.get("method_detail")]
    return " / ".join(str(p) for p in parts if p) or "changed in Klaviyo"


def record_drift(matched: Iterable[tuple[Profile, dict[str, Any]]]) -> tuple[int, set[int]]:
    """Compare freshly mirrored profiles with the ledger and record inbound events.

    Returns how many were recorded and the deliveries a confirmed double opt-in settled.
    """
    pairs = list(matched)
    if not pairs:
        return 0, set()
    latest = _latest_events([profile.pk for profile, _ in pairs])
    now = timezone.now()
    found: list[tuple[Profile, ConsentEvent, ConsentEvent | None]] = []
    for profile, data in pairs:
        for channel, purposes in CHANNEL_PURPOSES.items():
            if not _same_identifier(profile, data, channel):
                continue  # Klaviyo's state there is another identifier's (a replaced number)
            for purpose in purposes:
                leaf = profile.klaviyo_leaf(channel, purpose)
                shown = leaf.get("consent") or ""
                before = latest.get((profile.pk, channel, purpose))
                if not _drifted(before, shown, leaf):
                    continue
                event = ConsentEvent(
                    profile=profile,
                    email=profile.email or "",
                    phone_number=profile.phone_number or "",
                    channel=channel,
                    purpose=purpose,
                    consent=shown,
                    method=Method.KLAVIYO,
                    method_detail=_method_detail(leaf, shown, before),
                    recorded_at=now,
                    klaviyo_data={
                        k: leaf.get(k)
                        for k in (
                            "method",
                            "method_detail",
                            "consent_timestamp",
                            "last_updated",
                            "double_optin",
                            "suppression",
                        )
                        if k in leaf
                    },
                )
                found.append((profile, event, before))
    if not found:
        return 0, set()
    with transaction.atomic():
        ConsentEvent.objects.append(
            [event for _, event, _ in found],
            status=DeliveryStatus.APPLIED,
            reason="recorded from Klaviyo's state",
            next_attempt_at=None,
            verified_at=now,
        )
        confirmed = [
            before.delivery.pk
            for _, event, before in found
            if before is not None
            and before.delivery.status == DeliveryStatus.PENDING_CONFIRMATION
            and event.consent == Consent.SUBSCRIBED
        ]
        if confirmed:
            Delivery.objects.filter(pk__in=confirmed).update(
                status=DeliveryStatus.APPLIED,
                reason="double opt-in confirmed",
                next_attempt_at=None,
                verified_at=now,
            )
    for profile, event, _ in found:
        drift_detected.send_robust(sender=ConsentEvent, profile=profile, event=event)
    return len(found), set(confirmed)
