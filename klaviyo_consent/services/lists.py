"""Klaviyo lists, mirrored locally: their opt-in process tells double opt-in from a failure."""

from __future__ import annotations

from django.utils import timezone

from klaviyo_consent.backends import get_backend
from klaviyo_consent.exceptions import KlaviyoClientError
from klaviyo_consent.models import KlaviyoList


def mirror_list(list_id: str) -> KlaviyoList:
    """Read one list (``GET /api/lists/{id}``) and store it."""
    data = get_backend().get_list(list_id).get("data") or {}
    klaviyo_list, _ = KlaviyoList.objects.get_or_create(list_id=list_id)
    klaviyo_list.update_from_klaviyo_data(data)
    klaviyo_list.save()
    return klaviyo_list


def mirror_lists() -> list[KlaviyoList]:
    """Read every list and store them all."""
    now = timezone.now()
    mirrored = []
    for data in get_backend().get_lists():
        klaviyo_list, _ = KlaviyoList.objects.get_or_create(list_id=data["id"])
        klaviyo_list.update_from_klaviyo_data(data, now=now)
        klaviyo_list.save()
        mirrored.append(klaviyo_list)
    return mirrored


def opt_in_process(list_id: str | None, cache: dict[str, str | None] | None = None) -> str | None:
    """The list's opt-in process, from the mirror or read once from Klaviyo; None if unknown."""
    if not list_id:
        return None
    if cache is not None and list_id in cache:
        return cache[list_id]
    known = KlaviyoList.objects.filter(list_id=list_id).exclude(opt_in_process="").first()
    value: str | None
    if known is not None:
        value = known.opt_in_process
    else:
        try:
            value = mirror_list(list_id).opt_in_process or None
        except KlaviyoClientError:
            value = None
    if cache is not None:
        cache[list_id] = value
    return value
