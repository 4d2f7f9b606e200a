"""The profile page's channel × purpose grid and event timeline, as plain data for templates.

One row per Klaviyo subscription (``email.marketing``, ``sms.marketing``,
``sms.transactional``): Klaviyo's mirrored leaf beside the ledger's latest word, in human
labels and local times. Pure: the caller passes the profile, its ledger and its events.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from klaviyo_consent.admin.labels import (
    CONSENT_LABELS,
    METHOD_LABELS,
    VERDICT_LABELS,
    event_title,
    humanize_code,
    humanize_reason,
    local_time,
    subscription_label,
    suppression_text,
    yes_no,
)
from klaviyo_consent.choices import CHANNEL_PURPOSES, Method
from klaviyo_consent.klaviyo import PROFILE_URL


def klaviyo_profile_url(klaviyo_id: str) -> str | None:
    """The Klaviyo web app's page of a profile, or None before Klaviyo gave it an id."""
    return PROFILE_URL.format(klaviyo_id=klaviyo_id) if klaviyo_id else None


@dataclass(frozen=True)
class GridRow:
    """One subscription: Klaviyo's state (``klaviyo_*``) beside the ledger's (``ledger_*``)."""

    key: str
    label: str
    mirrored: bool
    klaviyo_consent: str
    klaviyo_consent_code: str
    klaviyo_method: str
    klaviyo_method_detail: str
    klaviyo_source: str
    klaviyo_when: str
    klaviyo_can_receive: str
    klaviyo_double_optin: str
    klaviyo_suppression: str
    ledger_consent: str
    ledger_consent_code: str
    verdict: str | None
    verdict_label: str
    reason: str
    can_receive: str
    cannot_receive_reason: str
    event_id: int | None


def profile_grid(profile: Any, ledger: dict[str, dict[str, dict[str, Any]]]) -> list[GridRow]:
    """The grid's rows, in Klaviyo's order of subscriptions.

    ``ledger`` is :func:`klaviyo_consent.services.ledger.ledger_for`'s answer for ``profile``.
    """
    rows = []
    for channel, purposes in CHANNEL_PURPOSES.items():
        for purpose in purposes:
            leaf = profile.klaviyo_leaf(channel, purpose)
            local = ledger[channel][purpose]
            consent = leaf.get("consent") or ""
            rows.append(
                GridRow(
                    key=f"{channel}.{purpose}",
                    label=subscription_label(channel, purpose),
                    mirrored=bool(leaf),
                    klaviyo_consent=humanize_code(consent) if leaf else "Not read yet",
                    klaviyo_consent_code=consent,
                    klaviyo_method=humanize_code(leaf.get("method")),
                    klaviyo_method_detail=humanize_code(leaf.get("method_detail")),
                    klaviyo_source=leaf.get("custom_method_detail") or "—",
                    klaviyo_when=local_time(leaf.get("consent_timestamp")),
                    klaviyo_can_receive=yes_no(leaf.get(f"can_receive_{channel}_{purpose}")),
                    klaviyo_double_optin=yes_no(leaf.get("double_optin")),
                    klaviyo_suppression=(
                        suppression_text(leaf.get("suppression")) if "suppression" in leaf else "—"
                    ),
                    ledger_consent=CONSENT_LABELS.get(local["consent"], local["consent"]),
                    ledger_consent_code=local["consent"],
                    verdict=local["delivery"],
                    verdict_label=VERDICT_LABELS.get(local["delivery"], "No event")
                    if local["delivery"]
                    else "No event",
                    reason=humanize_reason(local["reason"]),
                    can_receive=yes_no(local["can_receive"]),
                    cannot_receive_reason=humanize_reason(local["cannot_receive_reason"]),
                    event_id=local["event_id"],
                )
            )
    return rows


@dataclass(frozen=True)
class TimelineEntry:
    """One consent event as the timeline shows it."""

    event_id: int
    title: str
    when: str
    channel_label: str
    verdict: str | None
    verdict_label: str
    reason: str
    method: str
    detail: str
    source: str
    recorded_by: str
    text_version: str
    inbound: bool


def timeline(events: Iterable[Any]) -> list[TimelineEntry]:
    """Events (with ``delivery`` and ``consent_text_version`` selected) as timeline entries,
    in the order given (newest first on the page)."""
    entries = []
    for event in events:
        delivery = getattr(event, "delivery", None)
        status = delivery.status if delivery else None
        entries.append(
            TimelineEntry(
                event_id=event.pk,
                title=event_title(event),
                when=local_time(event.consented_at or event.recorded_at),
                channel_label=subscription_label(event.channel, event.purpose),
                verdict=status,
                verdict_label=VERDICT_LABELS.get(status, "—") if status else "—",
                reason=humanize_reason(delivery.reason) if delivery else "",
                method=METHOD_LABELS.get(event.method, event.method),
                detail=event.method_detail,
                source=event.custom_source,
                recorded_by=event.recorded_by_name or "",
                text_version=str(event.consent_text_version) if event.consent_text_version else "",
                inbound=event.method == Method.KLAVIYO,
            )
        )
    return entries


@dataclass(frozen=True)
class IdentityEntry:
    """One identity change (a number replaced, an identifier added, a merge) as shown."""

    title: str
    when: str
    old_value: str
    new_value: str
    other_profile: str
    moved: str
    method: str
    reason: str
    recorded_by: str
    klaviyo_status: str | None
    klaviyo_label: str
    klaviyo_reason: str


def identity_entries(events: Iterable[Any]) -> list[IdentityEntry]:
    """Identity events (with ``delivery`` and ``other_profile`` selected), as shown."""
    entries = []
    for event in events:
        delivery = getattr(event, "delivery", None)
        status = delivery.status if delivery else None
        entries.append(
            IdentityEntry(
                title=event.get_change_display(),
                when=local_time(event.recorded_at),
                old_value=event.old_value,
                new_value=event.new_value,
                other_profile=str(event.other_profile) if event.other_profile_id else "",
                moved=", ".join(f"{k}: {v}" for k, v in (event.moved or {}).items()),
                method=METHOD_LABELS.get(event.method, event.method),
                reason=event.reason or "",
                recorded_by=event.recorded_by_name or "",
                klaviyo_status=status,
                klaviyo_label=VERDICT_LABELS.get(status, "—") if status else "not needed",
                klaviyo_reason=humanize_reason(delivery.reason) if delivery else "",
            )
        )
    return entries
