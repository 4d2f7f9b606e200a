"""Pure JSON:API bodies for list membership.

Spec revision 2026-07-15: ``bulk_import_profiles`` (``ProfileImportJobCreateQuery``),
``add_profiles_to_list`` / ``remove_profiles_from_list`` (``ListMembersAddQuery`` /
``ListMembersDeleteQuery``) and ``get_profile_ids_for_list`` (its ``filter``). The contract
tests validate these with the klaviyo-api SDK models, as the fake does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from klaviyo_consent.klaviyo import MAX_IMPORT_PROFILES, MAX_LIST_MEMBERS, MAX_PAGE_SIZE


def import_entry(
    *, email: str | None, phone_number: str | None, external_id: str | None
) -> dict[str, Any]:
    """One profile of a bulk import job: identifiers only, never ``subscriptions``.

    An import sets profile fields; without a ``subscriptions`` object (the import schema has
    none) it gives no consent, so a person added this way keeps ``NEVER_SUBSCRIBED``.
    """
    attributes = {
        name: value
        for name, value in (
            ("email", email),
            ("phone_number", phone_number),
            ("external_id", external_id),
        )
        if value
    }
    return {"type": "profile", "attributes": attributes}


def import_job(entries: Sequence[dict[str, Any]], *, list_id: str) -> dict[str, Any]:
    """``POST /api/profile-bulk-import-jobs``: ≤ 10,000 profiles, all added to ``list_id``."""
    if not 0 < len(entries) <= MAX_IMPORT_PROFILES:
        raise ValueError(f"an import job takes 1 to {MAX_IMPORT_PROFILES} profiles")
    return {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {"profiles": {"data": list(entries)}},
            "relationships": {"lists": {"data": [{"type": "list", "id": list_id}]}},
        }
    }


def list_members(klaviyo_ids: Sequence[str]) -> dict[str, Any]:
    """The body of ``POST``/``DELETE /api/lists/{id}/relationships/profiles`` (≤ 1000 ids)."""
    if not 0 < len(klaviyo_ids) <= MAX_LIST_MEMBERS:
        raise ValueError(f"a list membership call takes 1 to {MAX_LIST_MEMBERS} profiles")
    return {"data": [{"type": "profile", "id": klaviyo_id} for klaviyo_id in klaviyo_ids]}


def list_members_query(field: str, values: Sequence[str]) -> dict[str, str]:
    """Query of ``GET /api/lists/{id}/relationships/profiles``: the members among ``values``.

    The endpoint filters on ``email`` and ``phone_number`` (``any``/``equals``); a page holds
    at most 100, as many as the values given.
    """
    if field not in ("email", "phone_number"):
        raise ValueError("list members are filtered by email or phone_number")
    if not 0 < len(values) <= MAX_PAGE_SIZE:
        raise ValueError(f"filter 1 to {MAX_PAGE_SIZE} values a page")
    quoted = ",".join(
        '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values
    )
    return {"filter": f"any({field},[{quoted}])", "page[size]": str(MAX_PAGE_SIZE)}
