"""Pure JSON:API builders for Klaviyo's bulk jobs; the contract tests validate their output."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from klaviyo_consent.choices import Consent
from klaviyo_consent.klaviyo import (
    MAX_PAGE_SIZE,
    MAX_SUBSCRIBE_PROFILES,
    MAX_SUPPRESS_PROFILES,
    MAX_UNSUBSCRIBE_PROFILES,
)


def isoformat(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def parse_klaviyo_datetime(value: Any) -> datetime | None:
    """A datetime Klaviyo sent (e.g. ``consent_timestamp``), aware; None when unreadable.

    Klaviyo writes ISO 8601 with an offset; one without is UTC, Klaviyo's own zone for API
    datetimes ("Acceptable date and timestamp formats"), never the site's.
    """
    from django.utils.dateparse import parse_datetime

    try:
        moment = parse_datetime(str(value or ""))
    except ValueError:
        return None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def profile_entry(
    *,
    email: str | None,
    phone_number: str | None,
    consents: Iterable[tuple[str, str, str, datetime | None]],
    klaviyo_id: str | None = None,
) -> dict[str, Any]:
    """One profile of a job: ``consents`` are (channel, purpose, consent, consented_at)."""
    subscriptions: dict[str, dict[str, dict[str, str]]] = {}
    for channel, purpose, consent, consented_at in consents:
        leaf: dict[str, str] = {"consent": consent}
        if consented_at is not None and consent == Consent.SUBSCRIBED:
            leaf["consented_at"] = isoformat(consented_at)
        subscriptions.setdefault(channel, {})[purpose] = leaf
    attributes: dict[str, Any] = {}
    if email:
        attributes["email"] = email
    if phone_number:
        attributes["phone_number"] = phone_number
    attributes["subscriptions"] = subscriptions
    entry: dict[str, Any] = {"type": "profile", "attributes": attributes}
    if klaviyo_id:
        entry["id"] = klaviyo_id
    return entry


def _list_relationship(list_id: str | None) -> dict[str, Any]:
    return {"list": {"data": {"type": "list", "id": list_id}}} if list_id else {}


def subscribe_job(
    profiles: Sequence[dict[str, Any]],
    *,
    list_id: str | None = None,
    historical_import: bool = False,
    custom_source: str | None = None,
) -> dict[str, Any]:
    """``profile-subscription-bulk-create-job`` for at most 1000 profiles."""
    if not 0 < len(profiles) <= MAX_SUBSCRIBE_PROFILES:
        raise ValueError(f"a subscribe job takes 1 to {MAX_SUBSCRIBE_PROFILES} profiles")
    attributes: dict[str, Any] = {"profiles": {"data": list(profiles)}}
    if custom_source:
        attributes["custom_source"] = custom_source
    attributes["historical_import"] = historical_import
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-create-job",
        "attributes": attributes,
    }
    relationships = _list_relationship(list_id)
    if relationships:
        data["relationships"] = relationships
    return {"data": data}


def unsubscribe_job(
    profiles: Sequence[dict[str, Any]], *, list_id: str | None = None
) -> dict[str, Any]:
    """``profile-subscription-bulk-delete-job`` for at most 100 profiles.

    Klaviyo's warning applies: profiles not in ``list_id`` are unsubscribed globally.
    """
    if not 0 < len(profiles) <= MAX_UNSUBSCRIBE_PROFILES:
        raise ValueError(f"an unsubscribe job takes 1 to {MAX_UNSUBSCRIBE_PROFILES} profiles")
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-delete-job",
        "attributes": {"profiles": {"data": list(profiles)}},
    }
    relationships = _list_relationship(list_id)
    if relationships:
        data["relationships"] = relationships
    return {"data": data}


def suppress_job(emails: Sequence[str]) -> dict[str, Any]:
    """``profile-suppression-bulk-create-job`` (email only, at most 100)."""
    return _suppression_job("profile-suppression-bulk-create-job", emails)


def unsuppress_job(emails: Sequence[str]) -> dict[str, Any]:
    """``profile-suppression-bulk-delete-job`` (email only, at most 100; lifts USER_SUPPRESSED)."""
    return _suppression_job("profile-suppression-bulk-delete-job", emails)


def _suppression_job(job_type: str, emails: Sequence[str]) -> dict[str, Any]:
    if not 0 < len(emails) <= MAX_SUPPRESS_PROFILES:
        raise ValueError(f"a suppression job takes 1 to {MAX_SUPPRESS_PROFILES} emails")
    return {
        "data": {
            "type": job_type,
            "attributes": {
                "profiles": {
                    "data": [{"type": "profile", "attributes": {"email": e}} for e in emails]
                }
            },
        }
    }


def profile_import(
    *,
    phone_number: str,
    klaviyo_id: str | None = None,
    email: str | None = None,
    external_id: str | None = None,
) -> dict[str, Any]:
    """A Create or Update Profile body (``POST /api/profile-import``, schema ``ProfileUpsertQuery``)
    that sets the profile's ``phone_number`` (E.164).

    The profile is named by its Klaviyo ``id`` when known, else by ``email``, else by
    ``external_id``: the identifiers Klaviyo matches an existing profile by. Only
    ``phone_number`` is changed; a field left out is left unchanged by Klaviyo (spec: "not
    including a field in your request will leave it unchanged"). With none of them, Klaviyo
    finds the profile by the new number or creates one holding it.
    """
    attributes: dict[str, Any] = {"phone_number": phone_number}
    data: dict[str, Any] = {"type": "profile", "attributes": attributes}
    if klaviyo_id:
        data["id"] = klaviyo_id
    elif email:
        attributes["email"] = email
    elif external_id:
        attributes["external_id"] = external_id
    return {"data": data}


#: What a data-privacy deletion may name a profile by (spec ``request_profile_deletion``).
DELETION_TARGETS = ("id", "email", "phone_number")


def profile_deletion(field: str, value: str) -> dict[str, Any]:
    """A Request Profile Deletion body (``POST /api/data-privacy-deletion-jobs``, schema
    ``DataPrivacyCreateDeletionJobQuery``) naming the profile by exactly one identifier:
    ``field`` is ``id`` (Klaviyo's profile id), ``email`` or ``phone_number`` (E.164); the
    spec answers an error when more than one is given. Raises ``ValueError`` for another field.
    """
    if field not in DELETION_TARGETS:
        raise ValueError(f"a deletion names a profile by one of {DELETION_TARGETS}, not {field!r}")
    profile: dict[str, Any] = {"type": "profile", "attributes": {}}
    if field == "id":
        profile["id"] = value
    else:
        profile["attributes"][field] = value
    return {
        "data": {
            "type": "data-privacy-deletion-job",
            "attributes": {"profile": {"data": profile}},
        }
    }


def profile_filter(field: str, values: Sequence[str]) -> str:
    """``equals(field,"v")`` or ``any(field,["a","b"])`` with JSON string quoting."""
    if len(values) == 1:
        return f"equals({field},{json.dumps(values[0])})"
    return f"any({field},[{','.join(json.dumps(v) for v in values)}])"


def profiles_query(
    filter_expression: str | None = None, *, page_size: int = MAX_PAGE_SIZE
) -> dict[str, str]:
    """Query parameters for ``GET /api/profiles`` with the subscriptions object included."""
    params = {"additional-fields[profile]": "subscriptions", "page[size]": str(page_size)}
    if filter_expression:
        params["filter"] = filter_expression
    return params
