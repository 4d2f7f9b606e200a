"""The legacy v2 List API's questions, answered from the ledger and the mirror.

``/v2/list/{id}/get-members`` asked "are these people on the list, and not suppressed?";
``/v2/list/{id}/exclusions/all`` "who is excluded, and why?". Klaviyo's current API has no
single call for either, and the app must not call the retired one (klaviyo-api-facts.md,
Legacy). So: on the list is what the site asked for and Klaviyo's read-back confirmed or has
not yet contradicted (the newest membership event for the list, else a subscribe naming the
list); suppressed is Klaviyo's ``subscriptions.email.marketing`` mirror as last read: its
``suppression[]`` (global: every list) and ``list_suppressions[]`` naming this list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q, QuerySet
from django.db.models.fields.json import KT

from klaviyo_consent.choices import Channel, Consent, DeliveryStatus, Membership
from klaviyo_consent.models import ConsentEvent, MembershipEvent, Profile

#: Membership verdicts that mean Klaviyo did not do what the site asked.
_UNDONE = {DeliveryStatus.FAILED, DeliveryStatus.NOT_APPLIED}


@dataclass
class MemberStatus:
    """One person's answer to get-members. ``profile`` is None for an unknown identifier."""

    email: str | None
    phone_number: str | None
    profile: Profile | None
    on_list: bool
    #: The newest membership event's verdict for this list ("" when none was recorded).
    membership_status: str = ""
    suppressions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def suppressed(self) -> bool:
        return bool(self.suppressions)

    @property
    def member(self) -> bool:
        """On the list and not suppressed: the legacy get-members answer."""
        return self.on_list and not self.suppressed


def suppressions(profile: Profile, list_id: str | None = None) -> list[dict[str, Any]]:
    """The email suppressions Klaviyo showed when last read, each ``{"reason", "timestamp",
    "scope": "global" | "list", "list_id"}``; list ones only for ``list_id`` (None: all)."""
    marketing = profile.klaviyo_leaf(Channel.EMAIL, "marketing")
    found = [
        {
            "reason": item.get("reason"),
            "timestamp": item.get("timestamp"),
            "scope": "global",
            "list_id": None,
        }
        for item in marketing.get("suppression") or []
        if isinstance(item, dict)
    ]
    found += [
        {
            "reason": item.get("reason"),
            "timestamp": item.get("timestamp"),
            "scope": "list",
            "list_id": item.get("list_id"),
        }
        for item in marketing.get("list_suppressions") or []
        if isinstance(item, dict) and (list_id is None or item.get("list_id") == list_id)
    ]
    return found


def on_lists(list_id: str, profiles: Sequence[Profile]) -> dict[int, tuple[bool, str]]:
    """For each profile: (on the list, the newest membership verdict or "")."""
    ids = [p.pk for p in profiles]
    answer: dict[int, tuple[bool, str]] = {}
    events = (
        MembershipEvent.objects.filter(profile_id__in=ids, list_id=list_id)
        .select_related("delivery")
        .order_by("profile_id", "-id")
    )
    for event in events:
        if event.profile_id in answer:
            continue
        status = event.delivery.status
        on = event.action == Membership.ADD
        answer[event.profile_id] = (on if status not in _UNDONE else not on, status)
    rest = [pk for pk in ids if pk not in answer]
    if rest:
        joined = (
            ConsentEvent.objects.filter(
                profile_id__in=rest,
                list_id=list_id,
                consent=Consent.SUBSCRIBED,
                delivery__status=DeliveryStatus.APPLIED,
            )
            .values_list("profile_id", flat=True)
            .distinct()
        )
        for pk in joined:
            answer[pk] = (True, "")
    return answer


def member_statuses(
    list_id: str, *, emails: Sequence[str] = (), phone_numbers: Sequence[str] = ()
) -> list[MemberStatus]:
    """get-members: for each normalised email and E.164 number, in the order given."""
    found = Profile.objects.filter(
        Q(email__in=list(emails)) | Q(phone_number__in=list(phone_numbers))
    )
    by_email = {p.email: p for p in found if p.email}
    by_phone = {p.phone_number: p for p in found if p.phone_number}
    known = {p.pk: p for p in found}
    states = on_lists(list_id, list(known.values()))
    answers = []
    for email, phone in [(e, None) for e in emails] + [(None, p) for p in phone_numbers]:
        profile = by_email.get(email) if email else by_phone.get(phone or "")
        if profile is None:
            answers.append(MemberStatus(email, phone, None, False))
            continue
        on, status = states.get(profile.pk, (False, ""))
        answers.append(
            MemberStatus(email, phone, profile, on, status, suppressions(profile, list_id))
        )
    return answers


def excluded(queryset: QuerySet[Profile], list_id: str | None = None) -> QuerySet[Profile]:
    """Profiles Klaviyo showed suppressed when last read: globally, or (with ``list_id``) from
    that list. The legacy exclusions question; each profile's reasons: :func:`suppressions`."""
    condition = Q(subscriptions__email__marketing__suppression__0__isnull=False)
    if list_id:
        # The list_suppressions array as JSON text (``->>``, on SQLite and PostgreSQL alike)
        # holding the list id, quoted: list ids are letters and digits, reasons upper case.
        queryset = queryset.annotate(
            _list_suppressions=KT("subscriptions__email__marketing__list_suppressions")
        )
        condition |= Q(_list_suppressions__contains=f'"{list_id}"')
    return queryset.filter(condition)
