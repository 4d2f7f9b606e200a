"""Prior-consent check: what the ledger says of each email and phone number, in request order.

It replaces the retired Klaviyo ``/get-members`` call, which silently dropped numbers it could
not parse; here every identifier gets an answer, a malformed one an ``error``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from functools import partial
from typing import Any

from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.models import Profile
from klaviyo_consent.phone import normalize_phone_number
from klaviyo_consent.services.erased import erasures_of
from klaviyo_consent.services.ledger import clean_email, latest_events, sms_histories
from klaviyo_consent.services.ledger_state import ledger_for

#: The most identifiers (emails and phone numbers together) one check may name.
MAX_IDENTIFIERS = 1000

EMAIL = "email"
PHONE_NUMBER = "phone_number"


def _normalized_email(raw: str) -> tuple[str | None, str | None]:
    """(normalised email, None) or (None, why it is malformed)."""
    try:
        email = clean_email(raw)
    except ConsentValidationError as error:
        return None, error.message
    if email is None:
        return None, f"{raw!r} is not a valid email address."
    return email, None


def _normalized_phone(raw: str, country: str | None = None) -> tuple[str | None, str | None]:
    """(E.164 number, None) or (None, why it is malformed); national numbers read in
    ``country``, else ``DEFAULT_PHONE_REGION``."""
    try:
        return normalize_phone_number(raw, country=country), None
    except ConsentValidationError as error:
        return None, error.message


def _leaves(ledger: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The ledger's leaves in the check's shape."""
    return {
        channel: {
            purpose: {
                "consent": leaf["consent"],
                "delivery": leaf["delivery"],
                "reason": leaf["reason"],
                "consented_at": leaf["consented_at"],
                "can_receive": leaf["can_receive"],
                "cannot_receive_reason": leaf["cannot_receive_reason"],
            }
            for purpose, leaf in purposes.items()
        }
        for channel, purposes in ledger.items()
    }


def check_prior_consent(
    emails: Sequence[str], phone_numbers: Sequence[str], *, country: str | None = None
) -> list[dict[str, Any]]:
    """One result per identifier, emails first, each list in the order given.

    Answers from the local ledger (which includes changes recorded from Klaviyo), not from a
    live Klaviyo call. Profiles are fetched in one query per identifier type, the latest
    events of all of them in one more, and the history of numbers no profile holds (if any) in
    one more. Each identifier answers with its own history: a profile's number with that
    profile's ledger for it, a replaced number (no profile holds it) with the events recorded
    for it, e.g. UNSUBSCRIBED "phone number replaced" (docs/identity.md). National numbers are
    read in ``country`` (ISO 3166-1 alpha-2), else ``DEFAULT_PHONE_REGION``.

    An identifier no profile holds that an erasure removed answers ``"erased": true`` with
    ``erased_at`` (found by its keyed digest, one more query) and ``consent`` null: the
    ledger keeps that person's consent, but no longer under this identifier.
    """
    items: list[tuple[str, str, str | None, str | None]] = []
    for kind, values, normalize in (
        (EMAIL, emails, _normalized_email),
        (PHONE_NUMBER, phone_numbers, partial(_normalized_phone, country=country)),
    ):
        for raw in values:
            normalized, error = normalize(raw)
            items.append((kind, raw, normalized, error))

    wanted: dict[str, set[str]] = {EMAIL: set(), PHONE_NUMBER: set()}
    for kind, _, normalized, _ in items:
        if normalized:
            wanted[kind].add(normalized)
    found: dict[tuple[str, str], Profile] = {}
    for kind, values in wanted.items():
        if values:
            for profile in Profile.objects.filter(**{f"{kind}__in": values}):
                found[(kind, getattr(profile, kind))] = profile

    profiles = {profile.pk: profile for profile in found.values()}
    latest = latest_events(profiles)
    ledgers = {pk: ledger_for(profile, events=latest[pk]) for pk, profile in profiles.items()}
    # A number no profile holds any more (a replaced number) answers with its own history.
    unheld = [number for number in wanted[PHONE_NUMBER] if (PHONE_NUMBER, number) not in found]
    histories = {
        (PHONE_NUMBER, number): ledger_for(None, events=events)
        for number, events in sms_histories(unheld).items()
    }
    erased = erasures_of(
        (kind, value)
        for kind, values in wanted.items()
        for value in values
        if (kind, value) not in found
    )
    results = []
    for kind, raw, normalized, error in items:
        profile = found.get((kind, normalized)) if normalized else None
        erased_at = erased.get((kind, normalized or "")) if profile is None else None
        ledger = (
            ledgers[profile.pk]
            if profile is not None
            else histories.get((kind, normalized or ""), ledger_for(None))
        )
        results.append(
            {
                "identifier": raw,
                "type": kind,
                "normalized": normalized,
                "profile_id": profile.pk if profile is not None else None,
                "error": error,
                "erased": erased_at is not None,
                "erased_at": erased_at.astimezone(UTC).isoformat() if erased_at else None,
                "consent": None if error or erased_at else _leaves(ledger),
            }
        )
    return results
