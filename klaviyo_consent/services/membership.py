"""Record list membership without consent: membership events and their outbox rows.

Klaviyo's developer guide, "collect email and SMS consent via API", step 3: a person who gave
an identifier without asking for marketing may be added to a list without being subscribed,
and keeps ``NEVER_SUBSCRIBED``. The legacy v2 List API did the same with ``/members``. Here a
request names a list and up to :data:`MAX_PROFILES` people; each gets an append-only
:class:`~klaviyo_consent.models.MembershipEvent` and a
:class:`~klaviyo_consent.models.MembershipDelivery`, in one transaction. No consent event is
written, so ``check/``, the ledger's consent and every consent verdict stay as they were.
``services/membership_push.py`` sends them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import OperationalError, transaction
from django.utils import timezone

from klaviyo_consent.choices import Membership, Method
from klaviyo_consent.exceptions import ConsentValidationError, IdentityConflict
from klaviyo_consent.klaviyo import MAX_LIST_MEMBERS
from klaviyo_consent.models import MembershipDelivery, MembershipEvent, Profile
from klaviyo_consent.phone import normalize_phone_number
from klaviyo_consent.services.ledger import (
    RACE_ATTEMPTS,
    LostProfileRace,
    clean_email,
    is_profile_race,
    resolve_profile,
)
from klaviyo_consent.signals import membership_recorded
from klaviyo_consent.validators import clean_klaviyo_id, clean_reason

#: The most people one request may name (Klaviyo's add-to-list call takes 1000 too).
MAX_PROFILES = MAX_LIST_MEMBERS
_IDENTIFIERS = ("email", "phone_number", "external_id")


@dataclass(frozen=True)
class Member:
    """One person a membership request names, identifiers cleaned (at least one given)."""

    email: str | None = None
    phone_number: str | None = None
    external_id: str | None = None


@dataclass
class MembershipResult:
    """What was recorded: one event per distinct person, in the order given."""

    list_id: str
    action: str
    events: list[MembershipEvent] = field(default_factory=list)


def clean_members(
    profiles: Sequence[Mapping[str, Any]], *, field: str = "profiles"
) -> list[Member]:
    """Each ``{"email", "phone_number", "external_id"}`` cleaned, or raise naming
    ``profiles.<index>.<identifier>``: emails normalised, phones as E.164."""
    if not isinstance(profiles, Sequence) or isinstance(profiles, (str, bytes)) or not profiles:
        raise ConsentValidationError("Give at least one profile.", field=field)
    if len(profiles) > MAX_PROFILES:
        raise ConsentValidationError(
            f"At most {MAX_PROFILES} profiles a request; got {len(profiles)}.", field=field
        )
    members = []
    for index, item in enumerate(profiles):
        where = f"{field}.{index}"
        if not isinstance(item, Mapping):
            raise ConsentValidationError("A profile is an object.", field=where)
        unknown = sorted(set(item) - set(_IDENTIFIERS))
        if unknown:
            raise ConsentValidationError(
                f"Unknown field(s): {', '.join(unknown)}.", field=f"{where}.{unknown[0]}"
            )
        values: dict[str, str | None] = {}
        for name in _IDENTIFIERS:
            raw = item.get(name)
            if raw is not None and not isinstance(raw, str):
                raise ConsentValidationError("Must be a string.", field=f"{where}.{name}")
            values[name] = (raw or "").strip() or None
        email = clean_email(values["email"], field=f"{where}.email") if values["email"] else None
        phone = (
            normalize_phone_number(values["phone_number"], field=f"{where}.phone_number")
            if values["phone_number"]
            else None
        )
        external_id = values["external_id"]
        if external_id is not None and len(external_id) > 255:
            raise ConsentValidationError("At most 255 characters.", field=f"{where}.external_id")
        if not (email or phone or external_id):
            raise ConsentValidationError(
                "Give an email, a phone_number or an external_id.", field=where
            )
        members.append(Member(email, phone, external_id))
    return members


def record_membership(
    list_id: str,
    profiles: Sequence[Mapping[str, Any]],
    *,
    action: str,
    method: str = Method.API,
    method_detail: str = "",
    recorded_by: Any = None,
) -> MembershipResult:
    """Record adding (``action="add"``) or removing these people to/from a Klaviyo list.

    ``profiles``: ``[{"email": ..., "phone_number": ..., "external_id": ...}]``, at most
    :data:`MAX_PROFILES`. People are found or created as consent finds them (an identifier
    they lack is added, never overwritten); an external_id alone must name a known person.
    Raises :class:`ConsentValidationError` naming ``list_id`` or ``profiles.<i>.<field>``, or
    :class:`IdentityConflict` (fields ``profiles.<i>.<field>``) when one entry's identifiers
    belong to different people; then nothing is recorded. Consent is never touched.
    """
    list_id = clean_klaviyo_id(list_id, field="list_id")
    method_detail = clean_reason(method_detail, field="method_detail")
    if action not in Membership.values:
        raise ValueError(f"action must be one of {Membership.values}")
    members = clean_members(profiles)
    for attempt in range(RACE_ATTEMPTS):
        try:
            return _record(list_id, members, action, method, method_detail, recorded_by)
        except (LostProfileRace, OperationalError) as error:
            if not is_profile_race(error) or attempt == RACE_ATTEMPTS - 1:
                if isinstance(error, LostProfileRace):
                    raise IdentityConflict(
                        "Other requests kept changing these profiles; nothing was recorded. "
                        "Try again.",
                        fields=["profiles"],
                    ) from error
                raise
    raise AssertionError("unreachable")


def _record(
    list_id: str,
    members: list[Member],
    action: str,
    method: str,
    method_detail: str,
    recorded_by: Any,
) -> MembershipResult:
    result = MembershipResult(list_id=list_id, action=action)
    with transaction.atomic():
        seen: set[int] = set()
        people: list[Profile] = []
        for index, member in enumerate(members):
            try:
                profile, _ = resolve_profile(
                    member.email,
                    member.phone_number,
                    member.external_id,
                    method=method,
                    user=recorded_by,
                )
            except IdentityConflict as error:
                raise IdentityConflict(
                    error.message,
                    fields=[f.replace("profile.", f"profiles.{index}.") for f in error.fields],
                ) from error
            except ConsentValidationError as error:
                where = (error.field or "").replace("profile.", f"profiles.{index}.")
                raise ConsentValidationError(error.message, field=where or None) from error
            if profile.pk not in seen:
                seen.add(profile.pk)
                people.append(profile)
        now = timezone.now()
        events = MembershipEvent.objects.bulk_create(
            MembershipEvent(
                profile=profile,
                list_id=list_id,
                action=action,
                method=method,
                method_detail=method_detail[:255],
                recorded_at=now,
                recorded_by=recorded_by,
                recorded_by_label=(recorded_by.get_username()[:150] if recorded_by else ""),
            )
            for profile in people
        )
        MembershipDelivery.objects.bulk_create(
            MembershipDelivery(
                event=event,
                profile_id=event.profile_id,
                list_id=list_id,
                action=action,
                next_attempt_at=now,
            )
            for event in events
        )
        result.events = events
        membership_recorded.send(
            sender=MembershipEvent, events=events, list_id=list_id, action=action
        )
    return result
