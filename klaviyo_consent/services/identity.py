"""Identity operations: replacing a person's phone number and merging two profiles.

Both are explicit, recorded in the append-only :class:`~klaviyo_consent.models.IdentityEvent`
table, and never re-point a consent event: every event keeps the identifiers it was given for
(docs/identity.md). A consent request can only *add* an identifier a profile lacks
(:mod:`klaviyo_consent.services.ledger`); changing or moving one happens here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from klaviyo_consent.choices import Channel, Consent, Method
from klaviyo_consent.exceptions import ConsentValidationError, IdentityConflict
from klaviyo_consent.models import (
    ConsentEvent,
    IdentityChange,
    IdentityEvent,
    Profile,
)
from klaviyo_consent.phone import clean_country, normalize_phone_number
from klaviyo_consent.services.identity_push import record_identity_push
from klaviyo_consent.services.ledger import IDENTIFIERS, PHONE_NUMBER_REPLACED, latest_events
from klaviyo_consent.signals import consent_recorded, identity_changed


@dataclass
class IdentityResult:
    """What an identity operation changed: the profile as saved, its identity record, and the
    consent events it wrote (the replaced number's closing withdrawals)."""

    profile: Profile
    identity_event: IdentityEvent
    events: list[ConsentEvent] = field(default_factory=list)


def replace_phone_number(
    profile: Profile,
    raw_phone_number: str,
    *,
    country: str | None = None,
    method: str = Method.API,
    recorded_by: Any = None,
    reason: str | None = None,
) -> IdentityResult:
    """Give ``profile`` a new phone number; the old number's SMS consent ends with it.

    Each SMS purpose the old number is subscribed to gets an ``UNSUBSCRIBED`` event for the old
    number (``method_detail`` "phone number replaced"), pushed to Klaviyo like any withdrawal:
    Klaviyo drops SMS consent on a number change too (help centre, "How SMS affects
    profiles"). The new number starts ``NEVER_SUBSCRIBED``: consent is given by its holder.
    ``reason``: why staff changed it, kept on the identity event (the admin asks for one).

    Raises :class:`ConsentValidationError` naming ``profile`` for an erased profile,
    ``phone_number`` (or ``country``) for a bad
    or unchanged number, :class:`IdentityConflict` (409) when another profile holds it.
    """
    if profile.erased_at:
        raise ConsentValidationError(
            f"This profile was erased on {profile.erased_at:%Y-%m-%d}: nothing more can be "
            "recorded for it.",
            field="profile",
        )
    region = clean_country(country, field="country")
    new = normalize_phone_number(raw_phone_number, field="phone_number", country=region)
    with transaction.atomic():
        profile = Profile.objects.select_for_update().get(pk=profile.pk)
        _require_active(profile)
        old = profile.phone_number
        if old == new:
            raise ConsentValidationError(
                f"{new} is already this profile's phone number.", field="phone_number"
            )
        if Profile.objects.filter(phone_number=new).exists():
            raise IdentityConflict(
                "This phone number belongs to another profile; merge the profiles instead.",
                fields=["phone_number"],
            )
        now = timezone.now()
        closing = [
            event
            for event in latest_events([profile.pk])[profile.pk]
            if event.channel == Channel.SMS and event.consent == Consent.SUBSCRIBED
        ]
        events = [
            ConsentEvent(
                profile=profile,
                phone_number=old,
                channel=Channel.SMS,
                purpose=event.purpose,
                consent=Consent.UNSUBSCRIBED,
                method=method,
                method_detail=PHONE_NUMBER_REPLACED,
                recorded_at=now,
                recorded_by=recorded_by,
            )
            for event in closing
        ]
        profile.phone_number = new
        try:
            profile.save(update_fields=["phone_number", "updated_at"])
        except IntegrityError as error:  # given to someone else since the check above
            raise IdentityConflict(
                "This phone number belongs to another profile; merge the profiles instead.",
                fields=["phone_number"],
            ) from error
        record = IdentityEvent.objects.create(
            profile=profile,
            change=IdentityChange.PHONE_NUMBER_REPLACED if old else IdentityChange.IDENTIFIER_ADDED,
            field="phone_number",
            old_value=old or "",
            new_value=new,
            method=method,
            reason=reason,
            recorded_at=now,
            recorded_by=recorded_by,
        )
        if events:
            ConsentEvent.objects.append(events, next_attempt_at=now)
            consent_recorded.send(sender=ConsentEvent, events=events, profile=profile)
        record_identity_push(record)  # after the closing events: Klaviyo is told the new number
        identity_changed.send(sender=IdentityEvent, profile=profile, identity_events=[record])
    return IdentityResult(profile=profile, identity_event=record, events=events)


def merge_profiles(
    survivor: Profile,
    other: Profile,
    *,
    method: str = Method.API,
    recorded_by: Any = None,
    reason: str | None = None,
) -> IdentityResult:
    """Fold ``other`` into ``survivor``: one person known by two profiles.

    ``other``'s identifiers move to ``survivor`` and ``other.merged_into`` points at it; no
    consent event changes (they are append-only and keep the identifiers they were given for),
    and ``survivor``'s ledger now includes ``other``'s events for the identifiers it holds.
    This is what Klaviyo does implicitly when one call names a phone-only and an email-only
    profile; here it needs the write permission and is recorded.

    Raises :class:`ConsentValidationError` naming ``other`` for the same or an already merged
    profile, :class:`IdentityConflict` (409) when both hold a different value of one identifier.
    """
    if survivor.pk == other.pk:
        raise ConsentValidationError("A profile cannot be merged with itself.", field="other")
    with transaction.atomic():
        locked = Profile.objects.select_for_update().in_bulk([survivor.pk, other.pk])
        survivor, other = locked[survivor.pk], locked[other.pk]
        _require_active(survivor)
        _require_active(other, field="other")
        clashes = [
            name
            for name in IDENTIFIERS
            if getattr(survivor, name)
            and getattr(other, name)
            and getattr(survivor, name) != getattr(other, name)
        ]
        if clashes:
            raise IdentityConflict(
                "Both profiles hold a different "
                f"{' and '.join(clashes)}; a person has one of each, so they cannot be merged.",
                fields=[f"other.{name}" for name in clashes],
            )
        moved = {name: getattr(other, name) for name in IDENTIFIERS if getattr(other, name)}
        # Free the unique identifiers first, then give them to the survivor.
        for name in IDENTIFIERS:
            setattr(other, name, None)
        other.merged_into = survivor
        other.save(update_fields=[*IDENTIFIERS, "merged_into", "updated_at"])
        Profile.objects.filter(merged_into=other).update(merged_into=survivor)
        added = [name for name in moved if getattr(survivor, name) is None]
        for name in added:
            setattr(survivor, name, moved[name])
        if not survivor.klaviyo_id and other.klaviyo_id:
            survivor.klaviyo_id = other.klaviyo_id
            added.append("klaviyo_id")
        if added:
            survivor.save(update_fields=[*added, "updated_at"])
        record = IdentityEvent.objects.create(
            profile=survivor,
            change=IdentityChange.MERGED,
            other_profile=other,
            moved=moved,
            method=method,
            reason=reason,
            recorded_by=recorded_by,
        )
        identity_changed.send(sender=IdentityEvent, profile=survivor, identity_events=[record])
    return IdentityResult(profile=survivor, identity_event=record)


def _require_active(profile: Profile, *, field: str = "profile") -> None:
    if profile.merged_into_id:
        raise ConsentValidationError(
            f"Profile {profile.pk} was merged into profile {profile.merged_into_id}; use that one.",
            field=field,
        )
