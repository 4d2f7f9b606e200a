"""Drift: consent that changed in Klaviyo (STOP reply, unsubscribe link, spam complaint, double
opt-in confirmed, a consent Klaviyo no longer shows at all) and suppressions added or lifted in
Klaviyo are written into the ledger as inbound events (method ``klaviyo``, Klaviyo's own method,
method_detail, suppression reasons and ``can_receive_*`` in ``klaviyo_data``), so the ledger
alone answers "what is this person's consent, can they receive marketing, and why"."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from klaviyo_consent.choices import CHANNEL_PURPOSES, Consent, DeliveryStatus, Method
from klaviyo_consent.models import ConsentEvent, Delivery, Profile, normalize_email
from klaviyo_consent.services import outbox, payloads
from klaviyo_consent.services.ledger import latest_events
from klaviyo_consent.services.verdicts import history_entry
from klaviyo_consent.signals import drift_detected

#: Suppressions that say "cannot receive" without a consent change: an unsubscribe or a spam
#: complaint comes with UNSUBSCRIBED consent, which consent drift already records.
SUPPRESSION_DRIFT = frozenset({"USER_SUPPRESSED", "HARD_BOUNCE", "INVALID_EMAIL"})
#: Keys of a ``subscriptions`` leaf an inbound event keeps in ``klaviyo_data``.
KLAVIYO_KEYS = (
    "method",
    "method_detail",
    "consent_timestamp",
    "last_updated",
    "double_optin",
    "suppression",
    "can_receive_email_marketing",
    "can_receive_sms_marketing",
    "can_receive_sms_transactional",
)

#: Our verdicts after which Klaviyo's state is expected to match the ledger.
FINAL_VERDICTS = frozenset(
    {DeliveryStatus.APPLIED, DeliveryStatus.NOT_APPLIED, DeliveryStatus.FAILED}
)


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
    if shown == Consent.NEVER_SUBSCRIBED:
        # No consent at all where the ledger holds one Klaviyo had shown (a number replaced in
        # Klaviyo, a profile deleted and re-created): the ledger must stop saying SUBSCRIBED.
        return (
            event is not None
            and event.consent == Consent.SUBSCRIBED
            and (event.method == Method.KLAVIYO or event.delivery.status == DeliveryStatus.APPLIED)
        )
    if shown not in (Consent.SUBSCRIBED, Consent.UNSUBSCRIBED):
        return False
    if event is None:
        return True
    status = event.delivery.status
    if event.method == Method.KLAVIYO or status == DeliveryStatus.APPLIED:
        return shown != event.consent
    if status == DeliveryStatus.PENDING_CONFIRMATION:
        return shown == Consent.SUBSCRIBED
    if status in FINAL_VERDICTS:
        # Klaviyo never took this event; only a later change in Klaviyo is news.
        return shown != event.consent and _changed_after(leaf, event.recorded_at)
    return False


#: What Klaviyo's profile says of an identifier it no longer holds: no consent for it.
_NOT_HELD: dict[str, Any] = {"consent": Consent.NEVER_SUBSCRIBED}


def _channel_leaves(
    profile: Profile, data: dict[str, Any], channel: str
) -> dict[str, dict[str, Any]] | None:
    """Klaviyo's ``subscriptions`` leaves for ``channel`` as they concern OUR identifier, or
    None when Klaviyo's profile says nothing about it.

    - Klaviyo's profile holds our identifier (or the resource does not carry the attribute):
      its leaves, as mirrored.
    - It holds none for the channel (the email half of a merge Klaviyo has not made yet): None.
    - It holds another one: Klaviyo's state there is that identifier's, never ours. After our
      own number change (docs/identity.md) it is the old number's until Klaviyo learns the new
      one; after a number change on Klaviyo's side (its help centre: SMS consent resets), our
      number is no longer on the profile. Either way Klaviyo holds no consent for our
      identifier on this profile: every leaf reads ``NEVER_SUBSCRIBED``.
    """
    attributes = (data or {}).get("attributes") or {}
    name = "email" if channel == "email" else "phone_number"
    purposes = CHANNEL_PURPOSES[channel]
    if name in attributes:
        theirs = attributes[name] or None
        if theirs is None:
            return None
        if name == "email":
            theirs = normalize_email(theirs)
        if theirs != getattr(profile, name):
            return {purpose: _NOT_HELD for purpose in purposes}
    return {purpose: profile.klaviyo_leaf(channel, purpose) for purpose in purposes}


def _confirmed(leaf: dict[str, Any], shown: str, before: ConsentEvent | None) -> bool:
    """Does Klaviyo's state show the awaited double opt-in confirmed? Email says so itself
    (``double_optin``); SMS has no such field, so consent shown after a pending one is taken."""
    return (
        before is not None
        and before.delivery.status == DeliveryStatus.PENDING_CONFIRMATION
        and shown == Consent.SUBSCRIBED
        and (before.channel != "email" or leaf.get("double_optin") is not False)
    )


def _method_detail(leaf: dict[str, Any], shown: str, before: ConsentEvent | None) -> str:
    if _confirmed(leaf, shown, before):
        return "double opt-in confirmed"
    parts = [leaf.get("method"), leaf.get("method_detail")]
    if shown == Consent.NEVER_SUBSCRIBED and not any(parts):
        return "Klaviyo shows no consent (NEVER_SUBSCRIBED)"
    return " / ".join(str(p) for p in parts if p) or "changed in Klaviyo"


def _suppressions(reasons: Any) -> frozenset[str]:
    return frozenset(
        item.get("reason")
        for item in reasons or []
        if isinstance(item, dict) and item.get("reason") in SUPPRESSION_DRIFT
    )


def _suppression_change(event: ConsentEvent | None, leaf: dict[str, Any]) -> str | None:
    """The method_detail of a suppression added or lifted in Klaviyo since the ledger's latest
    word on email marketing, or None.

    What the ledger knows: an inbound event's ``klaviyo_data["suppression"]``; after the site's
    own applied subscribe, none (the subscribe lifted what it lifts). While the site's event is
    still on its way (pending, pushed, awaiting confirmation) Klaviyo's state is not news yet.
    """
    if "suppression" not in leaf:
        return None
    shown = _suppressions(leaf.get("suppression"))
    if event is None:
        known: frozenset[str] = frozenset()
    elif event.method == Method.KLAVIYO:
        known = _suppressions((event.klaviyo_data or {}).get("suppression"))
    elif event.delivery.status in FINAL_VERDICTS:
        # Applied: Klaviyo took the site's word, suppressions since are news. Otherwise the
        # verdict already explains what the site's event met.
        if event.delivery.status != DeliveryStatus.APPLIED:
            known = shown
        elif event.suppression == "suppress":
            known = frozenset({"USER_SUPPRESSED"}) | (shown - {"USER_SUPPRESSED"})
        else:
            known = frozenset()
    else:
        return None
    added, lifted = sorted(shown - known), sorted(known - shown)
    if added:
        return f"suppressed in Klaviyo ({', '.join(added)})"
    if lifted:
        return f"suppression lifted in Klaviyo ({', '.join(lifted)})"
    return None


def record_drift(
    matched: Iterable[tuple[Profile, dict[str, Any]]], *, source: str = "pull"
) -> tuple[int, set[int]]:
    """Compare freshly mirrored profiles with the ledger and record inbound events.

    Returns how many were recorded and the deliveries whose awaited double opt-in Klaviyo
    shows confirmed (now ``applied``). ``source`` names the read-back in their verdict history.
    """
    pairs = list(matched)
    if not pairs:
        return 0, set()
    latest = _latest_events([profile.pk for profile, _ in pairs])
    now = timezone.now()
    found: list[tuple[Profile, ConsentEvent, ConsentEvent | None]] = []
    for profile, data in pairs:
        for channel, purposes in CHANNEL_PURPOSES.items():
            leaves = _channel_leaves(profile, data, channel)
            if leaves is None:
                continue
            for purpose in purposes:
                leaf = leaves[purpose]
                shown = leaf.get("consent") or ""
                before = latest.get((profile.pk, channel, purpose))
                if _drifted(before, shown, leaf):
                    detail = _method_detail(leaf, shown, before)
                    consent = shown
                else:
                    change = _suppression_change(before, leaf)
                    if change is None or not shown:
                        continue
                    detail, consent = change, shown
                event = ConsentEvent(
                    profile=profile,
                    email=profile.email or "",
                    phone_number=profile.phone_number or "",
                    channel=channel,
                    purpose=purpose,
                    consent=consent,
                    method=Method.KLAVIYO,
                    method_detail=detail,
                    recorded_at=now,
                    klaviyo_data={k: leaf.get(k) for k in KLAVIYO_KEYS if k in leaf},
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
        confirmations = [
            (before.delivery, event.method_detail)
            for _, event, before in found
            if before is not None
            and before.delivery.status == DeliveryStatus.PENDING_CONFIRMATION
            and event.consent == Consent.SUBSCRIBED
        ]
        for delivery, why in confirmations:
            # Klaviyo shows the consent; the reason says how only as far as Klaviyo shows it.
            outbox.record_verdict(
                Delivery.objects.filter(pk=delivery.pk),
                DeliveryStatus.APPLIED,
                why,
                next_attempt_at=None,
                now=now,
                history=[
                    *(delivery.history or []),
                    history_entry(
                        at=now,
                        previous=delivery.status,
                        status=DeliveryStatus.APPLIED,
                        reason=why,
                        source=source,
                    ),
                ],
            )
        confirmed = [delivery.pk for delivery, _ in confirmations]
    for profile, event, _ in found:
        drift_detected.send_robust(sender=ConsentEvent, profile=profile, event=event)
    return len(found), set(confirmed)
