"""Klaviyo lists, mirrored locally: their opt-in process tells double opt-in from a failure."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.utils import timezone

from klaviyo_consent.backends import get_backend
from klaviyo_consent.exceptions import KlaviyoClientError
from klaviyo_consent.models import KlaviyoList

logger = logging.getLogger("klaviyo_consent.lists")


def mirror_list(list_id: str, *, profile_count: bool = False) -> KlaviyoList:
    """Read one list (``GET /api/lists/{id}``) and store it.

    ``profile_count``: also read its member count (``additional-fields[list]=profile_count``),
    which Klaviyo limits to 1/s and 15/m: the shared limiter waits for it, so a loop over many
    lists takes about four seconds a list.
    """
    backend = get_backend()
    # Without the count, the one-argument call every backend (and test double) answers.
    document = backend.get_list(list_id, profile_count=True) if profile_count else None
    data = (document or backend.get_list(list_id)).get("data") or {}
    klaviyo_list, _ = KlaviyoList.objects.get_or_create(list_id=list_id)
    klaviyo_list.update_from_klaviyo_data(data)
    klaviyo_list.save()
    return klaviyo_list


def mirror_lists(*, profile_counts: bool = False) -> list[KlaviyoList]:
    """Read every list and store them all; with ``profile_counts`` each one's member count too
    (one ``get_list`` each, at Klaviyo's 1/s, 15/m for that field)."""
    now = timezone.now()
    mirrored = []
    for data in get_backend().get_lists():
        klaviyo_list, _ = KlaviyoList.objects.get_or_create(list_id=data["id"])
        klaviyo_list.update_from_klaviyo_data(data, now=now)
        klaviyo_list.save()
        mirrored.append(klaviyo_list)
    if profile_counts:
        mirrored = [mirror_list(item.list_id, profile_count=True) for item in mirrored]
    return mirrored


def opt_in_processes(list_ids: Iterable[str | None]) -> dict[str, str | None]:
    """Each list's opt-in process (``single_opt_in``/``double_opt_in``; None if unknown).

    From the mirror in one query; a list the mirror does not know yet is read from Klaviyo
    (``GET /api/lists/{id}``) here, once, so a caller judging verdicts never calls Klaviyo
    from inside its loop.
    """
    wanted = {list_id for list_id in list_ids if list_id}
    known: dict[str, str | None] = dict(
        KlaviyoList.objects.filter(list_id__in=wanted)
        .exclude(opt_in_process="")
        .values_list("list_id", "opt_in_process")
    )
    for list_id in sorted(wanted - set(known)):
        try:
            known[list_id] = mirror_list(list_id).opt_in_process or None
        except KlaviyoClientError as error:
            # Judged without knowing single or double opt-in; say so rather than guess quietly.
            logger.warning("Could not read list %s's opt-in process: %s", list_id, error)
            known[list_id] = None
    return known
