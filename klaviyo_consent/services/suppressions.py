"""Suppress or unsuppress emails in Klaviyo from the site, recorded in the ledger.

Klaviyo's bulk suppression jobs (``POST /api/profile-suppression-bulk-create-jobs`` /
``…-delete-jobs``, email only, at most 100 a job; spec revision 2026-07-15) are sent through the
outbox like consent: each email gets an append-only event on ``email.marketing`` with
``suppression`` set and its consent carried over unchanged, and a ``Delivery`` row that the push
batches into jobs, retries and rate-limits, and a read-back judges (``applied`` once Klaviyo shows
the ``USER_SUPPRESSED`` suppression, or no longer shows it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from klaviyo_consent.choices import Channel, Consent, Method, Purpose, Suppression
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.models import ConsentEvent, Profile
from klaviyo_consent.services.ledger import Evidence, clean_email, latest_events
from klaviyo_consent.signals import consent_recorded

#: The most emails one request may name (sent as jobs of at most 100).
MAX_EMAILS = 1000


@dataclass
class SuppressionResult:
    """The events recorded, and the emails skipped (unsuppress of an unknown person)."""

    events: list[ConsentEvent] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def record_suppression(
    emails: Sequence[str],
    *,
    action: str,
    method: str = Method.API,
    method_detail: str = "",
    evidence: Evidence | None = None,
    recorded_by: Any = None,
) -> SuppressionResult:
    """Record a request to suppress (``action="suppress"``) or unsuppress these emails.

    Emails are normalised; a malformed one raises :class:`ConsentValidationError` naming
    ``emails.<index>`` and nothing is recorded. Suppressing an unknown email creates the local
    profile (Klaviyo's suppress job creates unknown profiles too); unsuppressing one is skipped
    and reported (Klaviyo's delete job ignores unknown profiles). Duplicates count once.
    The push happens on commit, through the ``consent_recorded`` signal, like consent.
    """
    if action not in Suppression.values:
        raise ValueError(f"action must be one of {Suppression.values}")
    cleaned: list[str] = []
    for index, raw in enumerate(emails):
        email = clean_email(raw, field=f"emails.{index}")
        if email is None:
            raise ConsentValidationError("An email is required.", field=f"emails.{index}")
        if email not in cleaned:
            cleaned.append(email)
    if not cleaned:
        raise ConsentValidationError("Give at least one email.", field="emails")
    evidence = evidence or Evidence()
    result = SuppressionResult()
    with transaction.atomic():
        known = {p.email: p for p in Profile.objects.select_for_update().filter(email__in=cleaned)}
        profiles: list[Profile] = []
        for email in cleaned:
            profile = known.get(email)
            if profile is None:
                if action == Suppression.UNSUPPRESS:
                    result.skipped.append(email)
                    continue
                profile = Profile.objects.create(email=email)
            profiles.append(profile)
        latest = latest_events([p.pk for p in profiles])
        now = timezone.now()
        for profile in profiles:
            consent = next(
                (
                    e.consent
                    for e in latest.get(profile.pk, [])
                    if e.channel == Channel.EMAIL and e.purpose == Purpose.MARKETING
                ),
                Consent.NEVER_SUBSCRIBED,
            )
            result.events.append(
                ConsentEvent(
                    profile=profile,
                    email=profile.email or "",
                    phone_number=profile.phone_number or "",
                    channel=Channel.EMAIL,
                    purpose=Purpose.MARKETING,
                    consent=consent,
                    method=method,
                    method_detail=method_detail,
                    recorded_at=now,
                    suppression=action,
                    ip_address=evidence.ip_address or None,
                    user_agent=evidence.user_agent,
                    page_url=evidence.page_url,
                    recorded_by=recorded_by,
                )
            )
        if result.events:
            ConsentEvent.objects.append(result.events, next_attempt_at=now)
            for profile in profiles:
                mine = [e for e in result.events if e.profile_id == profile.pk]
                consent_recorded.send(sender=ConsentEvent, events=mine, profile=profile)
    return result
