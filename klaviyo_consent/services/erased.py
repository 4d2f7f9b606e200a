"""What erasures left to answer with: whether, and when, an identifier was erased.

A reader for ``check/`` and the erase command, found by keyed digest (``ErasedIdentifier``):
the identifier itself is not stored after an erasure (docs/erasure.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from klaviyo_consent.models import ErasedIdentifier
from klaviyo_consent.models.profiles import normalize_email
from klaviyo_consent.services.leaves import digest, ledger_secret


def erased_on(field: str, value: str) -> datetime | None:
    """When an erasure removed this identifier (the latest, if several), else None.

    Found by its keyed digest (``ErasedIdentifier``): the identifier itself is not stored.
    ``value`` is normalised as the ledger stores it (email NFKC/lower-case/IDNA, E.164).
    """
    if field == "email":
        value = normalize_email(value)
    return erasures_of([(field, value)]).get((field, value))


def erasures_of(identifiers: Iterable[tuple[str, str]]) -> dict[tuple[str, str], datetime]:
    """``{(field, value): when it was last erased}`` for those an erasure removed; one query.

    ``identifiers`` are (field, normalised value) pairs; they are looked up by keyed digest.
    """
    secret = ledger_secret()
    by_digest = {
        (field, digest(field, value, secret)): (field, value) for field, value in identifiers
    }
    if not by_digest:
        return {}
    found: dict[tuple[str, str], datetime] = {}
    rows = ErasedIdentifier.objects.filter(
        digest__in=[hexdigest for _, hexdigest in by_digest]
    ).values_list("field", "digest", "erasure__requested_at")
    for field, hexdigest, when in rows:
        key = by_digest.get((field, hexdigest))
        if key is not None and (key not in found or when > found[key]):
            found[key] = when
    return found
